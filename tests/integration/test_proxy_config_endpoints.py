"""`mesh_ctl proxy-config endpoints` on live proxies: outlier ejections (why, until when, and back), circuit
breakers open under load, and a real mesh started with `mesh_ctl up --seed`.

Standalone (a pyproxy from a static bootstrap, read with ``--admin``):

    grpcio client --h2c--> pyproxy --h2c--> payment-server good | bad (--error-rate 1: every call UNAVAILABLE,
                                             trailers-only, which outlier detection counts as a 503)
                                        \\-> payment-server slow (--latency: every call takes seconds)

Mesh: `mesh_ctl up --detach --seed 42`: every sidecar runs with the seed derived for it, `proxy-config
endpoints client` lists the payment endpoints, a DestinationRule's http2MaxRequests shows as the breaker's
limit, and an unknown workload is an error naming the known ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh_ctl.runtime.specs import sidecar_seed
from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.live_mesh import running_mesh, wait_until
from tests.support.procs import REPO_ROOT, ProcessGroup, free_port
from tests.support.sidecar import Proxy, cluster, start_payment, start_proxy, vhost, wait_ports

pytestmark = pytest.mark.timeout(240)

# Long enough for every check while the endpoint is out, on a loaded machine (a `mesh_ctl` run takes seconds).
BASE_EJECTION_S = 10.0
SLOW_MS = 60_000  # the slow server's calls: never answered, the test cancels them once it has looked


def pc(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "mesh_ctl", "proxy-config", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert done.returncode == check, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return done


def _host(proxy: Proxy, cluster_name: str, port: int) -> dict[str, Any]:
    return proxy.hosts(cluster_name)[port]


def _server(procs: ProcessGroup, name: str, *flags: str) -> int:
    port = start_payment(procs, name, *flags)
    wait_ports(port)
    return port


def _charge(channel: grpc.Channel) -> None:
    api.Stub(channel).Charge(pb.ChargeRequest(customer_id="c", amount=1, currency="EUR"), timeout=10)


def _row(table: str, endpoint: str) -> str:
    [row] = [line for line in table.splitlines() if line.startswith(endpoint + " ")]
    return row


def _epoch(rfc3339: str) -> float:
    return datetime.strptime(rfc3339.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def test_an_ejected_endpoint_shows_why_and_until_when_then_comes_back(procs: ProcessGroup, tmp_path: Path) -> None:
    good = _server(procs, "good")
    bad = _server(procs, "bad", "--error-rate", "1.0")
    detection = {"consecutive_5xx": 2, "interval": "0.5s", "base_ejection_time": f"{BASE_EJECTION_S}s",
                 "max_ejection_percent": 100}
    proxy = start_proxy(procs, tmp_path, free_port(), free_port(), [vhost("outlier", "outlier")],
                        [cluster("outlier", [good, bad], outlier_detection=detection)])
    bad_endpoint = f"127.0.0.1:{bad}"
    admin = ("--admin", proxy.admin_address)

    before = pc("endpoints", "proxy", *admin).stdout
    assert before.splitlines()[0].split() == ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "RQ", "ACTIVE", "EJECTED",
                                              "UNTIL", "EJECTION", "REASON", "CIRCUIT", "BREAKERS", "CLUSTER"]
    assert _row(before, bad_endpoint).split()[:4] == [bad_endpoint, "HEALTHY", "OK", "0"]

    # Round robin: every other call reaches the bad server; its second consecutive 503 ejects it.
    with proxy.channel("outlier") as channel:
        for _ in range(20):
            try:
                _charge(channel)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            if _host(proxy, "outlier", bad)["health_status"].get("failed_outlier_check"):
                break
    ejected_at = time.time()

    host = _host(proxy, "outlier", bad)
    assert host["health_status"] == {"failed_outlier_check": True, "eds_health_status": "HEALTHY"}
    outlier = host["outlier_detection"]
    assert outlier["ejected"] and outlier["ejection_reason"] == "consecutive_5xx" and outlier["times_ejected"] == 1
    until = _epoch(outlier["ejected_until"])
    assert ejected_at - 1.0 < until < ejected_at + BASE_EJECTION_S + 0.5, (ejected_at, outlier)

    text = proxy.admin_get("/clusters")
    assert f"outlier::{bad_endpoint}::health_flags::/failed_outlier_check" in text
    assert f"outlier::{bad_endpoint}::outlier_ejection_reason::consecutive_5xx" in text
    stats = proxy.stats()
    assert stats["cluster.outlier.outlier_detection.ejections_active"] == 1
    assert stats["cluster.outlier.outlier_detection.ejections_enforced_consecutive_5xx"] == 1
    assert stats["cluster.outlier.outlier_detection.ejections_enforced_total"] == 1

    table = pc("endpoints", "proxy", *admin).stdout
    row = _row(table, bad_endpoint)
    assert row.split()[:4] == [bad_endpoint, "HEALTHY", "FAILED", "0"]
    assert "consecutive_5xx (ejection 1)" in row and ("(in " in row or "(due)" in row), row
    assert _row(table, f"127.0.0.1:{good}").split()[2] == "OK"
    short = pc("endpoints", "proxy", *admin, "-o", "short", "--port", str(bad)).stdout.splitlines()
    assert [line.split() for line in short] == [["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"],
                                                [bad_endpoint, "HEALTHY", "FAILED", "outlier"]]
    [listed] = json.loads(pc("endpoints", "proxy", *admin, "-o", "json", "--address", "127.0.0.1",
                             "--port", str(bad)).stdout)
    assert listed["name"] == "outlier" and len(listed["host_statuses"]) == 2  # istioctl: the whole cluster
    assert time.time() < until, "the checks above took longer than the ejection: they saw nothing"

    # Back once the ejection time is up (the detector checks every 0.5 s); nothing calls meanwhile.
    def healthy_again() -> bool:
        return pc("endpoints", "proxy", *admin, "-o", "short", "--port", str(bad)).stdout.splitlines()[1].split()[2] \
            == "OK"

    wait_until("the bad endpoint's ejection ends", healthy_again, timeout=BASE_EJECTION_S + 15)
    assert time.time() >= until - 0.2  # not before its time
    row = _row(pc("endpoints", "proxy", *admin).stdout, bad_endpoint)
    assert row.split()[:6] == [bad_endpoint, "HEALTHY", "OK", "0", "-", "-"], row
    host = _host(proxy, "outlier", bad)
    assert "failed_outlier_check" not in host["health_status"]
    # times_ejected goes down by one each interval the host stays healthy (Envoy's ejection multiplier).
    assert host["outlier_detection"]["times_ejected"] in (0, 1) and not host["outlier_detection"]["ejected"]
    assert proxy.stats()["cluster.outlier.outlier_detection.ejections_active"] == 0


def _gauge(proxy: Proxy, name: str) -> int:
    return int(proxy.stats()[f"cluster.slow.circuit_breakers.default.{name}"])


def test_circuit_breaker_shows_open_while_the_requests_limit_is_reached(procs: ProcessGroup, tmp_path: Path) -> None:
    slow = _server(procs, "slow", "--latency", str(SLOW_MS))
    breakers = {"thresholds": [{"max_requests": 2, "track_remaining": True}]}
    proxy = start_proxy(procs, tmp_path, free_port(), free_port(), [vhost("slow", "slow", timeout="300s")],
                        [cluster("slow", [slow], circuit_breakers=breakers)])
    admin = ("--admin", proxy.admin_address)
    endpoint = f"127.0.0.1:{slow}"
    assert "rq 0/2, " in _row(pc("endpoints", "proxy", *admin).stdout, endpoint)
    assert (_gauge(proxy, "rq_open"), _gauge(proxy, "remaining_rq")) == (0, 2)

    with proxy.channel("slow") as channel:
        stub = api.Stub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        calls: list[Any] = [
            stub.Charge.future(pb.ChargeRequest(customer_id="c", amount=1, currency="EUR"), timeout=SLOW_MS / 500)
            for _ in range(4)]
        wait_until("the two calls over the limit refused", lambda: sum(c.done() for c in calls) == 2, timeout=30)
        assert _gauge(proxy, "rq_open") == 1  # the two admitted ones are in flight (they wait a minute)
        row = _row(pc("endpoints", "proxy", *admin).stdout, endpoint)
        assert "rq 2/2 OPEN" in row and row.split()[3] == "2", row  # RQ ACTIVE
        assert _gauge(proxy, "remaining_rq") == 0 and _gauge(proxy, "rq_pending_open") == 0
        with urllib.request.urlopen(f"http://{proxy.admin_address}/stats/prometheus", timeout=5) as r:
            prometheus = r.read().decode()
        assert 'envoy_cluster_circuit_breakers_default_rq_open{envoy_cluster_name="slow"} 1' in prometheus
        assert "# TYPE envoy_cluster_circuit_breakers_default_rq_open gauge" in prometheus
        for call in calls:
            call.cancel()  # the admitted ones: the caller gives up, the proxy resets them upstream
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append("OK")
            except grpc.FutureCancelledError:
                codes.append("CANCELLED")
            except grpc.RpcError as e:
                codes.append(e.code().name)
    assert sorted(codes) == ["CANCELLED", "CANCELLED", "UNAVAILABLE", "UNAVAILABLE"], codes
    assert proxy.stats()["cluster.slow.upstream_rq_pending_overflow"] == 2
    wait_until("the breaker closes again", lambda: (_gauge(proxy, "rq_open"), _gauge(proxy, "remaining_rq")) == (0, 2),
               timeout=30)
    row = _row(pc("endpoints", "proxy", *admin).stdout, endpoint)
    assert "rq 0/2, " in row and "OPEN" not in row, row


DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  trafficPolicy:
    connectionPool:
      http: {http2MaxRequests: 50}
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""


def test_mesh_up_seed_reaches_every_sidecar_and_endpoints_are_listed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_mesh(tmp_path_factory, "seeded", "--seed", "42", "--rps", "2", "--concurrency", "1") as mesh:
        state = mesh.state()
        sidecars = {p.workload: p for p in state.processes if p.role == "sidecar"}
        assert set(sidecars) == {"payment-v1", "payment-v2", "client"}
        for workload, p in sidecars.items():
            seed = sidecar_seed(42, workload)
            assert p.argv[p.argv.index("--seed") + 1] == str(seed)
            with urllib.request.urlopen(f"http://{p.addresses['admin']}/server_info", timeout=5) as r:
                assert json.loads(r.read())["seed"] == seed, workload
        assert len({sidecar_seed(42, w) for w in sidecars}) == 3
        assert any("random decisions seeded: --seed 42" in line for line in state.traffic)

        run_dir = ("--run-dir", str(mesh.run_dir))
        rows = [line.split() for line in pc("endpoints", "client", *run_dir).stdout.splitlines()]
        assert rows[0][:3] == ["ENDPOINT", "STATUS", "OUTLIER"]
        payment = [r for r in rows[1:] if r[-1].endswith("|payment.default.svc.cluster.local")]
        # The service's cluster (both endpoints) and one per subset.
        assert Counter(r[-1] for r in payment) == {"outbound|8080||payment.default.svc.cluster.local": 2,
                                                    "outbound|8080|v1|payment.default.svc.cluster.local": 1,
                                                    "outbound|8080|v2|payment.default.svc.cluster.local": 1}
        for r in payment:
            assert r[1:3] == ["HEALTHY", "OK"] and r[-2] == "unlimited", r  # Istio: no limits by default

        missing = pc("endpoints", "nosuch", *run_dir, check=1)
        assert "no sidecar named 'nosuch'" in missing.stderr
        for known in ("payment-v1", "payment-v2", "client"):
            assert known in missing.stderr

        mesh.apply("dr.yaml", DESTINATION_RULE)
        v1 = "outbound|8080|v1|payment.default.svc.cluster.local"

        def limited() -> bool:
            row = pc("endpoints", "client", *run_dir, "--cluster", v1).stdout.splitlines()[1]
            return " rq " in f" {row}" and "/50" in row

        wait_until("the DestinationRule's limit shows", limited, timeout=20)
        prometheus = mesh.prometheus("client")
        assert f'envoy_cluster_circuit_breakers_default_remaining_rq{{envoy_cluster_name="{v1}"}}' in prometheus
