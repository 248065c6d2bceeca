"""A real Prometheus scrapes a real mesh's sidecars through the generated file-SD configuration, and the
sidecars' exposition passes prometheus_client's parser.

Not yet through `mesh_ctl up` (the launch is not wired in): the test starts the Prometheus itself with the
configuration mesh_ctl.runtime.prometheus generates from the run's sidecar addresses (status -o json).
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.specs import ProcessSpec
from tests.integration.test_mesh_up import Meshes, cli, free_base_address, meshes, output, up_args, wait_for
from tests.support.procs import free_port
from tests.support.prometheus import prometheus_binary

__all__ = ["meshes"]  # the fixture, re-used
pytestmark = pytest.mark.timeout(180)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_real_prometheus_scrapes_every_sidecar_and_sees_both_payment_versions(
    tmp_path: Path, meshes: Meshes
) -> None:
    binary = prometheus_binary()
    run_dir = tmp_path / "run"
    meshes.run_dirs.append(run_dir)
    r = cli(*up_args(run_dir, free_base_address(), "--ready-timeout", 30))
    assert r.returncode == 0, output(r, run_dir)
    meshes.record(run_dir)
    st = json.loads(cli("status", "-o", "json", "--run-dir", run_dir).stdout)
    specs = [ProcessSpec(name=f"{w['name']}-sidecar", workload=w["name"], role="sidecar", argv=(),
                         addresses={"prometheus": f"{w['address']}:{w['ports']['prometheus']}"},
                         ready="tcp", ready_at=None) for w in st["workloads"]]

    # The exposition parses, with the Istio families.
    for s in specs:
        with urllib.request.urlopen(f"http://{s.addresses['prometheus']}/stats/prometheus", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        assert {"istio_requests", "istio_request_duration_milliseconds"} <= set(families), (s.name, families)
        for sample in families["istio_requests"].samples:  # Istio's 25 standard labels, every series
            assert len(sample.labels) == 25, (s.name, sample)

    prom_dir = tmp_path / "prometheus"
    prom.write_targets(prom_dir, prom.target_groups(specs))
    config = prom.write_config(prom_dir, scrape_interval="1s")
    listen = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(prom.argv(binary, config, prom_dir / "data", listen),
                            stdout=subprocess.DEVNULL, stderr=(prom_dir / "prometheus.log").open("w"))
    try:
        def targets_up() -> bool:
            try:
                active = _get(f"http://{listen}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(active) == len(specs) and all(t["health"] == "up" for t in active)

        wait_for(targets_up, 60, "every sidecar target up in Prometheus")

        q = urllib.parse.quote('sum(istio_requests_total{reporter="destination"}) by (destination_workload)')

        def both_versions() -> bool:
            res = _get(f"http://{listen}/api/v1/query?query={q}")["data"]["result"]
            return {"payment-v1", "payment-v2"} <= {x["metric"].get("destination_workload") for x in res}

        wait_for(both_versions, 60, "istio_requests_total series for payment v1 and v2")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
