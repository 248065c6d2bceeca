"""`mesh_ctl up` / `status` / `down` with real processes on loopback.

Two kinds of tests:

- ``test_mesh_up_*``: the real mesh (pyproxy sidecars, payment_service server and client). The client's
  calls must be split 50/50 between v1 and v2 through mTLS sidecars with no errors.
- ``test_lifecycle_*``: the supervisor's own guarantees (detach, status, refusing a second mesh, no
  orphans after SIGKILL, clean-up of a crashed run, clear start-up errors), with small stand-in programs
  in place of pyproxy and payment_service (they shadow them via PYTHONPATH), so they test `mesh_ctl`
  alone: the stand-ins only bind the addresses of their bootstrap / flags, answer ``/ready`` and print
  the client's JSON reports.

Every mesh gets its own 127.x.y.* addresses, so tests never clash with each other or with a mesh a
developer is running; every process is stopped by PID at the end, even when a test fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.addressing import busy_sockets, can_bind, plan
from mesh_ctl.bootstrap import validate_bootstrap
from mesh_ctl.runtime import control
from mesh_ctl.runtime import procs as rprocs
from mesh_ctl.runtime.prometheus import PROMETHEUS_PORT, find_binary
from mesh_ctl.runtime.specs import ControlPlaneAddresses
from mesh_ctl.runtime.state import RunDir, read_state
from mesh_ctl.topology import default_topology
from tests.support.procs import REPO_ROOT, ProcessGroup

pytestmark = pytest.mark.timeout(180)

# ------------------------------------------------------------------------------------------------ helpers


def free_base_address() -> str:
    """A 127.x.y.10 where every socket of the default mesh can be bound right now, and so can the control
    plane's and Prometheus's on 127.x.y.9 (:func:`control_plane_address`)."""
    rng = random.Random()
    for _ in range(50):
        base = f"127.{rng.randint(64, 250)}.{rng.randint(1, 250)}.10"
        placement = plan(default_topology(), base_address=base, mode="per-workload")
        cp = ControlPlaneAddresses.for_offset(control_plane_address(base), 0)
        if not busy_sockets(placement) and all(
            can_bind(h, p) for _, _, h, p in [*cp.sockets(), ("prometheus", "web", cp.host, PROMETHEUS_PORT)]
        ):
            return base
    raise RuntimeError("no free loopback addresses found")


def control_plane_address(base: str) -> str:
    """Where the tests put a mesh's control plane: the address just below its first workload."""
    return base.rsplit(".", 1)[0] + ".9"


def up_args(run_dir: Path, base: str, *extra: object) -> list[object]:
    """`up --detach` on the mesh's own addresses (workloads from ``base``, control plane just below)."""
    return ["up", "--detach", "--run-dir", run_dir, "--base-address", base, "--control-plane-address",
            control_plane_address(base), *extra]


def cli(
    *args: object, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m mesh_ctl ARGS` to completion (killed if it outlives ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "mesh_ctl", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(r: subprocess.CompletedProcess[str], run_dir: Path | None = None) -> str:
    text = f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    if run_dir is not None:
        for log in sorted((run_dir / "logs").glob("*.log")):
            text += f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
    return text


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    if not rprocs.wait_until(predicate, timeout, 0.2):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def process_argvs_containing(text: str) -> list[list[str]]:
    """argv of every live process whose command line contains ``text`` (to find strays)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = rprocs.cmdline(int(entry.name))
            if argv and any(text in a for a in argv) and rprocs.alive(int(entry.name)):
                found.append(argv)
    return found


class Meshes:
    """Remembers every run dir a test used and every PID it saw; stops them all at the end."""

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []
        self.seen: list[tuple[int, list[str], int | None]] = []

    def record(self, run_dir: Path) -> dict[str, Any]:
        state = read_state(RunDir(run_dir))
        assert state is not None, f"no state file in {run_dir}"
        self.seen.append((state.supervisor_pid, state.supervisor_argv, state.supervisor_start_time))
        self.seen += [(p.pid, p.argv, p.start_time) for p in state.processes]
        return state.to_json()

    def close(self) -> None:
        for run_dir in self.run_dirs:
            control.down(RunDir(run_dir), io.StringIO(), timeout=30)
        for pid, argv, started in self.seen:
            rprocs.terminate(pid, argv, started, 2.0)


@pytest.fixture
def meshes() -> Iterator[Meshes]:
    m = Meshes()
    try:
        yield m
    finally:
        m.close()


def assert_gone(state: dict[str, Any]) -> None:
    """Every process of ``state`` is gone and every address it listened on can be bound again."""
    for p in [
        *state["processes"],
        {
            "name": "supervisor",
            "pid": state["supervisor_pid"],
            "argv": state["supervisor_argv"],
            "start_time": state["supervisor_start_time"],
        },
    ]:
        assert not rprocs.is_ours(p["pid"], p["argv"], p["start_time"]), (
            f"{p['name']} (pid {p['pid']}) still runs"
        )
    for p in state["processes"]:
        for role, address in p["addresses"].items():
            if role != "target":
                host, _, port = address.rpartition(":")
                assert can_bind(host, int(port)), f"{address} ({p['name']} {role}) is still in use"


# ------------------------------------------------------------------------------------------------ real mesh


def test_mesh_up_runs_the_sidecars_from_the_control_plane_and_splits_50_50_over_mtls(
    tmp_path: Path, meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    cp = control_plane_address(base)
    r = cli(*up_args(run_dir, base, "--ready-timeout", 30))
    assert r.returncode == 0, output(r, run_dir)
    assert f"control plane: xDS {cp}:15010 (plain gRPC), API http://{cp}:15014, pid " in r.stdout, r.stdout
    state = meshes.record(run_dir)
    assert state["processes"][0]["name"] == "control-plane"

    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    assert st["running"] and st["status"] == "ready"
    assert st["control_plane"]["serving"] and st["control_plane"]["xds_address"] == f"{cp}:15010"
    assert st["control_plane"]["api_address"] == f"{cp}:15014"
    assert [w["name"] for w in st["workloads"]] == ["payment-v1", "payment-v2", "client"]
    for w in st["workloads"]:
        assert w["sidecar"]["alive"], w
        assert w["app"]["alive"], w
    # Nothing but the ADS cluster in the bootstraps: every listener, route and cluster comes over xDS, and
    # every sidecar ACKed what it got.
    for name in ("payment-v1", "payment-v2", "client"):
        b = yaml.safe_load((run_dir / "bootstrap" / f"{name}.yaml").read_text())
        assert [c["name"] for c in b["static_resources"]["clusters"]] == ["xds-grpc"]
        assert "listeners" not in b["static_resources"]
    ps = json.loads(cli("proxy-status", "-o", "json", "--run-dir", run_dir).stdout)["proxies"]
    sent = {p["name"]: {t["type"]: t["status"] for t in p["types"] if t["status"] != "NOT SENT"} for p in ps}
    assert sorted(sent) == ["client.default", "payment-v1.default", "payment-v2.default"], ps
    assert {"CDS", "EDS", "LDS", "RDS"} <= set(sent["client.default"]), ps  # (+ SDS: the CA's trust bundle)
    assert all(set(types.values()) == {"SYNCED"} and {"CDS", "LDS"} <= set(types) for types in sent.values()), ps

    # >= 300 calls: for a fair split each version's share has a standard deviation of at most 2.9
    # points, so 35-65% fails a fair split with probability ~2e-7, while 75/25 or all-to-one never pass.
    def enough() -> bool:
        s = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["summary"]
        return bool(s) and s[0]["requests"] >= 300

    wait_for(enough, 60, "300 calls through the mesh")
    summary = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["summary"][0]
    v1, v2 = summary["by_version"].get("v1", 0), summary["by_version"].get("v2", 0)
    assert v1 + v2 == summary["requests"], summary  # every reply came from a payment version
    assert 0.35 <= v1 / (v1 + v2) <= 0.65, summary
    assert summary["by_status"] == {"OK": summary["requests"]}, summary  # zero errors
    assert summary["errors"] == 0

    # Istio's convention: /stats/prometheus on 15090 of each workload's address; the destination
    # sidecars saw mutual TLS.
    for w in st["workloads"]:
        body = (
            urllib.request.urlopen(
                f"http://{w['address']}:{w['ports']['prometheus']}/stats/prometheus", timeout=5
            )
            .read()
            .decode()
        )
        assert "istio_requests_total" in body, w["name"]
        if w["name"].startswith("payment-"):
            assert 'connection_security_policy="mutual_tls"' in body, w["name"]

    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert "final totals" in r.stdout
    assert_gone(state)
    assert not (run_dir / "state.json").exists()
    # Cleanly: every process left on SIGTERM, none had to be killed; the control plane's store stays.
    assert "warning: killing" not in (run_dir / "logs" / "supervisor.log").read_text(), output(r, run_dir)
    assert "control plane stopped" in (run_dir / "logs" / "control-plane.log").read_text()
    assert not (run_dir / "control-plane.json").exists() and (run_dir / "store").is_dir()


# ------------------------------------------------------------------------------------------------ stand-ins

STANDINS = {
    "pyproxy/__init__.py": "",
    "pyproxy/__main__.py": '''
"""Stand-in sidecar: binds every address of its configuration, answers any GET with 200, stops on SIGTERM.

With an ADS bootstrap it asks the control plane for its listeners (one real xDS v3 LDS request, by node id)
as the real sidecar would, so it only starts listening once the control plane knows it.
"""
import argparse, http.server, os, signal, sys, threading
import yaml

p = argparse.ArgumentParser()
p.add_argument("-c", required=True)
p.add_argument("--stats-address")
p.add_argument("--merged-stats-address")
p.add_argument("--app-metrics-url")
p.add_argument("-l", default="info")
p.add_argument("--ca-address")
p.add_argument("--token-path")
p.add_argument("--cert-ttl")
p.add_argument("--admin-token-file")
p.add_argument("--listen-fd", type=int, action="append", default=[])  # the supervisor's held ports
a = p.parse_args()
import socket
inherited = {}
for fd in a.listen_fd:
    held = socket.socket(fileno=fd)
    inherited[held.getsockname()[:2]] = held
if a.admin_token_file:
    assert len(open(a.admin_token_file).read().strip()) >= 32, "no owner's credential"
if a.token_path:
    assert open(a.token_path).read().count(".") == 2, "not a JWT"
b = yaml.safe_load(open(a.c))
if os.environ.get("STANDIN_FAIL") == b["node"]["metadata"]["NAME"]:
    print("stand-in sidecar: failing on purpose", flush=True)
    sys.exit(3)
for i in range(int(os.environ.get("STANDIN_NOISE", "0"))):  # an access log's worth of lines
    print(f"noise {i:06d} " + "." * 80)


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass


def sa(d):
    return d["socket_address"]["address"], d["socket_address"]["port_value"]


def ads_listeners(b):
    import grpc
    from envoy.config.listener.v3 import listener_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    [xds] = [c for c in b["static_resources"]["clusters"] if c["name"] == "xds-grpc"]
    host, port = sa(xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"])
    request = discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.listener.v3.Listener")
    request.node.id = b["node"]["id"]
    done = threading.Event()

    def requests():
        yield request
        done.wait(10)  # keep the stream open until the answer is in

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            requests(), timeout=10)
        response = next(stream)
        done.set()
        stream.cancel()
    out = []
    for resource in response.resources:
        listener = listener_pb2.Listener()
        resource.Unpack(listener)
        out.append((listener.address.socket_address.address, listener.address.socket_address.port_value))
    return out


if "dynamic_resources" in b:
    listeners = ads_listeners(b)
else:
    listeners = [sa(l["address"]) for l in b["static_resources"]["listeners"]]
addresses = [sa(b["admin"]["address"])] + listeners
for extra in (a.stats_address, a.merged_stats_address):
    if extra:
        host, _, port = extra.rpartition(":")
        addresses.append((host, int(port)))


def server(addr):
    if addr not in inherited:
        return http.server.ThreadingHTTPServer(addr, Ok)
    s = http.server.ThreadingHTTPServer(addr, Ok, bind_and_activate=False)  # serve the held socket, as pyproxy
    s.socket.close()
    s.socket = inherited.pop(addr)
    return s


servers = [server(addr) for addr in addresses]
assert not inherited, f"held sockets no listener uses: {inherited}"
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print("stand-in sidecar listening on", addresses, flush=True)
stop.wait()
for s in servers:
    s.shutdown()
    s.server_close()
''',
    "payment_service/__init__.py": "",
    "payment_service/server.py": '''
"""Stand-in payment server: listens on --listen, stops on SIGTERM."""
import argparse, signal, socket, threading

p = argparse.ArgumentParser()
p.add_argument("--version")
p.add_argument("--listen")
p.add_argument("--name")
p.add_argument("--metrics-address")
a = p.parse_args()
host, _, port = a.listen.rpartition(":")
server = socket.create_server((host, int(port)))
mhost, _, mport = a.metrics_address.rpartition(":")
metrics = socket.create_server((mhost, int(mport)))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print("stand-in payment server", a.version, "on", a.listen, flush=True)
stop.wait()
server.close()
metrics.close()
''',
    "payment_service/client.py": '''
"""Stand-in load client: checks its target accepts connections, then reports rps calls per second,
alternating v1/v2, as JSON lines; a "final" line on SIGTERM."""
import argparse, json, signal, socket, sys, threading, time

p = argparse.ArgumentParser()
for flag in ("--target", "--authority", "--rps", "--duration", "--concurrency", "--interval", "--metrics-address"):
    p.add_argument(flag)
p.add_argument("--json", action="store_true")
a = p.parse_args()
host, _, port = a.target.rpartition(":")
socket.create_connection((host, int(port)), timeout=5).close()
mhost, _, mport = a.metrics_address.rpartition(":")
metrics = socket.create_server((mhost, int(mport)))  # closed at exit
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
total, by_version, start = 0, {"v1": 0, "v2": 0}, time.monotonic()
while not stop.wait(float(a.interval)):
    n = int(float(a.rps) * float(a.interval))
    for i in range(n):
        by_version["v1" if (total + i) % 2 == 0 else "v2"] += 1
    total += n
    cumulative = {"requests": total, "by_version": dict(by_version), "by_status": {"OK": total}}
    print(json.dumps({"type": "interval", "elapsed_s": round(time.monotonic() - start, 3), "requests": n,
                      "rps": n / float(a.interval), "latency_ms": {"p50": 1.0, "p99": 2.0},
                      "cumulative": cumulative}), flush=True)
print(json.dumps({"type": "final", "elapsed_s": round(time.monotonic() - start, 3), "requests": total,
                  "by_version": by_version, "by_status": {"OK": total}, "rps": 0}), flush=True)
''',
}


@pytest.fixture
def standin_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `python -m pyproxy` / `payment_service.*` run the stand-ins."""
    root = tmp_path / "standins"
    for rel, source in STANDINS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source.lstrip())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def test_lifecycle_detach_status_refuse_down(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    prefix = base.rsplit(".", 1)[0]
    r = cli(*up_args(run_dir, base, "--rps", 40), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    assert "WORKLOAD" in r.stdout and f"{prefix}.10" in r.stdout and "==mTLS==>" in r.stdout
    state = meshes.record(run_dir)
    assert state["status"] == "ready"
    assert [p["name"] for p in state["processes"]] == [
        "control-plane",
        "payment-v1",
        "payment-v2",
        "payment-v1-sidecar",
        "payment-v2-sidecar",
        "client-sidecar",
        "client",
        *(["prometheus"] if find_binary() else []),  # started last (every target known), stopped first
    ]
    for p in state["processes"]:
        assert rprocs.is_ours(p["pid"], p["argv"], p["start_time"]), p
    sidecar = next(p for p in state["processes"] if p["name"] == "client-sidecar")
    assert sidecar["argv"][1:7] == [
        "-m",
        "pyproxy",
        "-c",
        str(run_dir / "bootstrap" / "client.yaml"),
        "--stats-address",
        f"{prefix}.12:15090",
    ]
    client = next(p for p in state["processes"] if p["name"] == "client")
    assert client["argv"][client["argv"].index("--rps") + 1] == "40"
    cp = next(p for p in state["processes"] if p["name"] == "control-plane")
    assert cp["role"] == "control-plane" and cp["argv"][1:4] == ["-m", "mesh_ctl", "serve"]
    assert cp["addresses"] == {"xds": f"{prefix}.9:15010", "api": f"{prefix}.9:15014",
                               "metrics": f"{prefix}.9:15014"}  # GET /metrics on the management API
    after_level = sidecar["argv"].index("-l") + 2
    assert sidecar["argv"][after_level:-2] == ["--ca-address", f"{prefix}.9:15010", "--token-path",
                                               str(run_dir / "tokens" / "client.jwt"), "--cert-ttl", "24h",
                                               "--admin-token-file", str(run_dir / "api-token")]
    # Its outbound port, held by the supervisor across restarts (the client has no inbound listener).
    assert sidecar["argv"][-2] == "--listen-fd" and sidecar["argv"][-1].isdigit()
    assert stat.S_IMODE((run_dir / "api-token").stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / "tokens").stat().st_mode) == 0o700
    for name, sa in (("payment-v1", "payment"), ("payment-v2", "payment"), ("client", "client")):
        validate_bootstrap(yaml.safe_load((run_dir / "bootstrap" / f"{name}.yaml").read_text()))
        token = run_dir / "tokens" / f"{name}.jwt"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        claims = json.loads(base64.urlsafe_b64decode(token.read_text().split(".")[1] + "=="))
        assert claims["sub"] == f"system:serviceaccount:default:{sa}", claims
        assert not (run_dir / "certs" / name).exists()  # the sidecar makes its key; the CA signs its CSR

    def reported() -> bool:
        s = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["summary"]
        return bool(s) and s[0]["requests"] >= 80

    wait_for(reported, 30, "the client's reports in `status`")
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    assert st["running"] and st["run_id"] == state["run_id"]
    assert {w["name"]: (w["address"], w["version"], w["ports"]["inbound"]) for w in st["workloads"]} == {
        "payment-v1": (f"{prefix}.10", "v1", 15006),
        "payment-v2": (f"{prefix}.11", "v2", 15006),
        "client": (f"{prefix}.12", None, None),
    }
    assert all(w[role]["alive"] for w in st["workloads"] for role in ("app", "sidecar"))
    assert st["summary"][0]["by_version"]["v1"] > 0 and st["summary"][0]["errors"] == 0
    assert st["control_plane"] == {
        "pid": cp["pid"], "alive": True, "serving": True, "xds_address": f"{prefix}.9:15010",
        "api_address": f"{prefix}.9:15014", "restarts": 0, "log": str(run_dir / "logs" / "control-plane.log")}
    table = cli("status", "--run-dir", run_dir).stdout
    assert state["run_id"] in table and "payment-v2" in table and "requests" in table
    assert (f"control plane: xDS {prefix}.9:15010 (plain gRPC), API http://{prefix}.9:15014, pid {cp['pid']}\n"
            in table), table

    # A second mesh on the same run dir, or on the same addresses, is refused; the first keeps running.
    again = cli(*up_args(run_dir, base), env=standin_env)
    assert again.returncode == 1 and "already running" in again.stderr, output(again)
    clash_dir = tmp_path / "other"
    clash = cli(*up_args(clash_dir, base), env=standin_env)
    meshes.run_dirs.append(clash_dir)
    assert clash.returncode == 1 and "in use" in clash.stderr, output(clash)
    assert all(rprocs.is_ours(p["pid"], p["argv"], p["start_time"]) for p in state["processes"])

    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert "final totals" in r.stdout and "ports are free" in r.stdout
    assert "warning: killing" not in (run_dir / "logs" / "supervisor.log").read_text()
    assert_gone(state)
    assert not (run_dir / "state.json").exists()
    final = json.loads((run_dir / "summary.json").read_text())["clients"][0]
    assert final["final"] and final["requests"] >= 80
    assert "no mesh is running" in cli("status", "--run-dir", run_dir).stdout


def test_lifecycle_non_mesh_client_runs_beside_the_mesh_and_is_stopped_with_it(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    """`up --non-mesh-client --non-mesh-rps 10 --cert-ttl 6s`: legacy-client, with no sidecar, on the address
    after the mesh's, dialing payment-v1's inbound port; every sidecar asks for 6 s certificates; `status`
    shows its own summary; `down` stops it first (it started last)."""
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    prefix = base.rsplit(".", 1)[0]
    r = cli(*up_args(run_dir, base, "--non-mesh-client", "--non-mesh-rps", 10, "--cert-ttl", "6s"), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    assert f"legacy-client (no sidecar) --h2c, plaintext--> {prefix}.10:15006" in r.stdout, r.stdout
    state = meshes.record(run_dir)
    mesh = [p for p in state["processes"] if p["role"] != "prometheus"]
    names = [p["name"] for p in mesh]
    assert names[-2:] == ["client", "legacy-client"] and "legacy-client-sidecar" not in names
    legacy = mesh[-1]
    assert legacy["argv"][1:5] == ["-m", "payment_service.client", "--target", f"{prefix}.10:15006"]
    assert legacy["argv"][legacy["argv"].index("--rps") + 1] == "10"
    assert legacy["addresses"] == {"target": f"{prefix}.10:15006", "metrics": f"{prefix}.13:9464"}
    assert all(p["argv"][p["argv"].index("--cert-ttl") + 1] == "6s"
               for p in state["processes"] if p["role"] == "sidecar")

    def reported() -> bool:
        s = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["summary"]
        return len(s) == 2 and all(c["requests"] >= 20 for c in s)

    wait_for(reported, 30, "both clients' reports in `status`")
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    [w] = [w for w in st["workloads"] if w["name"] == "legacy-client"]
    assert (w["address"], w["in_mesh"], w["spiffe_id"], w["sidecar"], w["app"]["alive"]) == (
        f"{prefix}.13", False, "", None, True)
    [s] = [s for s in st["summary"] if s["client"] == "legacy-client"]
    assert s["note"] == "outside the mesh: no sidecar, plaintext" and s["target"] == f"{prefix}.10:15006 (payment:8080)"
    table = cli("status", "--run-dir", run_dir).stdout
    assert "none (outside the mesh)" in table and "legacy-client (outside the mesh: no sidecar, plaintext): " in table

    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert "final totals: legacy-client (outside the mesh" in r.stdout and "ports are free" in r.stdout
    assert_gone(state)


def test_lifecycle_no_orphans_when_the_supervisor_is_killed(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)

    os.kill(state["supervisor_pid"], signal.SIGKILL)
    children = state["processes"]
    wait_for(
        lambda: not any(rprocs.is_ours(p["pid"], p["argv"], p["start_time"]) for p in children),
        10,
        "the children to die with their supervisor",
    )
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    assert not st["running"] and st["status"] == "supervisor-dead"
    assert not any(w[role]["alive"] for w in st["workloads"] for role in ("app", "sidecar"))

    # The next `up` on the run dir cleans up after the dead run and starts.
    r = cli(*up_args(run_dir, base), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    assert "was not stopped cleanly" in r.stdout
    second = meshes.record(run_dir)
    assert second["run_id"] != state["run_id"]
    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert_gone(second)


def test_lifecycle_down_after_a_crash_stops_only_processes_that_are_still_ours(
    tmp_path: Path, procs: ProcessGroup
) -> None:
    leftover = procs.python("leftover", "http.server", "0", "--bind", "127.0.0.1")
    stranger = procs.python("stranger", "http.server", "0", "--bind", "127.0.0.1")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(gone.stdout)
    wait_for(
        lambda: bool(rprocs.cmdline(leftover.pid)) and bool(rprocs.cmdline(stranger.pid)), 10, "processes"
    )
    run_dir = RunDir(tmp_path / "run")
    record = {"workload": "w", "role": "app", "addresses": {}, "log": "x.log"}
    state = {
        "version": 1,
        "run_id": "crashed",
        "run_dir": str(run_dir.root),
        "supervisor_pid": dead_pid,
        "supervisor_argv": [sys.executable, "-c", "import os; print(os.getpid())"],
        "supervisor_start_time": None,
        "started_at": "",
        "address_mode": "shared",
        "status": "ready",
        "workloads": [],
        "traffic": [],
        "processes": [
            {
                **record,
                "name": "leftover",
                "pid": leftover.pid,
                "argv": list(leftover.args),
                "start_time": rprocs.start_time(leftover.pid),
            },
            # Same PID as a live process but another command line: a reused PID, not ours.
            {
                **record,
                "name": "reused",
                "pid": stranger.pid,
                "argv": [sys.executable, "-m", "pyproxy"],
                "start_time": None,
            },
        ],
    }
    run_dir.root.mkdir(parents=True)
    run_dir.state.write_text(json.dumps(state))
    r = cli("down", "--run-dir", run_dir.root)
    assert r.returncode == 0, output(r)
    assert "is gone" in r.stdout and "stopped leftover leftover" in r.stdout
    wait_for(lambda: not leftover.alive(), 5, "the leftover to be reaped")
    assert stranger.alive(), "a process that is not ours was signalled"
    assert not run_dir.state.exists()


def procs_cmdline_ready(pid: int) -> bool:
    return bool(rprocs.cmdline(pid))


def procs_start_time(pid: int) -> int | None:
    return rprocs.start_time(pid)


def test_lifecycle_foreground_up_stops_cleanly_on_ctrl_c(
    tmp_path: Path, standin_env: dict[str, str], procs: ProcessGroup, meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    up = procs.python(
        "mesh-up",
        "mesh_ctl",
        "up",
        "--run-dir",
        str(run_dir),
        "--base-address",
        base,
        "--control-plane-address",
        control_plane_address(base),
        env={"PYTHONPATH": standin_env["PYTHONPATH"]},
    )

    def ready() -> bool:
        state = read_state(RunDir(run_dir)) if (run_dir / "state.json").exists() else None
        return state is not None and state.status == "ready" and (run_dir / "summary.json").exists()

    wait_for(ready, 30, "the foreground mesh")
    state = meshes.record(run_dir)
    assert state["supervisor_pid"] == up.pid
    wait_for(lambda: "requests" in up.output(), 10, "a live summary line")
    up.kill(signal.SIGINT)
    up.popen.wait(timeout=30)
    out = up.output()
    assert up.popen.returncode == 0, out
    assert "final totals" in out and "minimesh stopped" in out
    assert "warning: killing" not in out
    assert_gone(state)
    assert not (run_dir / "state.json").exists()
    # The foreground supervisor keeps its own log too: what it printed, without the live summary.
    log = (run_dir / "logs" / "supervisor.log").read_text()
    assert f"supervisor pid {up.pid}, run {state['run_id']} (foreground)" in log
    assert "minimesh is up" in log and "final totals" in log and "minimesh stopped" in log


def test_lifecycle_logs_are_rotated_at_the_cap_and_complete_after_down(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    """`up --log-max-size 16k --log-max-files 2`: each stand-in sidecar writes ~480 KB at start (30 files'
    worth); every log keeps at most 2 files of at most 16 KiB, holding the newest lines without a gap, up
    to each process's last line once `down` returns."""
    cap, lines = 16 * 1024, 5000
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base, "--log-max-size", "16k", "--log-max-files", 2),
            env={**standin_env, "STANDIN_NOISE": str(lines)})
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)

    def bounded() -> None:
        for log in sorted((run_dir / "logs").iterdir()):
            assert log.stat().st_size <= cap, (log.name, log.stat().st_size)
            assert log.suffix in (".log", ".1"), log.name  # nothing beyond x.log.1

    bounded()
    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert_gone(state)
    bounded()
    expected = [f"noise {i:06d} " + "." * 80 for i in range(lines)]
    for workload in ("payment-v1", "payment-v2", "client"):
        log = run_dir / "logs" / f"{workload}-sidecar.log"
        kept = (Path(f"{log}.1").read_text() + log.read_text()).splitlines()
        assert kept[-1].startswith("stand-in sidecar listening on"), kept[-2:]
        noise = kept[:-1] if kept[0] in expected else kept[1:-1]  # the oldest line may have lost its start
        assert noise == expected[len(expected) - len(noise):] and len(noise) > cap // 100, workload
    # The supervisor's own log is capped too, and holds its last words.
    supervisor = (Path(f"{run_dir}/logs/supervisor.log.1").read_text(errors="replace")
                  if (run_dir / "logs" / "supervisor.log.1").exists() else "")
    supervisor += (run_dir / "logs" / "supervisor.log").read_text()
    assert f"minimesh stopped (run {state['run_id']})" in supervisor


def test_lifecycle_start_up_failure_names_the_workload_and_stops_the_rest(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    prefix = base.rsplit(".", 1)[0] + "."
    env = {**standin_env, "STANDIN_FAIL": "client"}
    r = cli(*up_args(run_dir, base), env=env)
    assert r.returncode == 1
    assert "client-sidecar" in r.stdout and "exited with code 3" in r.stdout, output(r, run_dir)
    assert str(run_dir / "logs" / "client-sidecar.log") in r.stdout
    assert "failing on purpose" in r.stdout  # the log's tail is quoted
    assert not (run_dir / "state.json").exists()
    wait_for(lambda: not process_argvs_containing(prefix), 10, "no process left on the mesh's addresses")
    assert not busy_sockets(plan(default_topology(), base_address=base, mode="per-workload"))


def test_lifecycle_the_supervisor_restarts_a_dead_control_plane(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    state = meshes.record(run_dir)
    first = state["processes"][0]
    assert first["name"] == "control-plane"
    others = [(p["name"], p["pid"]) for p in state["processes"][1:]]

    def control_plane() -> dict[str, Any]:
        cp: dict[str, Any] = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)["control_plane"]
        return cp

    # Killed once: started again at once, in the same place of the state file, with the same command line.
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: control_plane()["pid"] != first["pid"] and control_plane()["serving"], 20,
             "the restarted control plane")
    again = meshes.record(run_dir)
    second = again["processes"][0]
    assert (second["name"], second["argv"], second["restarts"]) == ("control-plane", first["argv"], 1)
    assert [(p["name"], p["pid"]) for p in again["processes"][1:]] == others  # nothing else was touched
    assert all(rprocs.is_ours(p["pid"], p["argv"], p["start_time"]) for p in again["processes"])
    text = cli("status", "--run-dir", run_dir).stdout
    assert f"pid {second['pid']} (restarted 1x)" in text, text
    log = (run_dir / "logs" / "supervisor.log").read_text()
    assert f"warning: control-plane (pid {first['pid']}) exited with code -9" in log
    assert f"control-plane restarted (pid {second['pid']}, restart 1)" in log

    # Killed again soon after its start: the back-off begins (1 s), and it still comes back.
    os.kill(second["pid"], signal.SIGKILL)
    wait_for(lambda: control_plane()["restarts"] == 2 and control_plane()["serving"], 20, "a second restart")
    third = meshes.record(run_dir)["processes"][0]
    assert f"warning: control-plane (pid {second['pid']}) exited with code -9" in (
        run_dir / "logs" / "supervisor.log").read_text()
    assert "restarting it in 1 s" in (run_dir / "logs" / "supervisor.log").read_text()

    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert "warning: killing" not in (run_dir / "logs" / "supervisor.log").read_text()
    assert_gone({**again, "processes": [third, *again["processes"][1:]]})


def test_lifecycle_static_mode_runs_without_a_control_plane(
    tmp_path: Path, standin_env: dict[str, str], meshes: Meshes
) -> None:
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    base = free_base_address()
    r = cli(*up_args(run_dir, base, "--static"), env=standin_env)
    assert r.returncode == 0, output(r, run_dir)
    assert "control plane" not in r.stdout and "set-weight" not in r.stdout
    state = meshes.record(run_dir)
    assert [p["role"] for p in state["processes"] if p["role"] != "prometheus"] == [
        "app", "app", "sidecar", "sidecar", "sidecar", "app"]
    client = yaml.safe_load((run_dir / "bootstrap" / "client.yaml").read_text())
    assert "dynamic_resources" not in client
    assert [listener["name"] for listener in client["static_resources"]["listeners"]] == ["virtualOutbound"]
    sidecar = next(p for p in state["processes"] if p["name"] == "client-sidecar")
    assert "--ca-address" not in sidecar["argv"] and not (run_dir / "tokens").exists()
    for name in ("payment-v1", "payment-v2", "client"):  # the certificates the static bootstraps name
        assert stat.S_IMODE((run_dir / "certs" / name / "key.pem").stat().st_mode) == 0o600
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    assert st["running"] and st["control_plane"] is None
    assert not (run_dir / "control-plane.json").exists()
    r = cli("down", "--run-dir", run_dir)
    assert r.returncode == 0, output(r, run_dir)
    assert_gone(state)
