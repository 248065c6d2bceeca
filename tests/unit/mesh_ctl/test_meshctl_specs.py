"""What `mesh_ctl up` runs, in which order, with which arguments (the contracts with the other parts)."""

from __future__ import annotations

from pathlib import Path

from mesh_ctl.addressing import plan
from mesh_ctl.runtime.specs import build_specs
from mesh_ctl.topology import default_topology, topology_from_dict, topology_to_dict


def test_apps_then_sidecars_then_the_client() -> None:
    t = default_topology().with_load(rps=75, concurrency=2)
    p = plan(t, probe=lambda _: True)
    bootstraps = {w.name: Path(f"/run/bootstrap/{w.name}.yaml") for w in t.workloads}
    apps, sidecars, clients = build_specs(t, p, bootstraps, python="py", proxy_log_level="debug")
    assert [s.name for s in apps] == ["payment-v1", "payment-v2"]
    assert [s.name for s in sidecars] == ["payment-v1-sidecar", "payment-v2-sidecar", "client-sidecar"]
    assert [s.name for s in clients] == ["client"]
    assert apps[1].argv == (
        "py",
        "-m",
        "payment_service.server",
        "--version",
        "v2",
        "--listen",
        "127.0.0.11:8080",
        "--name",
        "payment-v2",
        "--metrics-address",
        "127.0.0.11:9464",
    )
    assert apps[1].addresses == {"app": "127.0.0.11:8080", "metrics": "127.0.0.11:9464"}
    assert (apps[1].ready, apps[1].ready_at) == ("tcp", "127.0.0.11:8080")
    assert sidecars[0].argv == (
        "py",
        "-m",
        "pyproxy",
        "-c",
        "/run/bootstrap/payment-v1.yaml",
        "--stats-address",
        "127.0.0.10:15090",
        "--merged-stats-address",
        "127.0.0.10:15020",
        "--app-metrics-url",
        "http://127.0.0.10:9464/metrics",
        "-l",
        "debug",
    )
    assert (sidecars[0].ready, sidecars[0].ready_at) == ("http-ready", "127.0.0.10:15000")
    assert sidecars[0].addresses == {
        "inbound": "127.0.0.10:15006",
        "admin": "127.0.0.10:15000",
        "prometheus": "127.0.0.10:15090",
        "merged": "127.0.0.10:15020",
    }
    assert sidecars[2].addresses["outbound"] == "127.0.0.12:15001"
    assert clients[0].argv == (
        "py",
        "-m",
        "payment_service.client",
        "--target",
        "127.0.0.12:15001",
        "--authority",
        "payment:8080",
        "--rps",
        "75",
        "--duration",
        "0",
        "--concurrency",
        "2",
        "--json",
        "--interval",
        "1",
        "--metrics-address",
        "127.0.0.12:9464",
    )
    assert clients[0].addresses == {"target": "127.0.0.12:15001", "metrics": "127.0.0.12:9464"}
    assert "--app-metrics-url" in sidecars[2].argv  # the client's sidecar merges the client's metrics
    assert clients[0].ready == "first-report" and clients[0].reports
    assert {s.role for s in apps + clients} == {"app"} and {s.role for s in sidecars} == {"sidecar"}


def test_a_server_with_an_error_rate_gets_it() -> None:
    doc = topology_to_dict(default_topology())
    doc["workloads"][1]["errorRate"] = 0.3
    t = topology_from_dict(doc)
    p = plan(t, probe=lambda _: True)
    apps, _, _ = build_specs(t, p, {w.name: Path(f"/b/{w.name}.yaml") for w in t.workloads}, python="py")
    assert apps[0].argv[-4:-2] == ("--name", "payment-v1")
    assert apps[1].argv[-6:-2] == ("--name", "payment-v2", "--error-rate", "0.3")
