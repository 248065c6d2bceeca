"""`mesh_ctl up --non-mesh-client` and `--cert-ttl`: what runs, where, and how its results read (pure parts).

The client outside the mesh is the payment load client with no sidecar, dialing a sidecar's inbound port
itself; what makes it useful is that people can tell, from the summary, `status` and its own log, that its
calls fail now and why. These tests pin that chain: the client's JSON and stderr -> the supervisor's summary ->
the lines people read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.addressing import AddressingError, plan
from mesh_ctl.cli import build_parser, main
from mesh_ctl.commands.up import _forwarded, cert_ttl
from mesh_ctl.runtime.local import _target, _workload_records
from mesh_ctl.runtime.render import traffic_lines, where_table
from mesh_ctl.runtime.specs import ControlPlaneAddresses, ProcessSpec, build_specs, next_address, non_mesh_client
from mesh_ctl.runtime.state import RunDir, State
from mesh_ctl.runtime.summary import Summary, error_lines, parse_client_line, summary_line, summary_lines
from mesh_ctl.topology import default_topology, topology_from_dict
from payment_service.client import Transitions
from payment_service.loadgen import explain

SOCKET_CLOSED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.10:15006: Socket closed"


def _groups(tmp_path: Path, **options: Any) -> list[list[ProcessSpec]]:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    bootstraps = {w.name: tmp_path / f"{w.name}.yaml" for w in t.workloads}
    return build_specs(t, p, bootstraps, python="py", control_plane=ControlPlaneAddresses.for_offset(None, 0),
                       run_dir=RunDir(tmp_path), **options)


def test_the_non_mesh_client_calls_payment_v1s_inbound_port_in_plaintext_from_an_address_of_its_own(
        tmp_path: Path) -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    nm = non_mesh_client(t, p, rps=7)
    assert (nm.name, nm.address, nm.target, nm.target_workload, nm.authority, nm.namespace) == (
        "legacy-client", "127.0.0.13", "127.0.0.10:15006", "payment-v1", "payment:8080", "default")
    groups = _groups(tmp_path, non_mesh=nm, cert_ttl="6s")
    [_, _, sidecars, clients] = groups
    assert [s.name for s in clients] == ["client", "legacy-client"]
    legacy = clients[1]
    assert legacy.argv == ("py", "-m", "payment_service.client", "--target", "127.0.0.10:15006",
                           "--authority", "payment:8080", "--rps", "7", "--duration", "0", "--concurrency", "1",
                           "--json", "--interval", "1", "--metrics-address", "127.0.0.13:9464")
    assert (legacy.role, legacy.ready, legacy.reports, legacy.addresses) == (
        "app", "first-report", True, {"target": "127.0.0.10:15006", "metrics": "127.0.0.13:9464"})
    assert legacy.note == "outside the mesh: no sidecar, plaintext"
    assert _target(legacy) == "127.0.0.10:15006 (payment:8080)"
    assert _target(clients[0]) == "payment:8080"
    # No sidecar of its own: still three, each with the certificate lifetime asked for.
    assert [s.argv[s.argv.index("--cert-ttl") + 1] for s in sidecars] == ["6s"] * 3


def test_its_address_is_the_next_free_one_and_shared_mode_shares() -> None:
    t = default_topology()
    assert next_address(plan(t, base_address="127.0.0.252", probe=lambda _: True)) == "127.0.1.2"  # .255, .0, 1.1
    assert next_address(plan(t, mode="shared")) == "127.0.0.1"
    # Its own metrics port: 9464 on its address; shared, the port block after the mesh's three workloads.
    assert non_mesh_client(t, plan(t, probe=lambda _: True, port_offset=7)).metrics == "127.0.0.13:9471"
    assert non_mesh_client(t, plan(t, mode="shared", port_offset=7)).metrics == "127.0.0.1:9771"
    # No mesh client: the first service's first endpoint; no endpoint at all: an error.
    only_servers = topology_from_dict({
        "services": [{"name": "pay", "port": 9090}],
        "workloads": [{"name": "pay-a", "app": "payment-server", "labels": {"app": "pay"}}]})
    nm = non_mesh_client(only_servers, plan(only_servers, probe=lambda _: True))
    assert (nm.target, nm.authority) == ("127.0.0.10:15006", "pay:9090")
    empty = topology_from_dict({"workloads": [{"name": "x", "app": "payment-client", "labels": {},
                                               "calls": [{"service": "pay"}]}],
                                "services": [{"name": "pay", "port": 1, "selector": {"app": "nobody"}}]})
    with pytest.raises(AddressingError, match="no workload of the topology serves a service"):
        non_mesh_client(empty, plan(empty, probe=lambda _: True))


def test_cert_ttl_reaches_only_agents(tmp_path: Path) -> None:
    [_, _, sidecars, _] = _groups(tmp_path)
    assert not any("--cert-ttl" in s.argv for s in sidecars)
    t = default_topology()
    with pytest.raises(ValueError, match="not with --static"):
        build_specs(t, plan(t, probe=lambda _: True), {w.name: Path(w.name) for w in t.workloads}, python="py",
                    cert_ttl="6s")


def test_up_options_cert_ttl_and_non_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [cert_ttl(x) for x in ("24h", "6s", "90m", "30d", "1.5s", "3661")] == [
        "24h", "6s", "90m", "720h", "1.5s", "3661s"]  # Go durations pyproxy reads: no days
    for bad in ("0s", "91d", "soon", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            cert_ttl(bad)
    args = build_parser().parse_args(["up", "--cert-ttl", "6s", "--non-mesh-client", "--non-mesh-rps", "3"])
    assert (args.cert_ttl, args.non_mesh_client, args.non_mesh_rps) == ("6s", True, 3.0)
    forwarded = _forwarded(args, tmp_path)
    assert forwarded[forwarded.index("--cert-ttl") + 1] == "6s" and "--non-mesh-client" in forwarded
    assert forwarded[forwarded.index("--non-mesh-rps") + 1] == "3.0"
    defaults = build_parser().parse_args(["up"])
    assert (defaults.cert_ttl, defaults.non_mesh_client, defaults.non_mesh_rps) == (None, False, None)
    assert "--cert-ttl" not in _forwarded(defaults, tmp_path)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--cert-ttl", "0s"])
    run = str(tmp_path / "run")
    assert main(["up", "--run-dir", run, "--non-mesh-rps", "3"]) == 2
    assert "--non-mesh-rps needs --non-mesh-client" in capsys.readouterr().err
    assert main(["up", "--run-dir", run, "--static", "--cert-ttl", "6s"]) == 2
    assert "not with --static" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_where_it_shows_a_row_without_a_sidecar_and_its_own_path() -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    nm = non_mesh_client(t, p)
    records = _workload_records(t, p, nm)
    assert [(w.name, w.in_mesh, w.spiffe_id, w.address) for w in records][-1] == (
        "legacy-client", False, "", "127.0.0.13")
    state = State(run_id="r", run_dir="/d", supervisor_pid=1, supervisor_argv=[], supervisor_start_time=None,
                  started_at="", address_mode="per-workload", workloads=records)
    assert where_table(state)[-1].split() == ["legacy-client", "-", "127.0.0.13", "-", "-", "-", "-", "-", "-",
                                              "none", "(outside", "the", "mesh)"]
    assert State.from_json(json.loads(json.dumps(state.to_json()))).workloads[-1].in_mesh is False
    old = state.to_json()
    for w in old["workloads"]:
        del w["in_mesh"]  # a state file written before the field existed
    assert all(w.in_mesh for w in State.from_json(old).workloads)
    assert traffic_lines(t, p, nm)[-1] == (
        "legacy-client (no sidecar) --h2c, plaintext--> 127.0.0.10:15006 --h2c--> payment-v1 127.0.0.10:8080   "
        "[outside the mesh: accepted under PERMISSIVE, refused under STRICT]")


# --------------------------------------------------------------------------------------------- its results


def _interval(elapsed: float, by_status: dict[str, int], cumulative: dict[str, int],
              errors: dict[str, str] | None = None) -> str:
    """An interval line as payment_service.client prints it (errors/hints only once a call failed)."""
    def with_errors(d: dict[str, object], errs: dict[str, str] | None) -> dict[str, object]:
        if not errs:
            return d
        hints = {k: h for k, m in errs.items() if (h := explain(k, m))}
        return {**d, "errors": errs, **({"hints": hints} if hints else {})}

    n = sum(by_status.values())
    line = with_errors({"type": "interval", "elapsed_s": elapsed, "interval_s": 1.0, "requests": n,
                        "by_version": {"v1": by_status.get("OK", 0)}, "by_status": by_status, "rps": float(n),
                        "latency_ms": {"p50": 1.0}}, errors)
    line["cumulative"] = with_errors({"requests": sum(cumulative.values()), "by_status": cumulative}, errors)
    return json.dumps(line)


def test_failing_now_the_first_error_and_what_it_means_reach_the_summary() -> None:
    s = Summary("legacy-client", "127.0.0.10:15006 (payment:8080)", note="outside the mesh: no sidecar, plaintext")
    lines = [_interval(1.0, {"OK": 5}, {"OK": 5}),
             _interval(2.0, {"OK": 2, "UNAVAILABLE": 3}, {"OK": 7, "UNAVAILABLE": 3}, {"UNAVAILABLE": SOCKET_CLOSED}),
             _interval(3.0, {"UNAVAILABLE": 5}, {"OK": 7, "UNAVAILABLE": 8},
                       {"UNAVAILABLE": "failed to connect to all addresses; later text"})]
    for line in lines:
        report = parse_client_line(line)
        assert report is not None
        s.update(report)
    assert (s.requests, s.errors, s.recent_by_status) == (15, 8, {"UNAVAILABLE": 5})
    assert s.first_errors == {"UNAVAILABLE": SOCKET_CLOSED}  # the first one stays
    assert "closed the connection during the handshake" in s.hints["UNAVAILABLE"]
    text = summary_lines(s)
    assert text[0].startswith("legacy-client -> 127.0.0.10:15006 (payment:8080)  (outside the mesh: no sidecar, "
                              "plaintext)")
    assert "  status   OK=7  UNAVAILABLE=8   now OK=0 UNAVAILABLE=5" in text
    assert f"  first UNAVAILABLE: {SOCKET_CLOSED}" in text
    assert error_lines(s)[1].startswith("  (the server closed the connection during the handshake")
    line = summary_line(s)
    assert line.startswith("legacy-client (outside the mesh: no sidecar, plaintext): 3s 15 requests")
    assert "errors 8 (UNAVAILABLE=8)  now OK=0 UNAVAILABLE=5" in line and f"first UNAVAILABLE: {SOCKET_CLOSED}" in line
    assert SOCKET_CLOSED not in summary_line(s, with_errors=False)
    again = Summary.from_json(json.loads(json.dumps(s.to_json())))
    assert again.to_json() == s.to_json() and again.note == s.note
    # Recovered: "now" is all OK; the summary no longer claims calls fail now.
    report = parse_client_line(_interval(4.0, {"OK": 5}, {"OK": 12, "UNAVAILABLE": 8}))
    assert report is not None
    s.update(report)
    assert "now OK=5" in summary_line(s) and "UNAVAILABLE=5" not in summary_line(s)
    # A mesh client with no errors shows neither "now" statuses nor error lines.
    ok = Summary("client", "payment:8080")
    report = parse_client_line(_interval(1.0, {"OK": 5}, {"OK": 5}))
    assert report is not None
    ok.update(report)
    assert "now OK" not in summary_line(ok) and not error_lines(ok) and "first" not in "\n".join(summary_lines(ok))


def test_the_clients_log_says_when_calls_start_failing_and_when_they_recover() -> None:
    assert "during the handshake" in explain("UNAVAILABLE", SOCKET_CLOSED)
    assert "during the handshake" in explain("UNAVAILABLE", "failed to connect to all addresses; last error: "
                                                            "UNAVAILABLE: ipv4:1.2.3.4:5: Connection reset by peer")
    assert explain("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
                                  "Failed to connect to remote host: Connection refused") == \
        "nothing accepts connections at that address"
    assert explain("UNAVAILABLE", "Socket closed") == ""  # mid-call: not a handshake
    assert explain("PERMISSION_DENIED", "RBAC: access denied") == ""
    log = Transitions("127.0.0.10:15006")
    assert log.observe(json.loads(_interval(1.0, {"OK": 5}, {"OK": 5}))) == []
    failing = log.observe(json.loads(_interval(2.0, {"OK": 2, "UNAVAILABLE": 3}, {"OK": 7, "UNAVAILABLE": 3},
                                               {"UNAVAILABLE": SOCKET_CLOSED})))
    assert failing[0] == "payment-client: [2.0s] calls to 127.0.0.10:15006 FAIL: 3 of 5 in the last 1.0 s"
    assert failing[1] == f"  UNAVAILABLE x3: {SOCKET_CLOSED}"
    assert failing[2].startswith("  (the server closed the connection during the handshake")
    assert log.observe(json.loads(_interval(3.0, {"UNAVAILABLE": 5}, {"OK": 7, "UNAVAILABLE": 8},
                                            {"UNAVAILABLE": SOCKET_CLOSED}))) == []  # said once
    assert log.observe(json.loads(_interval(4.0, {}, {"OK": 7, "UNAVAILABLE": 8}))) == []  # no calls: no news
    assert log.observe(json.loads(_interval(5.0, {"OK": 5}, {"OK": 12, "UNAVAILABLE": 8}))) == [
        "payment-client: [5.0s] calls to 127.0.0.10:15006 succeed again: 5 of 5 OK in the last 1.0 s"]
