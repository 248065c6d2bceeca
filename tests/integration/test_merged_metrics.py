"""Istio's metrics merging for real: `mesh_ctl up`, then every sidecar's merged endpoint (15020) serves the
agent's, the proxy's and its app's metrics in one exposition that prometheus_client's parser reads, and a real
Prometheus scraping those endpoints has every target up and answers queries on all three kinds of metrics.

Why families are de-duplicated, measured with Debian's Prometheus 2.42: an exposition that declares a family twice
(what plain concatenation gives when the app and the proxy both declare one) is not refused by the Prometheus
server, but it silently keeps the first sample of the series and drops the other (the target stays "up", no
counter of Prometheus' own moves; checked below); Go's text parser (``expfmt``, used by
``promtool check metrics``, federation and Istio's own agent) refuses the whole exposition ("second TYPE line for
metric name"). :func:`pyproxy.admin.merge.merge` of the same sources passes both; every merged endpoint of the
mesh passes ``promtool check metrics`` without a parse error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.admin.merge import merge
from tests.integration.test_mesh_up import Meshes, cli, free_base_address, meshes, output, up_args, wait_for
from tests.support.procs import REPO_ROOT, free_port
from tests.support.prometheus import prometheus_binary, promtool_binary
from tests.unit.config.conftest import BOOTSTRAPS

__all__ = ["meshes"]  # the fixture, re-used
pytestmark = pytest.mark.timeout(240)

PROXY_TEXT = "# TYPE requests_total counter\nrequests_total 3\n"
APP_TEXT = "# TYPE requests_total counter\nrequests_total 5\n# TYPE app_up gauge\napp_up 1\n"
EXPOSITIONS = {"/concatenated": PROXY_TEXT + APP_TEXT,
               "/merged": merge([("envoy", PROXY_TEXT), ("application", APP_TEXT)]).text}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def _sample_names(url: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(_text(url)) for s in f.samples}


def promtool_parses(promtool: str, text: str) -> tuple[bool, str]:
    """Whether Go's text parser reads ``text`` (``promtool check metrics``: exit 1 and "error while linting" on a
    parse error; 3 for lint advice such as a missing HELP, which is not an error)."""
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                       check=False)
    return r.returncode in (0, 3) and "parsing error" not in r.stderr, r.stderr


class _Fixed(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPOSITIONS.get(self.path, "").encode()
        self.send_response(200 if body else 404)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fixed_expositions() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_merged_endpoints_serve_agent_proxy_and_app_metrics_to_a_real_prometheus(
    tmp_path: Path, meshes: Meshes, fixed_expositions: str
) -> None:
    binary = prometheus_binary()
    promtool = promtool_binary()
    assert not promtool_parses(promtool, EXPOSITIONS["/concatenated"])[0]
    assert promtool_parses(promtool, EXPOSITIONS["/merged"])[0]
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    r = cli(*up_args(run_dir, free_base_address(), "--ready-timeout", 30))
    assert r.returncode == 0, output(r, run_dir)
    meshes.record(run_dir)
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    merged = {w["name"]: f"{w['address']}:{w['ports']['merged']}" for w in st["workloads"]}
    assert set(merged) == {"payment-v1", "payment-v2", "client"}

    # Each merged endpoint parses, with the proxy's, the agent's and the app's metrics (once traffic flowed).
    app_metric = {"payment-v1": "grpc_server_handled_total", "payment-v2": "grpc_server_handled_total",
                  "client": "grpc_client_handled_total"}
    for name, address in merged.items():
        wanted = {"istio_requests_total", "istio_agent_cert_expiry_seconds", "istio_agent_scrapes_total",
                  app_metric[name]}
        url = f"http://{address}/stats/prometheus"
        wait_for(lambda url=url, wanted=wanted: wanted <= _sample_names(url), 60,
                 f"{name}'s merged endpoint with {sorted(wanted)}")
    for name, address in merged.items():
        ok, errors = promtool_parses(promtool, _text(f"http://{address}/stats/prometheus"))
        assert ok, (name, errors)
    text = _text(f"http://{merged['payment-v2']}/stats/prometheus")
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family declared twice"
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Charge"' in text
    assert 'payments_processed_total{outcome="captured",version="v2"}' in text

    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [
                  {"job_name": "merged", "metrics_path": "/stats/prometheus",
                   "static_configs": [{"targets": [a], "labels": {"pod": n}} for n, a in merged.items()]},
                  {"job_name": "concatenated", "metrics_path": "/concatenated",
                   "static_configs": [{"targets": [fixed_expositions]}]},
                  {"job_name": "deduplicated", "metrics_path": "/merged",
                   "static_configs": [{"targets": [fixed_expositions]}]}]}
    (prom_dir / "prometheus.yml").write_text(json.dumps(config))
    listen = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([binary, f"--config.file={prom_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address={listen}"],
                            stdout=subprocess.DEVNULL, stderr=(prom_dir / "prometheus.log").open("w"))
    try:
        def targets() -> dict[str, dict[str, Any]]:
            try:
                active = _get(f"http://{listen}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return {}
            return {t["labels"].get("pod") or t["labels"]["job"]: t for t in active}

        def scraped() -> bool:
            t = targets()
            return len(t) == 5 and all(x["health"] != "unknown" for x in t.values())

        wait_for(scraped, 60, "every target scraped once")
        wait_for(lambda: all(targets()[n]["health"] == "up" for n in merged), 30, "every merged target up")
        t = targets()
        assert all(t[n]["lastError"] == "" for n in merged), t
        # A family declared twice: the scrape is "up", and the app's sample of the series silently lost (3 kept,
        # 5 dropped); merged, the proxy's series is kept on purpose (and logged), the app's other families too.
        assert t["concatenated"]["health"] == "up" and t["deduplicated"]["health"] == "up", t

        def query(q: str) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = _get(
                f"http://{listen}/api/v1/query?query={urllib.parse.quote(q)}")["data"]["result"]
            return result

        def answered(q: str, by: str, expected: set[str]) -> bool:
            return expected <= {x["metric"].get(by) for x in query(q) if float(x["value"][1]) > 0}

        checks = [
            ('sum(grpc_server_handled_total{job="merged",grpc_method="Charge"}) by (pod)', "pod",
             {"payment-v1", "payment-v2"}),
            ('sum(grpc_client_handled_total{job="merged"}) by (pod)', "pod", {"client"}),
            ('istio_agent_cert_expiry_seconds{job="merged",resource_name="default"}', "pod",
             {"payment-v1", "payment-v2", "client"}),
            ('sum(istio_requests_total{job="merged",reporter="destination"}) by (destination_workload)',
             "destination_workload", {"payment-v1", "payment-v2"}),
            ('sum(payments_processed_total{job="merged"}) by (version)', "version", {"v1", "v2"}),
            ('requests_total{job="deduplicated"} == 3 and on() app_up{job="deduplicated"} == 1', "job",
             {"deduplicated"}),
            ('count by (job) (requests_total{job="concatenated"} == 3)', "job", {"concatenated"}),
        ]
        for q, by, expected in checks:
            wait_for(lambda q=q, by=by, expected=expected: answered(q, by, expected), 60,
                     f"{q} -> {sorted(expected)}")
        failures = query('istio_agent_scrape_failures_total{job="merged",type="application"}')
        assert len(failures) == 3 and all(float(x["value"][1]) == 0 for x in failures), failures

        # The app stops answering (SIGSTOP: alive, its sockets open, nothing read): the merged endpoint still
        # answers, within the fetch's 2 s bound, with the proxy's metrics and the failure counted.
        state = json.loads((run_dir / "state.json").read_text())
        [app] = [p for p in state["processes"] if p["name"] == "payment-v1"]
        url = f"http://{merged['payment-v1']}/stats/prometheus"
        os.kill(app["pid"], signal.SIGSTOP)
        try:
            began = time.monotonic()
            text = _text(url)
            took = time.monotonic() - began
        finally:
            os.kill(app["pid"], signal.SIGCONT)
        samples = {(s.name, s.labels.get("type", "")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert took < 4.5, took
        assert samples[("istio_agent_scrape_failures_total", "application")] >= 1
        assert ("istio_requests_total", "") in samples
        assert not any(name.startswith("grpc_server_") for name, _ in samples)
        wait_for(lambda: "grpc_server_handled_total" in _sample_names(url), 30, "the app's metrics back")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(("flags", "message"), [
    (["--app-metrics-url", "http://127.0.0.1:9464/metrics"],
     "pyproxy: --app-metrics-url needs --merged-stats-address (where the merged metrics are served)"),
    (["--merged-stats-address", "127.0.0.1:0", "--app-metrics-url", "ftp://127.0.0.1:9464/metrics"],
     "pyproxy: --app-metrics-url: 'ftp://127.0.0.1:9464/metrics': only http:// URLs are supported"),
])
def test_bad_metrics_flags_are_one_line_and_exit_1(flags: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pyproxy", "-c", str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"),
                        *flags], capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT)
    assert (r.returncode, r.stderr.strip()) == (1, message)
