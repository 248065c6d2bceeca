"""The Prometheus `mesh_ctl up` runs: a real Prometheus scraping a real mesh through the file-SD configuration
the supervisor keeps current, and the sidecars' exposition passing prometheus_client's parser.

- all targets up: exactly the jobs whose address keys the run's specs have (sidecars' merged endpoint or 15090,
  the control plane's ``metrics``, apps' ``metrics`` without a merging sidecar), checked against state.json;
- ``istio_requests_total`` series for payment v1 and v2, read back through Prometheus's HTTP API;
- a change of a target file is picked up by the running Prometheus (same pid: no restart);
- killed, it is restarted by the supervisor; `down` stops it (its pid gone, its port free);
- `--no-prometheus` starts none; with no ``prometheus`` on PATH `up` says so in one line, once, and the mesh
  carries its traffic all the same.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh_ctl.addressing import can_bind
from mesh_ctl.runtime import procs as rprocs
from mesh_ctl.runtime import prometheus as prom
from tests.integration.test_mesh_up import (
    Meshes,
    assert_gone,
    cli,
    control_plane_address,
    free_base_address,
    meshes,
    output,
    up_args,
    wait_for,
)
from tests.support.prometheus import prometheus_binary

__all__ = ["meshes"]  # the fixture, re-used
pytestmark = pytest.mark.timeout(180)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _get(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}")["data"]["result"]
    return result


def _active(url: str) -> list[dict[str, Any]]:
    try:
        targets: list[dict[str, Any]] = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
    except OSError:
        return []
    return targets


def expected_targets(state: dict[str, Any]) -> set[tuple[str, str]]:
    """(job, address) of every target the run's processes offer, by the rules of mesh_ctl.runtime.prometheus
    (independent of its code: read from state.json)."""
    procs = state["processes"]
    merged = {p["workload"] for p in procs if p["role"] == "sidecar" and "merged" in p["addresses"]}
    out = set()
    for p in procs:
        a = p["addresses"]
        if p["role"] == "sidecar":
            out.add(("envoy-stats", a.get("merged", a["prometheus"])))
        elif p["role"] == "control-plane" and "metrics" in a:
            out.add(("istiod", a["metrics"]))
        elif p["role"] == "app" and "metrics" in a and p["workload"] not in merged:
            out.add(("apps", a["metrics"]))
    return out


def test_up_runs_a_prometheus_that_scrapes_the_whole_mesh_and_down_stops_it(tmp_path: Path, meshes: Meshes) -> None:
    prometheus_binary()
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    cp = control_plane_address(base)
    url = f"http://{cp}:9090"
    r = cli(*up_args(run_dir, base, "--ready-timeout", 30, "--scrape-interval", "1s"))
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)
    record = next(p for p in state["processes"] if p["role"] == "prometheus")
    assert f"prometheus: {url}, pid {record['pid']}" in r.stdout, r.stdout
    assert state["prometheus"] == url and state["processes"][-1] is record  # started last, stopped first
    status = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["prometheus"]
    assert (status["url"], status["pid"], status["alive"], status["ready"]) == (url, record["pid"], True, True)
    assert f"prometheus: {url}, pid {record['pid']} (ready)" in cli("status", "--run-dir", run_dir).stdout

    # The exposition each sidecar serves parses, with the Istio families and their 25 labels.
    sidecars = [p for p in state["processes"] if p["role"] == "sidecar"]
    for s in sidecars:
        address = s["addresses"].get("merged", s["addresses"]["prometheus"])
        with urllib.request.urlopen(f"http://{address}/stats/prometheus", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        assert {"istio_requests", "istio_request_duration_milliseconds"} <= set(families), (s["name"], families)
        for sample in families["istio_requests"].samples:
            assert len(sample.labels) == 25, (s["name"], sample)

    expected = expected_targets(state)
    assert len([t for t in expected if t[0] == "envoy-stats"]) == 3

    def all_up() -> bool:
        active = _active(url)
        return ({(t["labels"]["job"], t["labels"]["instance"]) for t in active} == expected
                and all(t["health"] == "up" for t in active))

    wait_for(all_up, 60, f"exactly the targets {sorted(expected)} up in Prometheus")
    by_pod = {t["labels"]["pod"]: t["labels"] for t in _active(url) if t["labels"]["job"] == "envoy-stats"}
    assert by_pod["payment-v1"]["version"] == "v1" and by_pod["payment-v2"]["version"] == "v2"
    assert {v["namespace"] for v in by_pod.values()} == {"default"}

    q = 'sum by (destination_version) (rate(istio_requests_total{reporter="destination"}[10s]))'

    def both_versions() -> bool:
        rates = {x["metric"].get("destination_version"): float(x["value"][1]) for x in _query(url, q)}
        return rates.get("v1", 0) > 0 and rates.get("v2", 0) > 0

    wait_for(both_versions, 60, "istio_requests_total rates for payment v1 and v2")

    # File-based service discovery: a target file changed under the running Prometheus is picked up (here a
    # group naming Prometheus's own /metrics, in the apps job), without a restart.
    targets = run_dir / "prometheus" / "targets" / f"{prom.APP_JOB}.json"
    groups = json.loads(targets.read_text())
    prom.write_targets(run_dir / "prometheus", {prom.APP_JOB: [
        *groups, {"targets": [f"{cp}:9090"], "labels": {"pod": "file-sd-probe"}}]})

    def picked_up() -> bool:
        return any(t["labels"].get("pod") == "file-sd-probe" and t["health"] == "up" for t in _active(url))

    wait_for(picked_up, 60, "the new target of the rewritten file, scraped")
    expected.add(("apps", f"{cp}:9090"))
    again = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["prometheus"]
    assert again["pid"] == record["pid"] and again["restarts"] == 0

    # Supervised like the rest: killed, it is started again (same address, same files) and scrapes again.
    os.kill(record["pid"], signal.SIGKILL)

    def restarted() -> bool:
        st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["prometheus"]
        return bool(st["restarts"] == 1 and st["pid"] != record["pid"] and st["ready"])

    wait_for(restarted, 60, "the run's Prometheus restarted and ready")
    wait_for(all_up, 60, "every target up again after the restart")
    state = meshes.record(run_dir)  # the new pid, for assert_gone
    record = next(p for p in state["processes"] if p["role"] == "prometheus")

    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert not rprocs.is_ours(record["pid"], record["argv"], record["start_time"])
    assert can_bind(cp, 9090)
    assert_gone(state)


def test_no_prometheus_starts_none(tmp_path: Path, meshes: Meshes) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base, "--static", "--no-prometheus"))
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)
    assert "prometheus:" not in r.stdout + r.stderr, r.stdout
    assert state["prometheus"] is None
    assert [p["name"] for p in state["processes"] if p["role"] == "prometheus"] == []
    assert can_bind(control_plane_address(base), 9090)
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    assert st["prometheus"] is None and "prometheus:" not in cli("status", "--run-dir", run_dir).stdout


def test_without_a_prometheus_binary_up_says_so_once_and_the_mesh_runs(tmp_path: Path, meshes: Meshes) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    assert prom.find_binary(env["PATH"]) is None
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base), env=env)
    assert r.returncode == 0, output(r, run_dir)
    said = (r.stdout + r.stderr).splitlines()
    assert said.count(prom.missing_message()) == 1, said
    assert [line for line in said if line.startswith("prometheus")] == [prom.missing_message()]
    assert "apt-get install prometheus" in prom.missing_message()
    state = meshes.record(run_dir)
    assert state["prometheus"] is None and all(p["role"] != "prometheus" for p in state["processes"])
    supervisor_log = (run_dir / "logs" / "supervisor.log").read_text()
    assert "prometheus: " not in supervisor_log, supervisor_log  # the background supervisor said nothing more

    def traffic() -> bool:
        s = json.loads(cli("status", "-o", "json", "--run-dir", run_dir, env=env).stdout)["summary"]
        return bool(s) and s[0]["requests"] >= 50 and s[0]["errors"] == 0

    wait_for(traffic, 60, "50 calls through the mesh without Prometheus")


def test_a_taken_9090_moves_the_runs_prometheus_to_the_next_free_port(tmp_path: Path, meshes: Meshes) -> None:
    """Debian's package runs a Prometheus on 9090 as a service: `up` moves its own to the next free port (and
    says so once), unless --prometheus-port asked for that port, when the taken port stops it."""
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    cp = control_plane_address(base)
    refused = tmp_path / "refused"
    meshes.run_dirs.append(refused)  # stopped at the end should `up` wrongly start something there
    with socket.socket() as other:  # "another Prometheus" on the run's 9090
        other.bind((cp, 9090))
        other.listen()
        explicit = cli(*up_args(refused, base, "--static", "--prometheus-port", "9090"))
        assert explicit.returncode == 1, explicit.stdout + explicit.stderr
        assert f"{cp}:9090  (prometheus web)" in explicit.stderr, explicit.stderr
        if not can_bind(cp, 9091):
            pytest.skip(f"{cp}:9091 is taken too")
        r = cli(*up_args(run_dir, base, "--static"))
        assert r.returncode == 0, output(r, run_dir)
        said = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("prometheus")]
        assert said[0] == (f"prometheus: {cp}:9090 is in use (another Prometheus?); this run's is on {cp}:9091"), said
        assert sum("is in use" in line for line in said) == 1, said
        state = meshes.record(run_dir)
        assert state["prometheus"] == f"http://{cp}:9091"
        supervisor_log = (run_dir / "logs" / "supervisor.log").read_text()
        assert "is in use" not in supervisor_log, supervisor_log  # the background supervisor said nothing more

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{cp}:9091/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, 60, "the run's Prometheus ready on 9091")
        st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
        assert st["prometheus"]["url"] == f"http://{cp}:9091", st["prometheus"]
