"""The run's Prometheus configuration and file-SD targets (mesh_ctl.runtime.prometheus)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.specs import ProcessSpec
from tests.support.prometheus import promtool_binary


def _spec(name: str, workload: str, role: str, **addresses: str) -> ProcessSpec:
    return ProcessSpec(name=name, workload=workload, role=role, argv=("x",),  # type: ignore[arg-type]
                       addresses=dict(addresses), ready="tcp", ready_at=None)


SPECS = [
    _spec("control-plane", "control-plane", "control-plane", xds="127.0.0.1:15010", api="127.0.0.1:15014"),
    _spec("payment-v1", "payment-v1", "app", app="127.0.0.2:50051"),
    _spec("payment-v1-sidecar", "payment-v1", "sidecar", admin="127.0.0.2:15000", prometheus="127.0.0.2:15090"),
    _spec("client-sidecar", "client", "sidecar", admin="127.0.0.3:15000", prometheus="127.0.0.3:15090"),
]


def test_every_sidecar_is_a_target_with_istio_labels() -> None:
    groups = prom.target_groups(SPECS, versions={"payment-v1": "v1"})
    assert groups[prom.SIDECAR_JOB] == [
        {"targets": ["127.0.0.2:15090"],
         "labels": {"namespace": "default", "pod": "payment-v1-sidecar", "app": "payment-v1", "version": "v1"}},
        {"targets": ["127.0.0.3:15090"],
         "labels": {"namespace": "default", "pod": "client-sidecar", "app": "client"}},
    ]


def test_control_plane_target_only_when_it_lists_a_metrics_address() -> None:
    assert prom.target_groups(SPECS)[prom.CONTROL_PLANE_JOB] == []
    cp = _spec("control-plane", "control-plane", "control-plane",
               **{prom.CONTROL_PLANE_METRICS_ROLE: "127.0.0.1:15014"})
    assert prom.target_groups([cp])[prom.CONTROL_PLANE_JOB][0]["targets"] == ["127.0.0.1:15014"]


def test_targets_are_rewritten_atomically(tmp_path: Path) -> None:
    prom.write_targets(tmp_path, prom.target_groups(SPECS))
    prom.write_targets(tmp_path, prom.target_groups(SPECS[:3]))
    files = sorted(p.name for p in prom.targets_dir(tmp_path).iterdir())
    assert files == ["apps.json", "envoy-stats.json", "istiod.json"]  # no temporary file left behind
    assert len(json.loads((prom.targets_dir(tmp_path) / "envoy-stats.json").read_text())) == 1


def test_missing_binary_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    assert prom.find_binary(path=str(tmp_path)) is None
    msg = prom.missing_message()
    assert "\n" not in msg and "apt-get install prometheus" in msg


def test_promtool_accepts_the_generated_config(tmp_path: Path) -> None:
    promtool = promtool_binary()
    prom.write_targets(tmp_path, prom.target_groups(SPECS))
    config = prom.write_config(tmp_path, scrape_interval="1s")
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
