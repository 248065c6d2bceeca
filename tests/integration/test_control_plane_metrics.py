"""The control plane's own metrics (istiod's names) from a real mesh: `mesh_ctl up` runs the control plane and
real sidecars, which connect over ADS and get their certificates from its CA; the test scrapes ``GET /metrics``
on the management API with the owner's credential, and a real Prometheus scrapes it with the credential file.

    mesh_ctl up --> serve (ADS + CA + API) <-- 3 sidecars (ADS, CSR)
    test --GET /metrics (Bearer <run dir>/api-token)--> serve        parsed by prometheus_client's parser
    test --hand-written ADS stream, a NACK--> serve                  (a real client rejecting a real response)
    prometheus --scrape, authorization.credentials_file--> serve
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from prometheus_client.metrics_core import Metric

from mesh_ctl.runtime.state import read_json
from mesh_ctl.translate.names import LISTENER_TYPE
from tests.integration.test_control_plane import BAD_VS
from tests.integration.test_mesh_up import Meshes, cli, free_base_address, meshes, output, up_args, wait_for
from tests.support.metrics import families, value
from tests.support.procs import free_port
from tests.support.prometheus import prometheus_binary

__all__ = ["meshes"]  # the fixture, re-used
pytestmark = pytest.mark.timeout(180)


class Mesh:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        discovery = read_json(run_dir / "control-plane.json")
        assert isinstance(discovery, dict)
        self.api = str(discovery["api_address"])
        self.xds = str(discovery["xds_address"])
        self.token = Path(discovery["token_file"]).read_text().strip()
        self.token_file = Path(discovery["token_file"])

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes, str]:
        request = urllib.request.Request(f"http://{self.api}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("content-type", "")

    def metrics(self) -> dict[str, Metric]:
        status, body, _ = self.get("/metrics", self.token)
        assert status == 200, body
        return families(body)

    def value(self, name: str, suffix: str = "", **labels: str) -> float:
        return value(self.metrics(), name, suffix, **labels) or 0.0

    def connected(self) -> int:
        status, body, _ = self.get("/v1/proxy-status", self.token)
        assert status == 200
        return len(json.loads(body)["proxies"])


def start(tmp_path: Path, meshes: Meshes) -> tuple[Mesh, int]:
    """A mesh from `mesh_ctl up`; its number of sidecars, once every one of them is connected."""
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    r = cli(*up_args(run_dir, free_base_address(), "--ready-timeout", 30))
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)
    sidecars = len([p for p in state["processes"] if p["role"] == "sidecar"])
    assert sidecars == 3, state["processes"]
    mesh = Mesh(run_dir)
    wait_for(lambda: mesh.connected() == sidecars, 30, f"{sidecars} sidecars connected over ADS")
    return mesh, sidecars


def nack_once(xds: str) -> str:
    """A proxyless client's ADS stream: ask for its listener, reject the response (a NACK with Envoy's
    error_detail), then hang up. Its proxy-status name."""
    node = base_pb2.Node(id="metrics-it-client")
    node.metadata.CopyFrom(struct_pb2.Struct())
    node.metadata.update({"GENERATOR": "grpc", "NAMESPACE": "default"})

    async def stream() -> None:
        async with grpc.aio.insecure_channel(xds) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            names = ["payment.default.svc.cluster.local:8080"]
            await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=LISTENER_TYPE, resource_names=names))
            response = await asyncio.wait_for(call.read(), 10)
            nack = discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, resource_names=names,
                                                  response_nonce=response.nonce)
            nack.error_detail.code = 3
            nack.error_detail.message = "listener rejected by the test"
            await call.write(nack)
            await call.done_writing()
            assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF  # type: ignore[attr-defined]

    asyncio.run(asyncio.wait_for(stream(), 30))
    return str(node.id)


def test_metrics_count_pushes_proxies_csrs_nacks_and_rejected_configs(tmp_path: Path, meshes: Meshes) -> None:
    mesh, sidecars = start(tmp_path, meshes)

    # The owner's credential, like every other route of the management API.
    status, body, _ = mesh.get("/metrics")
    assert status == 401 and b"credential" in body
    assert mesh.get("/metrics", "not-the-token")[0] == 401
    status, body, content_type = mesh.get("/metrics", mesh.token)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert b"\npilot_xds_pushes{" in body and b"pilot_xds_pushes_total" not in body  # istiod's bare counter

    # Every sidecar connected, got its clusters and listeners (and the client its endpoints and routes, every
    # one that asked its SDS ROOTCA) pushed, and was issued one certificate.
    f = families(body)
    assert value(f, "pilot_xds") == sidecars == mesh.connected()
    for t in ("cds", "eds", "lds", "rds", "sds"):
        pushes = value(f, "pilot_xds_pushes", type=t) or 0
        assert pushes >= (sidecars if t in ("cds", "lds") else 1), (t, pushes)
        assert value(f, "pilot_xds_push_time", "_count", type=t) == pushes, t
    assert value(f, "citadel_server_success_cert_issuance_count") == sidecars
    assert value(f, "citadel_server_csr_count") == sidecars
    assert value(f, "citadel_server_authentication_failure_count") == 0
    assert (value(f, "citadel_server_root_cert_expiry_seconds") or 0) > 9 * 365 * 86400
    assert (value(f, "istiod_uptime_seconds") or 0) > 0
    assert value(f, "istio_build", component="pilot") == 1

    # A config change: a config event, a debounced push, and the sidecar that routes to payment converging on it.
    converged = mesh.value("pilot_proxy_convergence_time", "_count")
    converged_s = mesh.value("pilot_proxy_convergence_time", "_sum")
    rds = mesh.value("pilot_xds_pushes", type="rds")
    r = cli("set-weight", "payment", "v1=90", "v2=10", "--run-dir", mesh.run_dir)
    assert r.returncode == 0, output(r)
    wait_for(lambda: mesh.value("pilot_proxy_convergence_time", "_count") >= converged + 1, 20,
             "the client's sidecar converged on the new weights")
    # from the store change, through the 100 ms debounce, to the push: never less than the debounce
    assert mesh.value("pilot_proxy_convergence_time", "_sum") - converged_s >= 0.09
    assert mesh.value("pilot_xds_pushes", type="rds") > rds
    assert mesh.value("pilot_k8s_cfg_events", type="VirtualService") >= 1
    assert mesh.value("pilot_debounce_time", "_count") >= 1
    assert mesh.value("pilot_push_triggers", type="config") >= 1
    assert mesh.value("pilot_virt_services") == 1

    # An invalid apply: refused, and counted as istiod's webhook counts it.
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_VS)
    r = cli("apply", "-f", bad, "--run-dir", mesh.run_dir)
    assert r.returncode != 0 and "weigth" in r.stdout + r.stderr, output(r)
    assert mesh.value("galley_validation_failed", group="networking.istio.io", version="v1",
                      resource="virtualservices", reason="invalid_resource") == 1

    # A NACK from a real ADS client.
    assert mesh.value("pilot_total_xds_rejects") == 0
    name = nack_once(mesh.xds)
    wait_for(lambda: mesh.value("pilot_total_xds_rejects", type="lds") == 1, 10, "the NACK counted")
    assert mesh.value("pilot_xds_lds_reject", node=name, err="InvalidArgument") == 1
    wait_for(lambda: mesh.value("pilot_xds") == sidecars, 10, "the NACKing client's stream closed")


def test_a_real_prometheus_scrapes_the_control_plane_with_the_credential_file(tmp_path: Path,
                                                                              meshes: Meshes) -> None:
    binary = prometheus_binary()
    mesh, sidecars = start(tmp_path, meshes)
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    config = prom_dir / "prometheus.yml"
    job = {"job_name": "istiod", "scrape_interval": "1s", "metrics_path": "/metrics",
           "authorization": {"type": "Bearer", "credentials_file": str(mesh.token_file)},
           "static_configs": [{"targets": [mesh.api]}]}
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}))
    listen = f"127.0.0.1:{free_port()}"
    with (prom_dir / "prometheus.log").open("w") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={prom_dir / 'data'}",
                                 f"--web.listen-address={listen}"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://{listen}{path}", timeout=5) as r:
                return json.loads(r.read())

        def target_up() -> bool:
            try:
                active = get("/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(active) == 1 and active[0]["health"] == "up"

        wait_for(target_up, 60, "the control plane's target up in Prometheus")

        def query(q: str) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = get(f"/api/v1/query?query={urllib.parse.quote(q)}")["data"]["result"]
            return result

        wait_for(lambda: query("sum(pilot_xds)") != [], 30, "pilot_xds in Prometheus")
        [connected] = query("sum(pilot_xds)")
        assert float(connected["value"][1]) == sidecars
        types = {r["metric"]["type"] for r in query('pilot_xds_pushes{job="istiod"} > 0')}
        assert {"cds", "eds", "lds", "rds", "sds"} <= types
        [issued] = query("citadel_server_success_cert_issuance_count")
        assert float(issued["value"][1]) == sidecars
        meta = get("/api/v1/metadata?metric=pilot_xds_pushes")["data"]["pilot_xds_pushes"]
        assert meta[0]["type"] == "counter"  # typed as istiod types it, under its bare name
    finally:
        proc.terminate()
        proc.wait(timeout=30)
