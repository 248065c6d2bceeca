"""The run dir and the state file: what `down` and `status` read to find a running mesh.

Run dir (``--run-dir``, else ``$MINIMESH_HOME``, else ``./.minimesh``)::

    state.json        while a mesh runs: run id, supervisor, every process (pid, argv, start time, addresses)
    control-plane.json  written by the control plane (`mesh_ctl serve`): its pid and addresses, for the CLI
    api-token         the owner's credential for the control plane's API (0600; the CLI reads it)
    store/            the control plane's config store (Istio resources): kept across runs; `up --fresh`
                      moves it to store.before-fresh-<time>/ (with resources.yaml, for `apply -f`)
    summary.json      the load client's latest totals (kept after the mesh stops: the last run's totals)
    supervisor.lock   flock'ed by the running supervisor: at most one mesh per run dir
    topology.yaml     the topology the mesh was started from
    certs/            ca/: the CA's roots and token key; <workload>/{cert-chain,key,root-cert}.pem (--static only:
                      with a control plane each sidecar makes its key and gets its certificate from the CA)
    tokens/           <workload>.jwt: each workload's bootstrap token (what its sidecar shows the CA), 0600
    bootstrap/        <workload>.yaml, one Envoy bootstrap per sidecar
    prometheus/       prometheus.yml, targets/<job>.json (file-SD, kept current), data/ (mesh_ctl.runtime.prometheus)
    logs/             <workload>.log (app), <workload>-sidecar.log, control-plane.log, supervisor.log; each
                      rotated at `up --log-max-size` into x.log.1, x.log.2 ... (mesh_ctl.runtime.logs)

Files are replaced atomically (write a temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from mesh_ctl.credential import TOKEN_FILE

STATE_VERSION = 1
ENV_HOME = "MINIMESH_HOME"

Role = Literal["app", "sidecar", "control-plane", "prometheus"]
Status = Literal["starting", "ready", "stopping"]


def new_run_id() -> str:
    """A run id people can read and sort: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def resolve_run_dir(arg: str | os.PathLike[str] | None) -> Path:
    """``arg``, else ``$MINIMESH_HOME``, else ``./.minimesh``; always absolute."""
    chosen = arg or os.environ.get(ENV_HOME) or ".minimesh"
    return Path(chosen).expanduser().absolute()


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def lock(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def topology(self) -> Path:
        return self.root / "topology.yaml"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def bootstraps(self) -> Path:
        return self.root / "bootstrap"

    @property
    def api_token(self) -> Path:
        """The owner's credential for the control plane's management API (made by `mesh_ctl serve`, 0600)."""
        return self.root / TOKEN_FILE

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass(slots=True)
class ProcessRecord:
    """One process the supervisor started. ``argv`` + ``start_time`` identify it even after PID reuse."""

    name: str  # "payment-v1" (app) or "payment-v1-sidecar"
    workload: str
    role: Role
    pid: int
    argv: list[str]
    start_time: int | None  # /proc/<pid>/stat starttime (clock ticks since boot); None off Linux
    addresses: dict[str, str]  # "app" / "outbound" / "inbound" / "admin" / "prometheus" / "xds" / "api"
    log: str
    restarts: int = 0  # how many times the supervisor started it again (the control plane)


@dataclass(slots=True)
class WorkloadRecord:
    """What a workload is and where it lives (from the topology and placement), for `status`."""

    name: str
    namespace: str
    app: str
    version: str | None
    service_account: str
    spiffe_id: str  # "" outside the mesh: no sidecar, no identity
    address: str
    ports: dict[str, int | None]
    in_mesh: bool = True  # False: `up --non-mesh-client`'s client, with no sidecar


@dataclass(slots=True)
class State:
    run_id: str
    run_dir: str
    supervisor_pid: int
    supervisor_argv: list[str]
    supervisor_start_time: int | None
    started_at: str
    address_mode: str
    status: Status = "starting"
    workloads: list[WorkloadRecord] = field(default_factory=list)
    traffic: list[str] = field(default_factory=list)  # the call paths, as `mesh_ctl up` prints them
    services: dict[str, list[str]] = field(default_factory=dict)  # service name -> subset names (for hints)
    processes: list[ProcessRecord] = field(default_factory=list)
    prometheus: str | None = None  # the run's Prometheus, "http://host:port" (None: not started)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        d = dict(d)
        d["workloads"] = [WorkloadRecord(**w) for w in d.get("workloads", [])]
        d["processes"] = [ProcessRecord(**p) for p in d.get("processes", [])]
        return cls(**d)


class StateError(RuntimeError):
    pass


def write_json(path: Path, data: object) -> None:
    """Atomically replace ``path`` with ``data`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if the file does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise StateError(f"{path} is not valid JSON ({e}); remove it if no mesh is running") from e


def write_state(run_dir: RunDir, state: State) -> None:
    write_json(run_dir.state, state.to_json())


def read_state(run_dir: RunDir) -> State | None:
    data = read_json(run_dir.state)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise StateError(f"{run_dir.state}: not a JSON object; remove it if no mesh is running")
    if data.get("version") != STATE_VERSION:
        raise StateError(f"{run_dir.state}: unknown state format (version {data.get('version')!r}); "
                         "remove it if no mesh is running")
    try:
        return State.from_json(data)
    except TypeError as e:
        raise StateError(f"{run_dir.state}: {e}") from e


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class SupervisorLock:
    """An exclusive ``flock`` on the run dir's lock file, held for the supervisor's lifetime.

    The kernel drops it when the process dies, however it dies, so a held lock means a live supervisor.
    The descriptor is not inheritable, so the children never hold it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_is_held(path: Path) -> bool:
    """Whether some process holds the supervisor lock at ``path`` (without taking it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False


def set_store_aside(run_dir: RunDir) -> Path | None:
    """`up --fresh`: move the control plane's config store (``<run dir>/store``, kept across runs) to
    ``<run dir>/store.before-fresh-<time>`` and write its resources there as ``resources.yaml``, which
    `mesh_ctl apply -f` takes back. Nothing is deleted. Returns where it went (None: there was no store)."""
    store = run_dir.root / "store"
    if not store.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = run_dir.root / f"store.before-fresh-{stamp}"
    for n in range(2, 100):
        if not target.exists():
            break
        target = run_dir.root / f"store.before-fresh-{stamp}-{n}"
    store.rename(target)
    snapshot = target / "store.json"
    if snapshot.exists():
        try:
            docs = json.loads(snapshot.read_bytes()).get("resources") or []
        except (OSError, ValueError, AttributeError):
            docs = []
        (target / "resources.yaml").write_text(yaml.safe_dump_all([_as_applied(d) for d in docs], sort_keys=False)
                                               if docs else "")
    return target


def _as_applied(doc: Any) -> Any:
    """A stored resource as a user would apply it: without what the store set (resourceVersion, generation,
    creationTimestamp, uid), which a new store refuses on creation, as Kubernetes does."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return doc
    keep = ("name", "namespace", "labels", "annotations")
    return {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k in keep}}
