"""`mesh_ctl serve` as a real process, driven by the real CLI, serving a real proxyless grpcio client.

    mesh_ctl apply/get/delete/set-weight/analyze --run-dir RUN --> serve (HTTP/JSON API)
    payment-client (grpcio, xds:///payment..., GRPC_XDS_BOOTSTRAP) --ADS--> serve
    payment-client --h2c--> payment-server v1 | v2   (the registry's addresses: no sidecar in between)

The workloads get a random 127.x.y.z block of their own (per-workload addresses, like `mesh_ctl up`), so the
payment servers listen where the control plane's registry says they are.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.addressing import can_bind
from mesh_ctl.translate import grpc_xds_bootstrap
from tests.support.mesh import Mesh
from tests.support.procs import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, wait_for_port

pytestmark = pytest.mark.timeout(180)

NODE_ID = "grpc-it-client"
TARGET = "xds:///payment.default.svc.cluster.local:8080"
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - route:
    - {destination: {host: payment, subset: v1}, weight: 100}
    - {destination: {host: payment, subset: v2}, weight: 0}
"""
BAD_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - route:
    - {destination: {host: payment, subset: v1}, weight: 100}
    - {destination: {host: payment, subset: v3}, weigth: 0}
"""
# One call every 50 ms, one JSON line per call: which version answered, or the error.
CLIENT = textwrap.dedent("""\
    import json, sys, time
    import grpc
    from payment_service import api
    from payment_service.proto import payment_pb2 as pb
    stub = api.Stub(grpc.insecure_channel(sys.argv[1]))
    deadline = time.monotonic() + float(sys.argv[2])
    first = True
    while time.monotonic() < deadline:
        t = time.time()
        try:
            reply = stub.Charge(pb.ChargeRequest(customer_id="c", amount=100, currency="EUR"), timeout=5,
                                wait_for_ready=first)
            line = {"t": t, "v": reply.version}
            first = False
        except grpc.RpcError as e:
            line = {"t": t, "err": e.code().name, "msg": e.details()}
        print(json.dumps(line), flush=True)
        time.sleep(0.05)
""")


def free_block() -> str:
    """A 127.a.b.10 base address whose .10 and .11 (payment v1, v2) can bind port 8080."""
    for _ in range(50):
        base = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
        if can_bind(f"{base}.10", 8080) and can_bind(f"{base}.11", 8080):
            return f"{base}.10"
    raise RuntimeError("no free loopback block")


@dataclass
class ControlPlane:
    procs: ProcessGroup
    run_dir: Path
    xds: str
    api: str
    base: str
    proc: ManagedProcess | None = None
    starts: int = 0
    extra: tuple[str, ...] = ()

    def start(self) -> ManagedProcess:
        self.starts += 1
        self.proc = self.procs.python(
            f"serve-{self.starts}", "mesh_ctl", "serve", "--run-dir", str(self.run_dir), "--xds-address", self.xds,
            "--api-address", self.api, "--base-address", self.base, "--address-mode", "per-workload", *self.extra)
        host, port = self.xds.rsplit(":", 1)
        wait_for_port(host, int(port), proc=self.proc.popen)
        host, port = self.api.rsplit(":", 1)
        wait_for_port(host, int(port), proc=self.proc.popen)
        return self.proc

    def cli(self, *args: str, stdin: str | None = None, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        """Run `mesh_ctl ARGS` (found through the run dir's control-plane.json)."""
        done = subprocess.run([sys.executable, "-m", "mesh_ctl", *args, "--run-dir", str(self.run_dir)],
                              input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
        if check is not None:
            assert done.returncode == check, f"mesh_ctl {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)


@pytest.fixture
def control_plane(procs: ProcessGroup, tmp_path: Path) -> ControlPlane:
    cp = ControlPlane(procs, tmp_path / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
    cp.start()
    return cp


def start_payment_servers(cp: ControlPlane) -> None:
    base = cp.base.rsplit(".", 1)[0]
    for version, last in (("v1", 10), ("v2", 11)):
        proc = cp.procs.python(f"payment-{version}", "payment_service.server", "--version", version,
                               "--listen", f"{base}.{last}:8080", "--name", f"payment-{version}")
        wait_for_port(f"{base}.{last}", 8080, proc=proc.popen)


def calls(client: ManagedProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.output().splitlines() if line.startswith("{")]


def wait_until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what}")
        time.sleep(0.1)


def switched_after(lines: list[dict[str, Any]], since: float, version: str) -> float | None:
    """Seconds after ``since`` from which every call was answered by ``version`` (None: not yet, or not
    for at least 10 calls)."""
    after = [c for c in lines if c["t"] >= since]
    for i, c in enumerate(after):
        rest = after[i:]
        if len(rest) >= 10 and all(r.get("v") == version for r in rest):
            return float(c["t"]) - since
    return None


def proxy_types(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    for p in cp.json("proxy-status")["proxies"]:
        if p["node_id"] == NODE_ID:
            return {t["type"]: t for t in p["types"]}
    return {}


def all_synced(cp: ControlPlane) -> bool:
    """The proxyless client ACKed every type, and what it runs was translated from the store's latest
    revision (no applied change is still waiting for the debounce)."""
    status = cp.json("proxy-status")
    for p in status["proxies"]:
        if p["node_id"] == NODE_ID:
            types = {t["type"]: t for t in p["types"]}
            return (p["revision"] == str(status["store_revision"])
                    and all(types.get(t, {}).get("status") == "SYNCED" for t in ("LDS", "RDS", "CDS", "EDS")))
    return False


def answered(client: ManagedProcess, since: float = 0.0) -> int:
    return len([c for c in calls(client) if "v" in c and c["t"] >= since])


def test_cli_against_a_running_control_plane(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "dr.yaml").write_text(DR)
    (tmp_path / "cfg" / "vs.yaml").write_text(VS)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_VS)

    applied = cp.cli("apply", "-f", str(tmp_path / "cfg")).stdout
    assert applied.splitlines() == ["destinationrule.networking.istio.io/payment created",
                                "virtualservice.networking.istio.io/payment created"]
    assert cp.cli("apply", "-f", "-", stdin=VS).stdout == "virtualservice.networking.istio.io/payment unchanged\n"

    # Invalid: every problem with its file and field path, exit 1, nothing changed.
    done = cp.cli("apply", "-f", str(bad), check=1)
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{bad}: VirtualService default/payment: spec.http[0].route[1].weigth: unknown field",
        "1 error in 1 document (1 file); nothing was applied"]
    analyzed = cp.cli("analyze", "-f", str(bad), check=1)
    assert analyzed.stdout.splitlines() == done.stderr.splitlines()[:1]
    assert "No validation issues" in cp.cli("analyze", "-f", str(tmp_path / "cfg" / "vs.yaml")).stdout
    stored = yaml.safe_load(cp.cli("get", "vs", "payment", "-o", "yaml").stdout)
    assert stored["spec"]["http"][0]["route"][1]["weight"] == 0
    assert stored["metadata"]["resourceVersion"] == "1"

    # get -o yaml round trip: applying what get printed changes nothing.
    (tmp_path / "got.yaml").write_text(cp.cli("get", "vs", "-o", "yaml").stdout)
    assert "unchanged" in cp.cli("apply", "-f", str(tmp_path / "got.yaml")).stdout
    table = cp.cli("get", "virtualservices").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "HOSTS"] and table[1].split()[0] == "payment"

    out = cp.cli("set-weight", "payment", "v1=90", "v2=10").stdout.splitlines()
    assert out[0] == "VirtualService default/payment (host payment.default.svc.cluster.local)"
    assert [line.split() for line in out[1:4]] == [["SUBSET", "BEFORE", "AFTER"], ["v1", "100%", "90%"],
                                                   ["v2", "0%", "10%"]]
    assert out[-1] == "virtualservice.networking.istio.io/payment configured (revision 2)"
    refused = cp.cli("set-weight", "payment", "v1=50", "v3=50", check=1)
    assert "weights[v3]: subset v3 not found" in refused.stderr

    # Issue 8.2: impossible or ambiguous weights are refused in plain words, nothing is stored.
    over = cp.cli("set-weight", "payment", "v1=150", check=2)
    assert "v1=150: a weight is a percentage from 0 to 100" in over.stderr, over.stderr
    partial = cp.cli("set-weight", "payment", "v1=60", "v2=30", check=1)
    assert partial.stdout == "" and partial.stderr.splitlines() == [
        "set-weight: VirtualService default/payment: weights: the weights add up to 90 (60 + 30), not 100. Istio "
        "would accept them and give each subset its weight divided by the total (v1 66.7 %, v2 33.3 %); set-weight "
        "refuses them so that a typo cannot move traffic. Give weights that add up to 100, or pass --relative to "
        "mean the shares above"]
    nosuch = cp.cli("set-weight", "nosuchsvc", "v1=100", check=1)
    assert nosuch.stderr.splitlines() == [
        "error: there is no service 'nosuchsvc' in namespace default (host nosuchsvc.default.svc.cluster.local); "
        "known services: payment (namespace default)"]
    assert yaml.safe_load(cp.cli("get", "vs", "payment", "-o", "yaml").stdout)["metadata"]["resourceVersion"] == "2"
    # Which subsets keep or lose traffic, in words.
    alone = cp.cli("set-weight", "payment", "v1=100", "--dry-run").stdout
    assert "  v1: now gets all the traffic\n" in alone and \
        "  v2: not named, so it leaves the route and gets no traffic (was 10%)\n" in alone, alone
    relative = cp.cli("set-weight", "payment", "v1=60", "v2=30", "--relative", "--dry-run").stdout
    assert [line.split() for line in relative.splitlines()[2:4]] == [["v1", "90%", "66.67%"], ["v2", "10%", "33.33%"]]

    # A DestinationRule whose subset the VirtualService still uses (and the topology does not provide) cannot
    # go; the VirtualService can.
    canary_dr = DR.replace("  - {name: v2, labels: {version: v2}}\n",
                           "  - {name: v2, labels: {version: v2}}\n  - {name: canary, labels: {version: v2}}\n")
    assert canary_dr != DR
    cp.cli("apply", "-f", "-", stdin=canary_dr)
    cp.cli("apply", "-f", "-", stdin=VS.replace("subset: v2}", "subset: canary}"))
    assert "still used by VirtualService default/payment" in cp.cli("delete", "dr", "payment", check=1).stderr
    assert cp.cli("delete", "vs", "payment").stdout == "virtualservice.networking.istio.io/payment deleted\n"
    gone = cp.cli("get", "vs", "payment", check=1)
    assert 'virtualservices.networking.istio.io "payment" not found' in gone.stderr
    assert cp.cli("delete", "vs", "payment", "--ignore-not-found").returncode == 0
    info = json.loads(cp.cli("get", "dr", "-A", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in info["items"]] == ["payment"]
    # With only the topology's subsets in use, the DestinationRule may go (they act as an implicit one).
    assert cp.cli("delete", "dr", "payment").returncode == 0

    # SIGTERM: a clean exit, and the CLI can no longer find it through the run dir.
    assert cp.proc is not None and cp.proc.stop() == 0
    assert "control plane stopped" in cp.proc.output()
    assert not (cp.run_dir / "control-plane.json").exists()


def test_proxyless_client_follows_weights_and_survives_a_restart(control_plane: ControlPlane,
                                                                  tmp_path: Path) -> None:
    cp = control_plane
    start_payment_servers(cp)
    (tmp_path / "cfg.yaml").write_text(DR + "---\n" + VS)
    cp.cli("apply", "-f", str(tmp_path / "cfg.yaml"))
    bootstrap = tmp_path / "grpc-bootstrap.json"
    bootstrap.write_text(json.dumps(grpc_xds_bootstrap(cp.xds, NODE_ID, "default")))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = cp.procs.start("proxyless-client", [sys.executable, str(script), TARGET, "120"],
                            env={"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(REPO_ROOT)})

    # 100/0: only v1 answers, from the first call: a proxy that connects after `apply` returned gets the
    # applied configuration, even while the change still waits for the debounced push (issue 8).
    wait_until("the client is SYNCED at the applied revision", lambda: all_synced(cp))
    wait_until("20 calls answered", lambda: answered(client) >= 20)
    assert {c.get("v") for c in calls(client)} == {"v1"}, calls(client)[:5]

    # 0/100: every call moves to v2 within a few seconds.
    changed = time.time()
    out = cp.cli("set-weight", "payment", "v1=0", "v2=100").stdout.splitlines()
    assert [line.split() for line in out[2:4]] == [["v1", "100%", "0%"], ["v2", "0%", "100%"]]
    wait_until("all calls on v2", lambda: switched_after(calls(client), changed, "v2") is not None)
    delay = switched_after(calls(client), changed, "v2")
    assert delay is not None and delay < 5.0, delay
    wait_until("the RDS push is ACKed", lambda: all_synced(cp))
    before = {t: v["sent_version"] for t, v in proxy_types(cp).items()}
    routes = cp.cli("proxy-config", "routes", NODE_ID, "--from", "control-plane").stdout
    [route] = [line.split() for line in routes.splitlines()[1:]]
    assert route[-3:] == ["/*", "v2:100", "payment.default"]  # MATCH, DESTINATION, VIRTUAL SERVICE

    # Kill the control plane under load: the client keeps its config, no call fails.
    assert cp.proc is not None
    cp.proc.kill(signal.SIGKILL)
    cp.proc.popen.wait(timeout=10)
    killed = time.time()
    # The client goes on with its last configuration while no control plane runs (30 calls: ~1.5 s).
    wait_until("30 calls answered without a control plane", lambda: answered(client, killed) >= 30)
    cp.start()
    wait_until("the client reconnected and is SYNCED", lambda: all_synced(cp), timeout=30)
    after = {t: v["sent_version"] for t, v in proxy_types(cp).items()}
    assert after == before  # same config, same versions
    stored = yaml.safe_load(cp.cli("get", "vs", "payment", "-o", "yaml").stdout)
    assert [d["weight"] for d in stored["spec"]["http"][0]["route"]] == [0, 100]
    restarted = time.time()

    # The restarted control plane pushes again: back to v1.
    cp.cli("set-weight", "payment", "v1=100", "v2=0")
    wait_until("all calls back on v1", lambda: switched_after(calls(client), restarted, "v1") is not None)
    lines = calls(client)
    failures = [c for c in lines if "err" in c]
    assert not failures, failures[:5]
    during = [c for c in lines if killed <= c["t"] <= restarted]
    assert len(during) >= 30 and {c.get("v") for c in during} == {"v2"}


def test_proxy_config_reads_a_live_sidecar(mesh: Mesh) -> None:
    client_sidecar, server_sidecar = mesh.sidecars

    def pc(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mesh_ctl", "proxy-config", *args], capture_output=True,
                              text=True, timeout=30, cwd=REPO_ROOT, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    admin = f"127.0.0.1:{client_sidecar.admin_port}"
    listeners = pc("listeners", "payment-client", "--admin", admin).splitlines()
    assert listeners[0].split() == ["NAME", "ADDRESS", "PORT", "DESTINATION"]
    assert any(line.startswith("virtualOutbound") and "Inline Route: 50051" in line for line in listeners)
    routes = pc("routes", "payment-client", "--admin", admin)
    assert "outbound|50051||payment.default.svc.cluster.local" in routes
    clusters = pc("clusters", "payment-client", "--admin", admin)
    assert any(line.split()[:4] == ["payment.default.svc.cluster.local", "50051", "-", "OUTBOUND"]
               for line in clusters.splitlines())
    endpoints = pc("endpoints", "payment-client", "--admin", admin).splitlines()
    assert endpoints[0].split()[:2] == ["ENDPOINT", "STATUS"]
    [payment] = [line.split() for line in endpoints if line.endswith("||payment.default.svc.cluster.local")]
    assert payment[0] == f"127.0.0.1:{server_sidecar.listen_port}" and payment[2] == "OK"  # outlier check
    raw = json.loads(pc("clusters", "payment-client", "--admin", admin, "-o", "json"))
    assert any(c["name"] == "outbound|50051||payment.default.svc.cluster.local" for c in raw)


def ads_bootstrap(node_id: str, address: str, xds: str) -> dict[str, Any]:
    """An Istio-shaped sidecar bootstrap: admin on the workload's address, everything else over ADS."""
    xds_host, xds_port = xds.rsplit(":", 1)
    return {
        "node": {"id": node_id, "cluster": node_id.split("~")[2]},
        "admin": {"address": {"socket_address": {"address": address, "port_value": 15000}}},
        "dynamic_resources": {
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": xds_host, "port_value": int(xds_port)}}}}]}]},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
        }]},
    }


def admin_ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:15000/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_sidecars_keep_serving_while_the_control_plane_restarts(procs: ProcessGroup, tmp_path: Path) -> None:
    cp = ControlPlane(procs, tmp_path / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
    cp.start()
    start_payment_servers(cp)
    base = cp.base.rsplit(".", 1)[0]
    for last, name, sa in ((10, "payment-v1", "payment"), (11, "payment-v2", "payment"), (12, "client", "client")):
        address = f"{base}.{last}"
        path = tmp_path / f"{name}-bootstrap.yaml"
        path.write_text(yaml.safe_dump(ads_bootstrap(f"sidecar~{address}~{name}.default~default.svc.cluster.local",
                                                     address, cp.xds)))
        # Its identity: a bootstrap token from the control plane's CA; the agent in the sidecar makes the key.
        token = tmp_path / f"{name}.jwt"
        token.write_text(cp.cli("ca", "mint-token", "-n", "default", "-s", sa).stdout.strip())
        procs.python(f"{name}-sidecar", "pyproxy", "-c", str(path), "-l", "info", "--ca-address", cp.xds,
                     "--token-path", str(token), "--namespace", "default", "--service-account", sa)
        wait_until(f"{name}'s sidecar ready", lambda address=address: admin_ready(address))  # type: ignore[misc]
    (tmp_path / "dr.yaml").write_text(DR)
    cp.cli("apply", "-f", str(tmp_path / "dr.yaml"))
    cp.cli("set-weight", "payment", "v1=100", "v2=0")
    load = procs.python("load", "payment_service.client", "--target", f"{base}.12:15001", "--authority",
                        "payment:8080", "--rps", "50", "--duration", "90", "--json", "--interval", "0.5")

    def reports() -> list[dict[str, Any]]:
        return [json.loads(line) for line in load.output().splitlines() if line.startswith("{")]

    wait_until("load running on v1", lambda: any(r.get("by_version") == {"v1": r["requests"]} and r["requests"]
                                                 for r in reports()))
    assert cp.proc is not None
    cp.proc.kill(signal.SIGKILL)
    cp.proc.popen.wait(timeout=10)
    # The sidecars serve on while no control plane runs: two more reports (~1 s of calls) before the restart.
    down = len(reports())
    wait_until("calls go on without a control plane", lambda: len(reports()) >= down + 2)
    cp.start()
    wait_until("every sidecar reconnected", lambda: len(cp.json("proxy-status")["proxies"]) == 3, timeout=30)
    cp.cli("set-weight", "payment", "v1=0", "v2=100")
    pushed = len(reports())
    # The push after the restart arrives: two consecutive half-second reports answered by v2 alone.
    def on_v2() -> bool:
        recent = [r for r in reports()[pushed:] if r.get("type") == "interval" and r["requests"]]
        return len(recent) >= 3 and all(r["by_version"] == {"v2": r["requests"]} for r in recent[-2:])

    wait_until("calls moved to v2", on_v2, timeout=30)
    load.stop()  # SIGTERM: the load client prints its final report
    final = reports()[-1]
    assert final["type"] == "final" and final["by_status"] == {"OK": final["requests"]}, final
