"""Text for people: the control plane, what runs where (a table), the traffic paths, hints (pure string
builders)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mesh_ctl.addressing import Placement
from mesh_ctl.runtime.specs import CONTROL_PLANE, NonMeshClient
from mesh_ctl.runtime.state import ProcessRecord, State
from mesh_ctl.topology import Topology

if TYPE_CHECKING:  # `status` renders without loading the translator that in_force needs
    from mesh_ctl.runtime.in_force import InForce

PORT_COLUMNS = (("app", "APP"), ("outbound", "OUTBOUND"), ("inbound", "INBOUND"), ("admin", "ADMIN"),
                ("prometheus", "PROM"))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)]


def where_table(state: State, alive: Callable[[int], bool] | None = None) -> list[str]:
    """One row per workload: version, address, ports, and the PIDs of its app and sidecar.

    With ``alive`` (pid -> bool) each PID is followed by ``(dead)`` when it is gone.
    """
    pids: dict[tuple[str, str], int] = {(p.workload, p.role): p.pid for p in state.processes}

    def pid(workload: str, role: str) -> str:
        p = pids.get((workload, role))
        if p is None:
            return "-"
        return f"{p}" if alive is None or alive(p) else f"{p} (dead)"

    rows = []
    for w in state.workloads:
        ports = [f":{w.ports[key]}" if w.ports.get(key) is not None else "-" for key, _ in PORT_COLUMNS]
        sidecar = pid(w.name, "sidecar") if w.in_mesh else "none (outside the mesh)"
        rows.append([w.name, w.version or "-", w.address, *ports, pid(w.name, "app"), sidecar])
    titles = [title for _, title in PORT_COLUMNS]
    header = ["WORKLOAD", "VERSION", "ADDRESS", *titles, "APP PID", "SIDECAR PID"]
    return table(header, rows)


def traffic_lines(topology: Topology, placement: Placement, non_mesh: NonMeshClient | None = None,
                  force: InForce | None = None) -> list[str]:
    """Each path a call takes: app -> its sidecar -(mTLS)-> the destination sidecar -> the destination app,
    with the share of the split in force (``force``: the stored resources' effect; else the topology's);
    for the client outside the mesh: straight to the destination sidecar's inbound port, in plaintext."""
    lines = []
    for w in topology.workloads:
        src = placement.of(w.name)
        for service in topology.called_services(w):
            split = (dict(force.split(w.name, service)) if force is not None
                     else {s.name: s.weight for s in service.subsets})
            total = sum(split.values())
            groups = [(s.name, split.get(s.name, 0) / total if total else 0.0, topology.endpoints(service, s.name))
                      for s in service.subsets] or [("", 1.0, topology.endpoints(service))]
            for subset, share, endpoints in groups:
                for e in endpoints:
                    dst = placement.of(e.name)
                    label = f"{service.name} {subset}".strip()
                    lines.append(
                        f"{w.name} --h2c--> {src.at(src.outbound)} ==mTLS==> {dst.at(dst.inbound)} "
                        f"--h2c--> {e.name} {dst.at(dst.app)}   [{label}: {share * 100:.0f}%]"
                    )
    if non_mesh is not None:
        dst = placement.of(non_mesh.target_workload)
        lines.append(
            f"{non_mesh.name} (no sidecar) --h2c, plaintext--> {non_mesh.target} --h2c--> "
            f"{non_mesh.target_workload} {dst.at(dst.app)}   [outside the mesh: accepted under PERMISSIVE, "
            "refused under STRICT]"
        )
    if topology.seed is not None:
        lines.append(f"random decisions seeded: --seed {topology.seed} (each sidecar gets pyproxy --seed derived "
                     "from it and its workload name: same seed, same calls, same picks)")
    return lines


def control_plane_record(state: State) -> ProcessRecord | None:
    return next((p for p in state.processes if p.role == CONTROL_PLANE), None)


def control_plane_line(xds: str, api: str, pid: int | str, note: str = "") -> str:
    """``control plane: xDS 127.0.0.1:15010 (plain gRPC), API http://127.0.0.1:15014, pid N``."""
    return f"control plane: xDS {xds} (plain gRPC), API http://{api}, pid {pid}{note}"


def control_plane_lines(state: State) -> list[str]:
    """The control plane's line (from the state file's record) and a blank line; none with `up --static`."""
    cp = control_plane_record(state)
    if cp is None:
        return []
    restarts = f" (restarted {cp.restarts}x)" if cp.restarts else ""
    return [control_plane_line(cp.addresses.get("xds", "?"), cp.addresses.get("api", "?"), cp.pid, restarts), ""]


def prometheus_record(state: State) -> ProcessRecord | None:
    return next((p for p in state.processes if p.role == "prometheus"), None)


def prometheus_line(url: str, pid: int | str, note: str = "") -> str:
    """``prometheus: http://127.0.0.1:9090, pid N`` (the UI; its API under /api/v1/)."""
    return f"prometheus: {url}, pid {pid}{note}"


def prometheus_lines(state: State) -> list[str]:
    """The run's Prometheus line and a blank line; none when it runs none (`up --no-prometheus`)."""
    p = prometheus_record(state)
    if p is None or state.prometheus is None:
        return []
    restarts = f" (restarted {p.restarts}x)" if p.restarts else ""
    return [prometheus_line(state.prometheus, p.pid, restarts), ""]


def hints(state: State, run_dir: str) -> list[str]:
    admin = next((p.addresses["admin"] for p in state.processes if "admin" in p.addresses), None)
    prom = next((p.addresses["prometheus"] for p in state.processes if "prometheus" in p.addresses), None)
    rd = f" --run-dir {run_dir}"
    out = [f"  state, logs, certificates, bootstraps: {run_dir}"]
    if admin and prom:
        out.append(f"  curl http://{admin}/config_dump    curl http://{prom}/stats/prometheus")
    if control_plane_record(state) is not None:
        service, subsets = next(iter(state.services.items()), ("payment", ["v1", "v2"]))
        if len(subsets) >= 2:
            weights = " ".join(f"{s}={w}" for s, w in zip(subsets, (90, 10, *([0] * len(subsets))), strict=False))
            out.append(f"  mesh_ctl set-weight {service} {weights}{rd}")
        out.append(f"  mesh_ctl apply -f examples/vs-50-50.yaml{rd}    mesh_ctl get vs{rd}")
        client = next((w.name for w in state.workloads if w.ports.get("outbound")), None)
        routes = f"    mesh_ctl proxy-config routes {client}{rd}" if client else ""
        out.append(f"  mesh_ctl proxy-status{rd}{routes}")
        server = next((w.name for w in state.workloads if w.ports.get("inbound")), None)
        secret = f"    mesh_ctl proxy-config secret {server}{rd}" if server else ""
        out.append(f"  mesh_ctl mtls strict{rd}    mesh_ctl mtls permissive{rd}{secret}")
    out.append(f"  mesh_ctl status{rd}    mesh_ctl down{rd}")
    return out
