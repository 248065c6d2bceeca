"""Address allocation: one 127.0.0.x per workload with Istio's ports, or port blocks on one address."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_ctl.addressing import (
    AddressingError,
    WorkloadAddresses,
    busy_sockets,
    can_bind,
    plan,
)
from mesh_ctl.topology import default_topology, topology_from_dict, topology_to_dict


def _always(ok: bool) -> Any:
    return lambda address: ok


def test_default_is_one_address_per_workload_with_istio_ports() -> None:
    p = plan(default_topology(), probe=_always(True))
    assert p.mode == "per-workload"
    assert p.workloads == (
        WorkloadAddresses(
            "payment-v1", "127.0.0.10", app=8080, outbound=None, inbound=15006, admin=15000, prometheus=15090,
            merged=15020, metrics=9464,
        ),
        WorkloadAddresses(
            "payment-v2", "127.0.0.11", app=8080, outbound=None, inbound=15006, admin=15000, prometheus=15090,
            merged=15020, metrics=9464,
        ),
        WorkloadAddresses(
            "client", "127.0.0.12", app=None, outbound=15001, inbound=None, admin=15000, prometheus=15090,
            merged=15020, metrics=9464,
        ),
    )
    assert p.of("client").at(15001) == "127.0.0.12:15001"


def test_falls_back_to_port_blocks_on_127_0_0_1() -> None:
    p = plan(default_topology(), probe=_always(False))
    assert p.mode == "shared"
    assert {w.address for w in p.workloads} == {"127.0.0.1"}
    v1, v2, client = p.workloads
    assert (v1.app, v1.inbound, v1.admin, v1.prometheus) == (8080, 15006, 15000, 15090)
    assert (v2.app, v2.inbound, v2.admin, v2.prometheus) == (8180, 15106, 15100, 15190)
    assert (client.outbound, client.admin, client.prometheus) == (15201, 15200, 15290)
    ports = [port for _, _, _, port in p.sockets()]
    assert len(ports) == len(set(ports)), "every socket needs its own port on a shared address"


def test_explicit_modes_base_address_and_offset() -> None:
    p = plan(
        default_topology(),
        mode="per-workload",
        base_address="127.42.7.250",
        port_offset=1000,
        probe=_always(False),
    )
    assert [w.address for w in p.workloads] == ["127.42.7.250", "127.42.7.251", "127.42.7.252"]
    assert (p.workloads[0].app, p.workloads[0].admin, p.workloads[2].outbound) == (9080, 16000, 16001)
    shared = plan(default_topology(), mode="shared", port_offset=5, probe=_always(True))
    assert shared.mode == "shared" and shared.workloads[1].admin == 15105


def test_allocation_skips_reserved_and_edge_addresses() -> None:
    doc = topology_to_dict(default_topology())
    doc["workloads"] += [
        {
            "name": f"extra-{i}",
            "app": "payment-server",
            "serviceAccount": "payment",
            "labels": {"app": "payment", "version": "v1"},
        }
        for i in range(50)
    ]
    p = plan(topology_from_dict(doc), probe=_always(True))
    addresses = [w.address for w in p.workloads]
    assert "127.0.0.53" not in addresses and "127.0.0.54" not in addresses
    assert addresses[:3] == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    assert len(set(addresses)) == len(addresses)
    wrap = plan(default_topology(), base_address="127.0.0.254", probe=_always(True))
    assert [w.address for w in wrap.workloads] == [
        "127.0.0.254",
        "127.0.1.2",
        "127.0.1.3",
    ]  # no .255/.0, 127.0.1.1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_address": "10.0.0.1"}, "not a loopback address"),
        ({"base_address": "localhost"}, "not an IP address"),
        ({"port_offset": 60000}, "out of range"),
        ({"mode": "bridge"}, "address mode"),
        ({"base_address": "::1", "mode": "per-workload"}, "needs IPv4"),
    ],
)
def test_rejects(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(AddressingError, match=error):
        plan(default_topology(), probe=_always(True), **kwargs)


def test_ipv6_loopback_uses_the_shared_mode() -> None:
    p = plan(default_topology(), base_address="::1", probe=_always(True))
    assert p.mode == "shared" and p.of("client").at(15201) == "[::1]:15201"


def test_busy_sockets_sees_a_bound_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not can_bind("127.0.0.1", port)
        p = plan(default_topology(), mode="shared", port_offset=port - 15000, probe=_always(True))
        busy = busy_sockets(p)
        assert ("payment-v1", "admin", "127.0.0.1", port) in busy
    assert can_bind("127.0.0.1", port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux routes all of 127.0.0.0/8 to lo")
def test_linux_can_bind_other_loopback_addresses() -> None:
    assert can_bind("127.0.0.10")
    assert plan(default_topology()).mode == "per-workload"


@given(
    extra=st.integers(min_value=0, max_value=60),
    offset=st.integers(min_value=-7000, max_value=20000),
    first=st.integers(
        min_value=int(ipaddress.ip_address("127.0.0.2")), max_value=int(ipaddress.ip_address("127.255.254.0"))
    ),
    per_workload=st.booleans(),
)
def test_every_socket_is_distinct_and_on_loopback(
    extra: int, offset: int, first: int, per_workload: bool
) -> None:
    doc = topology_to_dict(default_topology())
    doc["workloads"] += [
        {"name": f"w-{i}", "app": "payment-server", "labels": {"app": "payment", "version": "v2"}}
        for i in range(extra)
    ]
    t = topology_from_dict(doc)
    base = str(ipaddress.ip_address(first))
    p = plan(t, base_address=base, port_offset=offset, mode="per-workload" if per_workload else "shared")
    sockets = [(host, port) for _, _, host, port in p.sockets()]
    assert len(sockets) == len(set(sockets))
    assert all(ipaddress.ip_address(h).is_loopback and 1 <= port <= 65535 for h, port in sockets)
    if per_workload:
        addresses = [w.address for w in p.workloads]
        assert len(set(addresses)) == len(addresses)
        assert not {"127.0.0.1", "127.0.0.53", "127.0.0.54", "127.0.1.1"} & set(addresses)
