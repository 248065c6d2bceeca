"""`pyproxy --seed`: the same seed and the same sequence of calls give the same faults and the same hosts, with
real processes.

    grpcio client --h2c--> pyproxy --seed N --h2c--> payment-server s0 | s1 | s2 (each replies with its name)

One bootstrap, five routes (selected by ``:authority``), each a random decision per call:
- ``weighted``: weighted clusters 50/30/20 over three one-host clusters;
- ``random``: one cluster of the three servers, RANDOM;
- ``least``: the same, LEAST_REQUEST with equal weights (power of two random choices; sequential calls find
  every host idle, so the first random choice wins);
- ``least-weighted``: LEAST_REQUEST with weights 1/2/3 (weighted random choice);
- ``faulty``: the fault filter aborts half the calls (UNAVAILABLE, ``typed_per_filter_config`` on the route),
  the others go to a RANDOM host.

A sequence of 100 sequential calls cycles through the routes. A fresh proxy with the same seed must produce
the same 100 outcomes (host, or abort); with another seed a different sequence (two independent sequences of
100 such picks agree with probability far below 10^-20). Each route must show at least two outcomes, so a proxy
that always decides the same cannot pass either.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ProcessGroup, free_port
from tests.support.sidecar import Proxy, cluster, start_payment, start_proxy, wait_ports

pytestmark = pytest.mark.timeout(180)

ROUTES = ("weighted", "random", "least", "least-weighted", "faulty")
CALLS = 100
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ABORT_HALF = {"@type": FAULT, "abort": {"grpc_status": 14, "percentage": {"numerator": 50}}}


def _vhost(name: str, action: dict[str, object], **route: object) -> dict[str, object]:
    return {"name": name, "domains": [name], "routes": [{"match": {"prefix": "/"}, "route": action, **route}]}


def _start(procs: ProcessGroup, tmp: Path, ports: list[int], name: str, *flags: str) -> Proxy:
    clusters = [cluster(f"only-{i}", [p]) for i, p in enumerate(ports)]
    clusters += [cluster("random", ports, "RANDOM"), cluster("least", ports, "LEAST_REQUEST"),
                 cluster("least-weighted", ports, "LEAST_REQUEST", weights=[1, 2, 3])]
    vhosts = [_vhost("weighted", {"weighted_clusters": {"clusters": [
        {"name": "only-0", "weight": 50}, {"name": "only-1", "weight": 30}, {"name": "only-2", "weight": 20}]}}),
        *(_vhost(r, {"cluster": r}) for r in ROUTES[1:4]),
        _vhost("faulty", {"cluster": "random"}, typed_per_filter_config={"envoy.filters.http.fault": ABORT_HALF})]
    # The listener's fault filter does nothing by itself (an empty HTTPFault); the faulty route's replaces it.
    fault_filter = {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}}
    return start_proxy(procs, tmp / name, free_port(), free_port(), vhosts, clusters, http_filters=[fault_filter],
                       flags=flags, name=name)


def _sequence(proxy: Proxy) -> list[tuple[str, str]]:
    """(route, host or the abort) of each call of the fixed sequence, calls one after the other."""
    channels = {r: proxy.channel(r) for r in ROUTES}
    try:
        out = []
        request = pb.ChargeRequest(customer_id="cust-1", amount=1000, currency="EUR")
        for i in range(CALLS):
            route = ROUTES[i % len(ROUTES)]
            try:
                outcome = api.Stub(channels[route]).Charge(request, timeout=10).served_by
            except grpc.RpcError as e:
                assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE, "fault filter abort"), e
                outcome = "abort"
            out.append((route, outcome))
        return out
    finally:
        for ch in channels.values():
            ch.close()


@pytest.fixture
def servers(procs: ProcessGroup) -> list[int]:
    ports = [start_payment(procs, f"s{i}") for i in range(3)]
    wait_ports(*ports)
    return ports


def _run(procs: ProcessGroup, tmp: Path, servers: list[int], name: str, *flags: str) -> list[tuple[str, str]]:
    proxy = _start(procs, tmp, servers, name, *flags)
    try:
        return _sequence(proxy)
    finally:
        proxy.proc.stop()


def test_same_seed_same_faults_and_hosts_other_seed_others(procs: ProcessGroup, tmp_path: Path,
                                                           servers: list[int]) -> None:
    first = _run(procs, tmp_path, servers, "seed-7", "--seed", "7")
    again = _run(procs, tmp_path, servers, "seed-7-again", "--seed", "7")
    other = _run(procs, tmp_path, servers, "seed-8", "--seed", "8")
    for route in ROUTES:
        outcomes = Counter(h for r, h in first if r == route)
        assert len(outcomes) >= 2, f"{route}: every call gave {outcomes}: not a random decision"
    assert "abort" in {h for r, h in first if r == "faulty"}
    assert again == first
    assert other != first
    # Not even the subset of decisions of one route agrees by chance.
    assert [h for r, h in other if r == "random"] != [h for r, h in first if r == "random"]


def test_seed_is_reported_by_server_info(procs: ProcessGroup, tmp_path: Path, servers: list[int]) -> None:
    seeded = _start(procs, tmp_path, servers, "seeded", "--seed", "18446744073709551615")
    assert json.loads(seeded.admin_get("/server_info"))["seed"] == 2**64 - 1
    unseeded = _start(procs, tmp_path, servers, "unseeded")
    assert json.loads(unseeded.admin_get("/server_info"))["seed"] is None


def test_a_bad_seed_is_refused(procs: ProcessGroup) -> None:
    for bad, why in (("-1", "must be from 0 to 2^64-1"), ("abc", "expected a whole number")):
        proc = procs.python(f"bad-seed-{bad}", "pyproxy", "--config-yaml", "{}", "--seed", bad)
        assert proc.popen.wait(timeout=30) == 2
        assert why in proc.output()
