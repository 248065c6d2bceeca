"""What to run for each workload, in which order, and how to tell it is ready (pure).

Start order, in three groups (each group starts together, the next one waits until it is ready):

1. the serving apps      ``python -m payment_service.server``   ready: accepts TCP on its app port
2. every sidecar         ``python -m pyproxy -c <bootstrap>``    ready: admin ``GET /ready`` answers 200
3. the load clients      ``python -m payment_service.client``    ready: printed its first JSON report

Stopping runs the groups in reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mesh_ctl.addressing import Placement
from mesh_ctl.runtime.state import Role
from mesh_ctl.topology import Topology, Workload

ReadyKind = Literal["tcp", "http-ready", "first-report"]


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str  # unique: "<workload>" for the app, "<workload>-sidecar" for its proxy
    workload: str
    role: Role
    argv: tuple[str, ...]
    addresses: dict[str, str]  # role -> host:port it listens on (or dials, for "target")
    ready: ReadyKind
    ready_at: str | None  # host:port to probe for "tcp" / "http-ready"
    reports: bool = False  # stdout carries the client's JSON reports


def sidecar_name(workload: str) -> str:
    return f"{workload}-sidecar"


def build_specs(
    topology: Topology,
    placement: Placement,
    bootstraps: dict[str, Path],
    *,
    python: str,
    proxy_log_level: str = "info",
) -> list[list[ProcessSpec]]:
    """The three start groups (apps, sidecars, clients) for ``topology`` placed by ``placement``."""
    ws = topology.workloads
    apps = [_app(placement, w, python) for w in ws if w.app == "payment-server"]
    sidecars = [_sidecar(placement, w, bootstraps[w.name], python, proxy_log_level) for w in ws]
    clients = [_client(topology, placement, w, python) for w in ws if w.app == "payment-client"]
    return [apps, sidecars, clients]


def _app(placement: Placement, w: Workload, python: str) -> ProcessSpec:
    at = placement.of(w.name)
    listen = at.at(at.app)
    assert listen is not None  # a payment-server is always selected by a service
    return ProcessSpec(
        name=w.name, workload=w.name, role="app",
        argv=(python, "-m", "payment_service.server", "--version", w.version or "v1", "--listen", listen,
              "--name", w.name),
        addresses={"app": listen}, ready="tcp", ready_at=listen,
    )


def _sidecar(placement: Placement, w: Workload, bootstrap: Path, python: str, level: str) -> ProcessSpec:
    at = placement.of(w.name)
    addresses = {role: addr for role in ("outbound", "inbound", "admin", "prometheus")
                 if (addr := at.at(getattr(at, role))) is not None}
    return ProcessSpec(
        name=sidecar_name(w.name), workload=w.name, role="sidecar",
        argv=(python, "-m", "pyproxy", "-c", str(bootstrap), "--stats-address", addresses["prometheus"],
              "-l", level),
        addresses=addresses, ready="http-ready", ready_at=addresses["admin"],
    )


def _client(topology: Topology, placement: Placement, w: Workload, python: str) -> ProcessSpec:
    at = placement.of(w.name)
    target = at.at(at.outbound)
    assert target is not None  # a payment-client calls one service, so it has an outbound listener
    call = w.calls[0]
    service = topology.service(call.service, w.namespace)
    return ProcessSpec(
        name=w.name, workload=w.name, role="app",
        argv=(python, "-m", "payment_service.client", "--target", target,
              "--authority", f"{service.name}:{service.port}", "--rps", f"{call.rps:g}", "--duration", "0",
              "--concurrency", str(call.concurrency), "--json", "--interval", "1"),
        addresses={"target": target}, ready="first-report", ready_at=None, reports=True,
    )
