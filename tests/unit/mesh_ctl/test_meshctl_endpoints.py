"""`mesh_ctl proxy-config endpoints`: a sidecar's /clusters?format=json (Envoy's shape + pyproxy's extensions)
-> istioctl's table and minimesh's columns, istioctl's filters and JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.cli import main
from mesh_ctl.commands import _endpoints as ep
from mesh_ctl.commands import proxy_config
from mesh_ctl.runtime.state import ProcessRecord, RunDir, State, write_state

V1 = "outbound|8080|v1|payment.default.svc.cluster.local"
V2 = "outbound|8080|v2|payment.default.svc.cluster.local"


def _host(address: str, port: int, *, active: int = 0, ejected: dict[str, Any] | None = None,
          status: str = "HEALTHY") -> dict[str, Any]:
    host: dict[str, Any] = {
        "address": {"socket_address": {"address": address, "port_value": port}},
        "stats": [{"value": "7", "name": "rq_total"}, {"type": "GAUGE", "name": "cx_active", "value": "1"},
                  {"type": "GAUGE", "name": "rq_active", **({"value": str(active)} if active else {})}],
        "health_status": {"eds_health_status": status},
        "weight": 1,
    }
    if ejected is not None:
        host["health_status"]["failed_outlier_check"] = True
        host["outlier_detection"] = {"ejected": True, **ejected}
    return host


def _cluster(name: str, hosts: list[dict[str, Any]], *, max_requests: int = 4294967295, rq: int = 0,
             max_retries: int = 4294967295) -> dict[str, Any]:
    unlimited = 4294967295
    return {
        "name": name, "added_via_api": True,
        "circuit_breakers": {"thresholds": [
            {"max_connections": unlimited, "max_pending_requests": unlimited, "max_requests": max_requests,
             "max_retries": max_retries},
            {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024,
             "max_retries": 3}]},
        "host_statuses": hosts,
        "circuit_breaker_state": {
            "cx": {"current": 1, "max": unlimited, "remaining": unlimited - 1, "open": False},
            "pending": {"current": 0, "max": unlimited, "remaining": unlimited, "open": False},
            "rq": {"current": rq, "max": max_requests, "remaining": max(0, max_requests - rq),
                   "open": rq >= max_requests},
            "retries": {"current": 0, "max": max_retries, "remaining": max_retries, "open": False}},
    }


EJECTED = {"ejection_reason": "consecutive_5xx", "times_ejected": 2, "ejected_until": "2026-01-02T03:04:05.678Z",
           "ejection_time_left_s": 4.2}
CLUSTERS = {"cluster_statuses": [
    _cluster(V2, [_host("127.0.0.11", 15006, active=3, ejected=EJECTED)], max_requests=3, rq=3),
    _cluster(V1, [_host("127.0.0.10", 15006, active=1)]),
    _cluster("xds-grpc", [_host("127.0.0.9", 15010)], max_requests=1024, max_retries=3),
]}


def test_short_rows_are_istioctls_sorted_by_address() -> None:
    rows = proxy_config.endpoint_rows(CLUSTERS, [])
    assert rows == [["127.0.0.9:15010", "HEALTHY", "OK", "xds-grpc"],
                    ["127.0.0.10:15006", "HEALTHY", "OK", V1],  # 10 after 9: addresses compared as addresses
                    ["127.0.0.11:15006", "HEALTHY", "FAILED", V2]]


def test_wide_rows_add_active_requests_ejection_and_circuit_breakers() -> None:
    rows = {r[0]: r for r in proxy_config.endpoint_rows(CLUSTERS, [], wide=True)}
    ejected = rows["127.0.0.11:15006"]
    assert ejected[:4] == ["127.0.0.11:15006", "HEALTHY", "FAILED", "3"]
    assert ejected[4].endswith("(in 5s)") and len(ejected[4].split()[0]) == 8  # local HH:MM:SS, whole seconds
    assert ep._seconds(0.2) == "1s" and ep._seconds(59.5) == "1m00s" and ep._seconds(125) == "2m05s"
    assert ejected[5:] == ["consecutive_5xx (ejection 2)", "rq 3/3 OPEN", V2]
    assert rows["127.0.0.10:15006"][3:] == ["1", "-", "-", "unlimited", V1]
    assert rows["127.0.0.9:15010"][6] == "rq 0/1024, retries 0/3"  # only the limited resources


def test_ejection_due_and_unknown_counts() -> None:
    due = ep.Endpoint("10.0.0.1", 80, "c", "HEALTHY", True, outlier={"ejected": True, "ejection_reason": "success_rate",
                                                                      "ejected_until": "2026-01-02T03:04:05.000Z",
                                                                      "ejection_time_left_s": 0.0})
    assert ep.ejected_until(due).endswith("(due)")
    assert ep.ejection_reason(due) == "success_rate"
    assert ep.breakers_text(()) == "-"
    assert ep.breakers_text((ep.Breaker("rq", None, 10),)) == "rq ?/10"
    assert ep.Breaker("retries", 3, 3).text() == "retries 3/3 OPEN"
    assert ep.ejected_until(ep.Endpoint("10.0.0.1", 80, "c", "HEALTHY", False)) == "-"


def test_filters_as_istioctl() -> None:
    def endpoints(**kw: Any) -> list[str]:
        return [r[0] for r in proxy_config.endpoint_rows(CLUSTERS, [], ep.Filter(**kw))]

    assert endpoints(cluster=V1.upper()) == ["127.0.0.10:15006"]  # case-insensitive
    assert endpoints(port=15010) == ["127.0.0.9:15010"]
    assert endpoints(address="127.0.0.11") == ["127.0.0.11:15006"]
    assert endpoints(status="healthy") == ["127.0.0.9:15010", "127.0.0.10:15006", "127.0.0.11:15006"]
    assert endpoints(status="UNHEALTHY") == []
    assert endpoints(address="127.0.0.10", port=15010) == []
    # -o json: the whole ClusterStatus of each cluster with a match (istioctl's PrintEndpoints).
    assert [c["name"] for c in ep.matching_clusters(CLUSTERS, ep.Filter(port=15006))] == [V2, V1]


def test_camel_case_and_flat_stats_are_read_too() -> None:
    camel = {"clusterStatuses": [{"name": "c", "hostStatuses": [{
        "address": {"socketAddress": {"address": "::1", "portValue": 9}},
        "stats": {"rq_active": 2},  # an older pyproxy's flat dict
        "healthStatus": {"edsHealthStatus": "DRAINING", "failedOutlierCheck": True}}]}]}
    [e] = ep.from_clusters(camel)
    assert (e.endpoint, e.status, e.outlier_check, e.stats["rq_active"]) == ("[::1]:9", "DRAINING", "FAILED", 2)
    assert ep.wide_row(e)[-2] == "-"  # no circuit breakers reported


def test_control_plane_assignments_have_no_live_state() -> None:
    cla = [{"cluster_name": V1, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.10", "port_value": 15006}}}}]}]}]
    assert proxy_config.endpoint_rows(None, cla, wide=True) == [
        ["127.0.0.10:15006", "HEALTHY", "-", "-", "-", "-", "-", V1]]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mesh_state(tmp_path: Path) -> RunDir:
    run_dir = RunDir(tmp_path)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    sidecars = [ProcessRecord(f"{w}-sidecar", w, "sidecar", 10 + i, [], None, {"admin": f"127.0.0.{10 + i}:15000"}, "")
                for i, w in enumerate(("payment-v1", "payment-v2", "client"))]
    write_state(run_dir, State(run_id="r", run_dir=str(tmp_path), supervisor_pid=1, supervisor_argv=[],
                               supervisor_start_time=None, started_at="", address_mode="per-workload",
                               workloads=[], processes=sidecars))
    return run_dir


def test_unknown_workload_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run dir's mesh has no such sidecar, and no control plane answers: the error still says which
    sidecars there are (exit 1)."""
    _mesh_state(tmp_path)
    code = main(["proxy-config", "endpoints", "nosuch", "--run-dir", str(tmp_path), "--control-plane",
                 f"127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no sidecar named 'nosuch' in this mesh (known: payment-v1, payment-v2, client)" in err


def test_filters_only_apply_to_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy-config", "routes", "client", "--cluster", "x", "--admin", "127.0.0.1:1"]) == 2
    assert "filter endpoints, not routes" in capsys.readouterr().err


class _Admin:
    """A one-shot admin API answering /config_dump and /clusters?format=json from memory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fetch(address: str, path: str) -> Any:
            assert address == "admin:1"
            return CLUSTERS if path.startswith("/clusters") else {"configs": []}

        monkeypatch.setattr(proxy_config, "fetch", fetch)


def test_outputs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _Admin(monkeypatch)
    base = ["proxy-config", "endpoints", "x", "--admin", "admin:1"]
    assert main(base) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "RQ", "ACTIVE", "EJECTED", "UNTIL",
                                "EJECTION", "REASON", "CIRCUIT", "BREAKERS", "CLUSTER"]
    assert len(table) == 4
    assert main([*base, "-o", "short", "--status", "HEALTHY", "--port", "15006"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"], ["127.0.0.10:15006", "HEALTHY", "OK", V1],
        ["127.0.0.11:15006", "HEALTHY", "FAILED", V2]]
    assert main([*base, "-o", "json", "--cluster", V2]) == 0
    [only] = json.loads(capsys.readouterr().out)
    assert only["name"] == V2 and only["host_statuses"][0]["outlier_detection"]["ejection_reason"] == "consecutive_5xx"
    assert main([*base, "-o", "yaml", "--cluster", V2]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == [only]
