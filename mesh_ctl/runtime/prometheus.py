"""The run's Prometheus: finding the binary, its process spec, its scrape configuration and file-SD targets
(pure, except :func:`write_config` and :func:`write_targets`, which replace files atomically).

`mesh_ctl up` runs it as one more supervised process (role ``prometheus``, started last, stopped first,
restarted like the others), listening on ``<control-plane host>:9090+N`` only, its files under
``<run dir>/prometheus/``::

    prometheus.yml     the configuration (:func:`config`): one job per kind of target, each reading a target file
    targets/<job>.json file-based service discovery: rewritten by the supervisor whenever the set of processes
                       or their addresses change (Prometheus re-reads it within 5 s, no restart)
    data/              the TSDB (kept across runs, 2 h retention)

Jobs (Istio's names):

* ``envoy-stats``: every sidecar, path ``/stats/prometheus``: its merged endpoint (``addresses["merged"]``,
  Istio's 15020: proxy + agent + app metrics) when it has one, else its proxy stats port
  (``addresses["prometheus"]``, 15090). Labels as Istio's Prometheus addon gives pod targets: ``namespace``,
  ``pod``, ``app``, ``version``.
* ``istiod``: the control plane's ``addresses["metrics"]``, path ``/metrics``, with the owner's credential
  (``authorization: Bearer``, read from ``<run dir>/api-token``: the management API requires it).
* ``apps``: an app's ``addresses["metrics"]``, path ``/metrics``, only when its workload's sidecar has no
  merged endpoint (merging already serves the app's metrics: scraping both would count them twice).

No address under a job's key: no target for it (the job stays, with an empty target file).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mesh_ctl.runtime.specs import ProcessSpec
from mesh_ctl.runtime.state import RunDir

PROMETHEUS = "prometheus"  # its process name, workload and role in state.json
PROMETHEUS_PORT = 9090  # Prometheus's usual port; the run's shifts it like the others
DEFAULT_SCRAPE_INTERVAL = "15s"
MIN_SCRAPE_INTERVAL_S = 1.0
MAX_SCRAPE_INTERVAL_S = 300.0  # beyond Prometheus's 5 min staleness, series would vanish between scrapes
DEFAULT_RETENTION = "2h"
TARGETS_REFRESH = "5s"  # how often Prometheus re-reads the target files (it also watches them)
INSTALL_HINT = "apt-get install prometheus"
SIDECAR_JOB = "envoy-stats"  # Istio's job name for sidecars' 15090
CONTROL_PLANE_JOB = "istiod"
APP_JOB = "apps"
SIDECAR_METRICS_PATH = "/stats/prometheus"
MERGED_ROLE = "merged"  # the sidecar's merged endpoint (Istio's 15020)
SIDECAR_STATS_ROLE = "prometheus"  # the proxy's own stats (Istio's 15090)
CONTROL_PLANE_METRICS_ROLE = "metrics"
CONTROL_PLANE_METRICS_PATH = "/metrics"
APP_METRICS_ROLE = "metrics"
APP_METRICS_PATH = "/metrics"
CONTROL_PLANE_NAMESPACE = "istio-system"  # where istiod runs

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def find_binary(path: str | None = None) -> str | None:
    """The ``prometheus`` on PATH (``path``: the PATH to search instead of the environment's)."""
    return shutil.which("prometheus", path=path)


def missing_message() -> str:
    """The one line ``up`` prints when there is no binary."""
    return f"prometheus: not installed, skipped (install it with: {INSTALL_HINT})"


def parse_scrape_interval(text: str) -> str:
    """A scrape interval in Prometheus's duration form (``15s``, ``1m``, ``1m30s``, ``500ms``...), from
    1 s to 5 min; returned as given. Raises ValueError with the reason."""
    m = _DURATION.match(text.strip()) if text.strip() else None
    if m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 15s, 1m, 1m30s)")
    h, mi, s, ms = (int(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s + ms / 1000
    if not MIN_SCRAPE_INTERVAL_S <= seconds <= MAX_SCRAPE_INTERVAL_S:
        raise ValueError(f"must be from 1s to 5m, got {text!r}")
    return text.strip()


@dataclass(frozen=True, slots=True)
class PrometheusOptions:
    """What `mesh_ctl up` runs: ``binary`` on ``host:port``, scraping every ``scrape_interval``."""

    binary: str
    host: str
    port: int
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL

    @classmethod
    def for_offset(cls, binary: str, host: str, port_offset: int,
                   scrape_interval: str = DEFAULT_SCRAPE_INTERVAL, port: int | None = None) -> PrometheusOptions:
        """On ``host`` (loopback only), port ``port`` or else 9090 + ``port_offset``."""
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            raise ValueError(f"prometheus address {host!r} is not an IP address") from None
        if not loopback:
            raise ValueError(f"prometheus address {host} is not a loopback address: it would serve the mesh's "
                             "metrics to the network")
        port = PROMETHEUS_PORT + port_offset if port is None else port
        if not 1 <= port <= 65535:
            raise ValueError(f"prometheus port {port} is out of range: choose a smaller port offset")
        return cls(binary, host, port, scrape_interval)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def sockets(self) -> list[tuple[str, str, str, int]]:
        """(owner, role, host, port), like the control plane's, for the start-up check of busy ports."""
        return [(PROMETHEUS, "web", self.host, self.port)]


def prometheus_dir(run_dir: RunDir) -> Path:
    return run_dir.root / "prometheus"


def argv(binary: str, config: Path, storage: Path, listen: str,
         retention: str = DEFAULT_RETENTION) -> tuple[str, ...]:
    return (binary, f"--config.file={config}", f"--storage.tsdb.path={storage}",
            f"--storage.tsdb.retention.time={retention}", f"--web.listen-address={listen}")


def process_spec(options: PrometheusOptions, run_dir: RunDir) -> ProcessSpec:
    """The supervised process: ready once ``GET /-/ready`` answers 200; restarted when it dies."""
    pdir = prometheus_dir(run_dir)
    return ProcessSpec(
        name=PROMETHEUS, workload=PROMETHEUS, role="prometheus",
        argv=argv(options.binary, pdir / "prometheus.yml", pdir / "data", options.address),
        addresses={"web": options.address}, ready="http-ready", ready_at=options.address, ready_path="/-/ready",
        restart=True,
    )


def targets_dir(prom_dir: Path) -> Path:
    return prom_dir / "targets"


def config(prom_dir: Path, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
           token_file: Path | None = None) -> dict[str, object]:
    """prometheus.yml as a dict (JSON is valid YAML: written with json.dumps). ``token_file``: the owner's
    credential, sent as a bearer token to the control plane (``istiod`` job)."""
    tdir = targets_dir(prom_dir)

    def job(name: str, path: str) -> dict[str, object]:
        return {"job_name": name, "metrics_path": path, "scrape_interval": scrape_interval,
                "file_sd_configs": [{"files": [str(tdir / f"{name}.json")], "refresh_interval": TARGETS_REFRESH}]}

    istiod = job(CONTROL_PLANE_JOB, CONTROL_PLANE_METRICS_PATH)
    if token_file is not None:
        istiod["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [job(SIDECAR_JOB, SIDECAR_METRICS_PATH), istiod, job(APP_JOB, APP_METRICS_PATH)]}


def _labels(spec: ProcessSpec, namespace: str, pod_labels: dict[str, str]) -> dict[str, str]:
    """What Istio's Prometheus addon gives a pod's target: its labels (``labelmap`` of the pod's labels, the
    names sanitised as Kubernetes service discovery does: ``app``, ``version`` ...), ``namespace`` and ``pod``."""
    labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in pod_labels.items()}
    return {**labels, "namespace": namespace, "pod": spec.workload}


def target_groups(specs: Iterable[ProcessSpec], namespace: str = "default",
                  pod_labels: dict[str, dict[str, str]] | None = None,
                  namespaces: dict[str, str] | None = None) -> dict[str, list[dict[str, object]]]:
    """job name -> file-SD target groups, from the run's process specs. ``namespaces`` / ``pod_labels``:
    workload -> its namespace (default ``namespace``) / its labels (the topology's, a pod's labels)."""
    specs = list(specs)
    pod_labels = pod_labels or {}
    namespaces = namespaces or {}
    merged = {s.workload for s in specs if s.role == "sidecar" and MERGED_ROLE in s.addresses}
    out: dict[str, list[dict[str, object]]] = {SIDECAR_JOB: [], CONTROL_PLANE_JOB: [], APP_JOB: []}
    for s in specs:
        labels = _labels(s, namespaces.get(s.workload, namespace), pod_labels.get(s.workload, {}))
        if s.role == "sidecar":
            address = s.addresses.get(MERGED_ROLE) or s.addresses.get(SIDECAR_STATS_ROLE)
            if address:
                out[SIDECAR_JOB].append({"targets": [address], "labels": labels})
        elif s.role == "control-plane" and CONTROL_PLANE_METRICS_ROLE in s.addresses:
            out[CONTROL_PLANE_JOB].append({"targets": [s.addresses[CONTROL_PLANE_METRICS_ROLE]],
                                           "labels": {"namespace": CONTROL_PLANE_NAMESPACE, "pod": s.name,
                                                      "app": "istiod"}})
        elif s.role == "app" and APP_METRICS_ROLE in s.addresses and s.workload not in merged:
            out[APP_JOB].append({"targets": [s.addresses[APP_METRICS_ROLE]], "labels": labels})
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; Prometheus may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(prom_dir: Path, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
                 token_file: Path | None = None) -> Path:
    path = prom_dir / "prometheus.yml"
    _atomic_write(path, json.dumps(config(prom_dir, scrape_interval, token_file), indent=2) + "\n")
    return path


def write_targets(prom_dir: Path, groups: dict[str, list[dict[str, object]]]) -> None:
    """Rewrite every job's target file atomically (Prometheus never reads a half-written file)."""
    for job_name, tgs in groups.items():
        _atomic_write(targets_dir(prom_dir) / f"{job_name}.json", json.dumps(tgs, indent=2) + "\n")


class TargetFiles:
    """The target files of one run, kept equal to the processes it supervises: :meth:`update` with the specs of
    every process that is there (alive, or about to be restarted) rewrites the files when the groups differ
    from what was last written, and leaves them alone otherwise."""

    def __init__(self, prom_dir: Path, namespaces: dict[str, str] | None = None,
                 pod_labels: dict[str, dict[str, str]] | None = None) -> None:
        self.prom_dir = prom_dir
        self.namespaces = dict(namespaces or {})
        self.pod_labels = dict(pod_labels or {})
        self.written: dict[str, list[dict[str, object]]] | None = None

    def update(self, specs: Iterable[ProcessSpec]) -> bool:
        """Whether the files were rewritten."""
        groups = target_groups(specs, pod_labels=self.pod_labels, namespaces=self.namespaces)
        if groups == self.written:
            return False
        write_targets(self.prom_dir, groups)
        self.written = groups
        return True
