"""The run's Prometheus: finding the binary, its argv, its scrape configuration and file-SD targets (pure,
except :func:`write_targets`, which rewrites one target file atomically).

Not wired into ``mesh_ctl up`` yet (see the branch's report): this module is the building block.

Jobs (file-based service discovery, one target file per job under ``<run dir>/prometheus/targets/``):

* ``envoy-stats``: every sidecar's ``--stats-address`` (15090's equivalent), path ``/stats/prometheus``, with
  the labels Istio's Prometheus addon gives pod targets (``namespace``, ``pod``, ``app``, ``version``).
* ``istiod``: the control plane's metrics endpoint when it exposes one: the control plane's engineer sets
  :data:`CONTROL_PLANE_METRICS_PATH` and the spec's ``addresses[CONTROL_PLANE_METRICS_ROLE]`` (default: the
  management API's address, ``api``); no address under that role means no target.
* ``apps``: an app's ``addresses["metrics"]`` when the app exposes one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mesh_ctl.runtime.specs import ProcessSpec

PROMETHEUS_PORT = 9090  # Prometheus's usual port; the run's shifts it like the others
DEFAULT_SCRAPE_INTERVAL = "15s"
DEFAULT_RETENTION = "2h"
INSTALL_HINT = "apt-get install prometheus"
SIDECAR_JOB = "envoy-stats"  # Istio's job name for sidecars' 15090
CONTROL_PLANE_JOB = "istiod"
APP_JOB = "apps"
SIDECAR_METRICS_PATH = "/stats/prometheus"
# Coordination point with the control-plane metrics work: the role under which the control plane's spec
# lists the address serving its metrics, and the path. No such address in the spec: no istiod target.
CONTROL_PLANE_METRICS_ROLE = "metrics"
CONTROL_PLANE_METRICS_PATH = "/metrics"
APP_METRICS_ROLE = "metrics"


def find_binary(path: str | None = None) -> str | None:
    """The ``prometheus`` on PATH (``path``: the PATH to search instead of the environment's)."""
    return shutil.which("prometheus", path=path)


def missing_message() -> str:
    """The one line ``up`` prints when there is no binary."""
    return f"prometheus: not installed, skipped (install it with: {INSTALL_HINT})"


def argv(binary: str, config: Path, storage: Path, listen: str,
         retention: str = DEFAULT_RETENTION) -> tuple[str, ...]:
    return (binary, f"--config.file={config}", f"--storage.tsdb.path={storage}",
            f"--storage.tsdb.retention.time={retention}", f"--web.listen-address={listen}")


def targets_dir(prom_dir: Path) -> Path:
    return prom_dir / "targets"


def config(prom_dir: Path, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL) -> dict[str, object]:
    """prometheus.yml as a dict (JSON is valid YAML: written with json.dumps)."""
    tdir = targets_dir(prom_dir)

    def job(name: str, path: str) -> dict[str, object]:
        return {"job_name": name, "metrics_path": path, "scrape_interval": scrape_interval,
                "file_sd_configs": [{"files": [str(tdir / f"{name}.json")], "refresh_interval": "5s"}]}

    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [job(SIDECAR_JOB, SIDECAR_METRICS_PATH),
                               job(CONTROL_PLANE_JOB, CONTROL_PLANE_METRICS_PATH),
                               job(APP_JOB, "/metrics")]}


def _labels(spec: ProcessSpec, namespace: str, version: str | None) -> dict[str, str]:
    labels = {"namespace": namespace, "pod": spec.name, "app": spec.workload}
    if version:
        labels["version"] = version
    return labels


def target_groups(specs: Iterable[ProcessSpec], namespace: str = "default",
                  versions: dict[str, str] | None = None) -> dict[str, list[dict[str, object]]]:
    """job name -> file-SD target groups, from the run's process specs."""
    versions = versions or {}
    out: dict[str, list[dict[str, object]]] = {SIDECAR_JOB: [], CONTROL_PLANE_JOB: [], APP_JOB: []}
    for s in specs:
        labels = _labels(s, namespace, versions.get(s.workload))
        if s.role == "sidecar" and "prometheus" in s.addresses:
            out[SIDECAR_JOB].append({"targets": [s.addresses["prometheus"]], "labels": labels})
        elif s.role == "control-plane" and CONTROL_PLANE_METRICS_ROLE in s.addresses:
            out[CONTROL_PLANE_JOB].append({"targets": [s.addresses[CONTROL_PLANE_METRICS_ROLE]],
                                           "labels": {"namespace": namespace, "app": "istiod"}})
        elif s.role == "app" and APP_METRICS_ROLE in s.addresses:
            out[APP_JOB].append({"targets": [s.addresses[APP_METRICS_ROLE]], "labels": labels})
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(prom_dir: Path, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL) -> Path:
    path = prom_dir / "prometheus.yml"
    _atomic_write(path, json.dumps(config(prom_dir, scrape_interval), indent=2) + "\n")
    return path


def write_targets(prom_dir: Path, groups: dict[str, list[dict[str, object]]]) -> None:
    """Rewrite every job's target file atomically (Prometheus never reads a half-written file)."""
    for job_name, tgs in groups.items():
        _atomic_write(targets_dir(prom_dir) / f"{job_name}.json", json.dumps(tgs, indent=2) + "\n")
