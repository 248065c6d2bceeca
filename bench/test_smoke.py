"""Smoke tests of the benchmark itself (not part of the test suite): ``pytest bench/test_smoke.py``.

They check the pieces that could silently produce wrong numbers or leave processes behind: certificates,
configs accepted by the real proxies (``nginx -t``, ``haproxy -c``, Envoy's own Bootstrap proto), /proc
accounting, one short end-to-end run with JSON output, and cleanup after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from bench.certs import make_certs
from bench.measure import Measurement, Rep, percentile
from bench.procfs import descendants, sample_cpu, tree_rss
from bench.procs import REPO_ROOT, ProcessSet, free_port
from bench.proxies import haproxy, nginx
from bench.proxies.base import Hop
from bench.proxies.pyproxy import bootstrap, validate_bootstrap
from bench.report import background_warning, ratios, table, verdicts
from bench.shapes import MTLS_SHAPE, SHAPES, plan

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")


def test_certificates_carry_spiffe_and_localhost_and_chain_to_the_ca(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    for leaf in (certs.server, certs.client):
        cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [leaf.spiffe_id]
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert leaf.bundle.read_bytes().startswith(leaf.cert.read_bytes())
    assert certs.server.spiffe_id == "spiffe://cluster.local/ns/bench/sa/server"


def _all_hops(tmp_path: Path) -> list[Hop]:
    certs = make_certs(tmp_path / "certs")
    return [hop for shape in SHAPES for hop in plan(shape, free_port(), tmp_path / shape, certs)]


def test_pyproxy_bootstraps_are_valid_envoy_v3(tmp_path: Path) -> None:
    hops = _all_hops(tmp_path)
    sides = {(h.downstream_tls, h.upstream_tls) for h in hops}
    assert sides == {(False, False), (True, False), (False, True)}
    for hop in hops:
        validate_bootstrap(bootstrap(hop))  # raises ParseError on any unknown field or @type


@needs_nginx
def test_nginx_accepts_every_config(tmp_path: Path) -> None:
    for hop in _all_hops(tmp_path):
        (hop.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (hop.workdir / "nginx.conf").write_text(nginx.config(hop))
        args = ["nginx", "-t", "-p", str(hop.workdir), "-c", str(hop.workdir / "nginx.conf"),
                "-e", str(hop.workdir / "error.log")]
        out = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
        assert out.returncode == 0, out.stderr


@needs_haproxy
def test_haproxy_accepts_every_config(tmp_path: Path) -> None:
    for hop in _all_hops(tmp_path):
        hop.workdir.mkdir(parents=True, exist_ok=True)
        (hop.workdir / "haproxy.cfg").write_text(haproxy.config(hop))
        out = subprocess.run(["haproxy", "-c", "-f", str(hop.workdir / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=20, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_cpu_of_a_process_tree_counts_its_busy_child(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path)
    try:
        # A shell whose child spins for ~0.3 s of CPU: the tree's CPU must include the child's.
        parent = procs.start("spin", ["sh", "-c", f"{sys.executable} -c 'import time; t=time.process_time()\n"
                                                    "while time.process_time()-t<0.3: pass\n"
                                                    "time.sleep(30)'"])
        time.sleep(0.2)
        before = sample_cpu([parent.pid])
        assert len(descendants(parent.pid)) == 2
        time.sleep(0.6)
        spent = sample_cpu([parent.pid]).seconds_since(before)
        assert 0.1 <= spent <= 0.5, spent
        assert tree_rss(parent.pid) > 1_000_000
    finally:
        procs.close()
    assert not parent.alive()


def _rep(cpu: float, p50: float) -> Rep:
    return Rep(rps=1000.0, throughput_requests=6000, throughput_elapsed=6.0, proxy_cpu_10k=cpu,
               proxy_cpu_10k_c1=cpu * 1.5, proxy_user_10k=cpu / 2, proxy_sys_10k=cpu / 2, proxy_util=0.3,
               loadgen_util=0.5, server_util=0.7, background_util=0.0, background_util_c1=0.0,
               loadgen_cpu_10k=1.0, server_cpu_10k=2.0, p50_us=p50,
               p90_us=p50 * 1.2, p99_us=p50 * 2, mean_us=p50, latency_requests=1500)


def test_ratios_and_verdicts_use_medians_of_the_same_run() -> None:
    ng = Measurement("nginx", MTLS_SHAPE, [], "t", reps=[_rep(c, 800) for c in (1.0, 0.9, 5.0)],
                     rss_idle_mb=[20.0, 21.0])
    py = Measurement("pyproxy", MTLS_SHAPE, [], "t", reps=[_rep(c, 3000) for c in (7.0, 7.2, 7.1)],
                     rss_idle_mb=[50.0, 61.0], long_rss_mb=[(10_000, 50.0), (50_000, 51.0), (100_000, 51.5)])
    (r,) = ratios([ng, py])
    assert r.baseline == "nginx" and r.cpu_10k == pytest.approx(7.1) and r.p50 == pytest.approx(3.75)
    got = {v.target.split(" ")[1]: v.verdict for v in verdicts([ng, py], long_requested=True)}
    assert got == {"cpu/10k": "PASS", "p50": "PASS", "idle": "FAIL", "RSS": "PASS"}
    py.rss_idle_mb = [50.0, 55.0]
    assert verdicts([ng, py], long_requested=True)[2].verdict == "PASS"
    py.rss_end_mb = [60.5, 50.0]  # idle after load counts too
    assert verdicts([ng, py], long_requested=True)[2].verdict == "FAIL"
    py.long_rss_mb.append((110_000, 52.6))  # +2.6 MB overall is within 5 %, +1.6 MB in the second half is not
    assert verdicts([ng, py], long_requested=True)[-1].verdict == "FAIL"
    py.error, py.reps = "start: exited with 1: boom", []
    assert [v.verdict for v in verdicts([ng, py], long_requested=False)][:2] == ["FAIL", "FAIL"]
    assert "failed: start: exited with 1: boom" in table([ng, py])
    assert background_warning([ng]) is None
    ng.reps[1].background_util_c1 = 0.8
    assert "0.8 cores" in (background_warning([ng]) or "")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([5.0], 99) == 5.0


def _run(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@needs_nginx
@needs_haproxy
def test_quick_run_measures_baselines_and_reports_a_broken_pyproxy_as_failed(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    args = ["--quick", "--repeat", "1", "--shapes", "direct,2-sidecars-mtls", "--json", str(out)]
    run = _run(args, tmp_path)
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stderr[-3000:]
    doc = json.loads(out.read_text())
    by = {(m["proxy"], m["shape"]): m for m in doc["measurements"]}
    for key in (("-", "direct"), ("nginx", "2-sidecars-mtls"), ("haproxy", "2-sidecars-mtls")):
        m = by[key]
        assert m["error"] is None, m["error"]
        rep = m["repetitions"][0]
        assert rep["throughput_requests"] == 2000 and rep["latency_requests"] == 300
        assert 0 < rep["p50_us"] <= rep["p99_us"] < 1e6
        if key[0] != "-":
            assert rep["proxy_cpu_10k"] > 0 and len(m["rss_mb"]["idle"]) == 2
    py = by[("pyproxy", "2-sidecars-mtls")]
    assert py["error"] is not None or py["repetitions"]  # works, or says why: never crashes the run
    assert "2-sidecars-mtls" in stdout and ("PASS" in stdout or "FAIL" in stdout)


@needs_nginx
@needs_haproxy
def test_ctrl_c_stops_every_process_the_run_started(tmp_path: Path) -> None:
    run = _run(["--proxies", "nginx,haproxy", "--shapes", "2-sidecars-mtls"], tmp_path)
    assert run.stderr is not None
    deadline = time.monotonic() + 60
    children: list[int] = []
    for line in run.stderr:  # wait until the sidecars are up and traffic flows
        if "warming up" in line:
            time.sleep(1.0)
            children = descendants(run.pid)[1:]
            break
        assert time.monotonic() < deadline
    assert len(children) >= 2  # at least the server and the load generator
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130
    time.sleep(0.5)
    alive = [pid for pid in children if _not_zombie(pid)]
    for pid in alive:  # leave nothing behind even when the run did
        os.kill(pid, signal.SIGKILL)
    assert not alive, alive


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
