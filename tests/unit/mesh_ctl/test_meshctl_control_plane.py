"""`mesh_ctl up` with a control plane: its process spec, the ADS bootstraps, restarts, and what people see.

The contracts with the other parts are checked against the real code on the other side: the control plane's
argv is parsed by `mesh_ctl serve`'s own option builder (and must give the registry the same placement as
`up`), and the ADS bootstrap is loaded by pyproxy's own bootstrap loader.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.addressing import AddressingError, Placement, plan
from mesh_ctl.bootstrap import XDS_CLUSTER, build_ads_bootstraps, to_yaml, validate_bootstrap
from mesh_ctl.commands import serve as serve_command
from mesh_ctl.registry import Registry, sidecar_node_id
from mesh_ctl.runtime.local import restart_delay
from mesh_ctl.runtime.render import control_plane_lines, hints
from mesh_ctl.runtime.specs import ControlPlaneAddresses, build_specs
from mesh_ctl.runtime.state import ProcessRecord, RunDir, State, WorkloadRecord
from mesh_ctl.topology import Topology, default_topology, topology_to_dict
from pyproxy.config.bootstrap import load_bootstrap

XDS = "127.0.0.1:15010"


def _specs(t: Topology, p: Placement, run_dir: Path, offset: int = 0) -> list[list[Any]]:
    bootstraps = {w.name: run_dir / "bootstrap" / f"{w.name}.yaml" for w in t.workloads}
    cp = ControlPlaneAddresses.for_offset(None, offset)
    return build_specs(t, p, bootstraps, python="py", control_plane=cp, run_dir=RunDir(run_dir), port_offset=offset)


def test_the_control_plane_starts_first_and_everything_but_the_clients_is_restarted(tmp_path: Path) -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    groups = _specs(t, p, tmp_path)
    assert [[s.name for s in g] for g in groups] == [
        ["control-plane"], ["payment-v1", "payment-v2"],
        ["payment-v1-sidecar", "payment-v2-sidecar", "client-sidecar"], ["client"]]
    [cp] = groups[0]
    assert cp.argv == (
        "py", "-m", "mesh_ctl", "serve", "--run-dir", str(tmp_path), "--topology", str(tmp_path / "topology.yaml"),
        "--base-address", "127.0.0.10", "--address-mode", "per-workload",
        "--port-offset", "0", "--xds-address", XDS, "--api-address", "127.0.0.1:15014")
    assert (cp.role, cp.ready, cp.ready_at, cp.addresses) == (
        "control-plane", "http-ready", "127.0.0.1:15014",
        {"xds": XDS, "api": "127.0.0.1:15014", "metrics": "127.0.0.1:15014"})
    assert [s.name for g in groups for s in g if not s.restart] == ["client"]  # a kubelet's restartPolicy: Always
    client_sidecar = groups[2][2]
    assert client_sidecar.argv[-6:] == ("--ca-address", XDS, "--token-path", str(tmp_path / "tokens" / "client.jwt"),
                                        "--admin-token-file", str(tmp_path / "api-token"))
    # --static: no control plane, the same three groups as before.
    static = build_specs(t, p, {w.name: Path(w.name) for w in t.workloads}, python="py")
    assert [[s.name for s in g] for g in static] == [[s.name for s in g] for g in groups[1:]]
    assert not any("--ca-address" in s.argv for g in static for s in g)


@pytest.mark.parametrize(("base", "mode", "offset"), [
    (None, "per-workload", 0),
    ("127.0.0.1", "per-workload", 0),  # reserved: the first workload gets 127.0.0.2
    ("127.0.0.253", "per-workload", 7),  # .255 and .0 are skipped: 127.0.0.253, .254, 127.0.1.2 (127.0.1.1 is reserved)
    (None, "shared", 0),
    ("127.0.0.1", "shared", 500),
])
def test_serve_gets_the_placement_up_uses(tmp_path: Path, base: str | None, mode: Any, offset: int) -> None:
    """The control plane's registry must place every workload where `up` started it: its argv goes through
    `mesh_ctl serve`'s own option parsing and builder, and the registry's addresses must match."""
    t = default_topology()
    p = plan(t, base_address=base, port_offset=offset, mode=mode, probe=lambda _: True)
    [cp] = _specs(t, p, tmp_path, offset)[0]
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(topology_to_dict(t)))
    (tmp_path / "certs").mkdir()
    parser = argparse.ArgumentParser()
    serve_command.add_arguments(parser)
    assert cp.argv[:4] == ("py", "-m", "mesh_ctl", "serve")
    options = serve_command.build_options(parser.parse_args(cp.argv[4:]))
    expected = Registry.from_topology(t, p, tmp_path / "certs")
    assert options.registry.workloads == expected.workloads
    assert options.xds_address == f"127.0.0.1:{15010 + offset}"
    assert options.api_address == f"127.0.0.1:{15014 + offset}"
    assert options.state_dir == tmp_path / "store"


def test_control_plane_addresses() -> None:
    cp = ControlPlaneAddresses.for_offset("127.0.5.9", 100)
    assert (cp.xds, cp.api) == ("127.0.5.9:15110", "127.0.5.9:15114")
    assert cp.sockets() == [("control-plane", "xds", "127.0.5.9", 15110), ("control-plane", "api", "127.0.5.9", 15114)]
    assert ControlPlaneAddresses.for_offset("::1", 0).xds == "[::1]:15010"
    with pytest.raises(AddressingError, match="not a loopback address"):
        ControlPlaneAddresses.for_offset("192.168.1.5", 0)
    with pytest.raises(AddressingError, match="not an IP address"):
        ControlPlaneAddresses.for_offset("localhost:15010", 0)
    with pytest.raises(AddressingError, match="out of range"):
        ControlPlaneAddresses.for_offset(None, 50600)


def test_ads_bootstraps_name_the_registry_node_and_load_in_pyproxy(tmp_path: Path) -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    bootstraps = build_ads_bootstraps(t, p, XDS)
    registry = Registry.from_topology(t, p)
    assert set(bootstraps) == {"payment-v1", "payment-v2", "client"}
    for name, b in bootstraps.items():
        validate_bootstrap(b)
        w = registry.workload(name, "default")
        assert w is not None
        assert b["node"]["id"] == w.node_id == sidecar_node_id(w.address, name, "default")
        assert b["admin"] == {"address": {"socket_address": {"address": w.address, "port_value": 15000}}}
        assert "listeners" not in b["static_resources"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(to_yaml(b))
        assert "&id" not in path.read_text()  # no YAML anchors: plain documents, like Istio's
        snapshot = load_bootstrap(str(path))  # pyproxy's own loader: the contract with the data plane
        assert snapshot.node.id == w.node_id
        assert snapshot.dynamic is not None and not snapshot.listeners
    client = bootstraps["client"]
    assert client["dynamic_resources"]["ads_config"]["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
    for source in ("lds_config", "cds_config"):
        assert client["dynamic_resources"][source] == {"ads": {}, "initial_fetch_timeout": "0s",
                                                      "resource_api_version": "V3"}
    [xds] = client["static_resources"]["clusters"]
    assert xds["name"] == XDS_CLUSTER and xds["type"] == "STATIC"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15010}
    assert "http2_protocol_options" in str(xds["typed_extension_protocol_options"])
    bad = copy.deepcopy(client)
    bad["dynamic_resources"]["ads_config"]["api_typ"] = "GRPC"
    with pytest.raises(ValueError, match="api_typ"):
        validate_bootstrap(bad)
    with pytest.raises(ValueError, match="HOST:PORT"):
        build_ads_bootstraps(t, p, "15010")


def test_restart_back_off() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def _state(*processes: ProcessRecord) -> State:
    workloads = [
        WorkloadRecord("payment-v1", "default", "payment-server", "v1", "payment", "s", "127.0.0.10",
                       {"app": 8080, "outbound": None, "inbound": 15006, "admin": 15000, "prometheus": 15090}),
        WorkloadRecord("client", "default", "payment-client", None, "client", "s", "127.0.0.12",
                       {"app": None, "outbound": 15001, "inbound": None, "admin": 15000, "prometheus": 15090}),
    ]
    return State(run_id="r", run_dir="/d", supervisor_pid=1, supervisor_argv=[], supervisor_start_time=None,
                 started_at="", address_mode="per-workload", workloads=workloads,
                 services={"payment": ["v1", "v2"]}, processes=list(processes))


def test_what_people_see_about_the_control_plane() -> None:
    cp = ProcessRecord("control-plane", "control-plane", "control-plane", 42, [], None,
                       {"xds": XDS, "api": "127.0.0.1:15014"}, "/d/logs/control-plane.log")
    sidecar = ProcessRecord("client-sidecar", "client", "sidecar", 43, [], None,
                            {"admin": "127.0.0.12:15000", "prometheus": "127.0.0.12:15090"}, "")
    state = _state(cp, sidecar)
    assert control_plane_lines(state) == [
        "control plane: xDS 127.0.0.1:15010 (plain gRPC), API http://127.0.0.1:15014, pid 42", ""]
    cp.restarts = 2
    assert control_plane_lines(state)[0].endswith("pid 42 (restarted 2x)")
    text = "\n".join(hints(state, "/d"))
    assert "mesh_ctl set-weight payment v1=90 v2=10 --run-dir /d" in text
    assert "mesh_ctl proxy-status --run-dir /d" in text and "proxy-config routes client --run-dir /d" in text
    static = _state(sidecar)
    assert control_plane_lines(static) == []
    assert "set-weight" not in "\n".join(hints(static, "/d"))


def test_state_files_of_a_mesh_without_restarts_still_read(tmp_path: Path) -> None:
    """``restarts`` and ``services`` are new fields with defaults: a state file written before them reads."""
    from mesh_ctl.runtime.state import read_state, write_json

    run_dir = RunDir(tmp_path)
    doc: dict[str, Any] = _state(ProcessRecord("a", "a", "app", 5, ["x"], None, {}, "")).to_json()
    del doc["services"]
    del doc["processes"][0]["restarts"]
    write_json(run_dir.state, doc)
    state = read_state(run_dir)
    assert state is not None and state.processes[0].restarts == 0 and state.services == {}


def test_tokens_are_private_files_replaced_whole(tmp_path: Path) -> None:
    from mesh_ctl.runtime.identity import _write_private, token_path

    path = token_path(tmp_path, "client")
    assert path == tmp_path / "client.jwt"
    _write_private(path, "a.b.c")
    _write_private(path, "d.e.f")  # a refresh replaces it
    assert path.read_text() == "d.e.f" and (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["client.jwt"]  # no temporary file left behind
