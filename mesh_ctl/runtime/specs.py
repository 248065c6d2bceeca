"""What to run for each workload, in which order, and how to tell it is ready (pure).

Start order, in groups (each group starts together, the next one waits until it is ready):

0. the control plane     ``python -m mesh_ctl serve ...``       ready: its API's ``GET /ready`` answers 200
1. the serving apps      ``python -m payment_service.server``   ready: accepts TCP on its app port
2. every sidecar         ``python -m pyproxy -c <bootstrap>``    ready: admin ``GET /ready`` answers 200
                                                                (with ADS: once it has its configuration
                                                                and its certificate from the CA)
3. the load clients      ``python -m payment_service.client``    ready: printed its first JSON report
   (+ with ``up --non-mesh-client``: ``legacy-client``, the same load client with no sidecar)

With a control plane each sidecar also runs its identity agent (``--ca-address <xDS address> --token-path
<run dir>/tokens/<workload>.jwt --cert-ttl <TTL>``): the supervisor writes the tokens once the control plane
is ready (:mod:`mesh_ctl.runtime.identity`). Stopping runs the groups in reverse, so the control plane stops
last. With ``up --static`` there is no group 0 (the sidecars' bootstraps hold their whole configuration).

The non-mesh client (:class:`NonMeshClient`) is a pod outside the mesh: its own loopback address (the one
after the mesh's workloads; grpcio cannot pick a source address, so its connections still come from the
kernel's choice, 127.0.0.1), no sidecar, no identity, plain gRPC (h2c) straight to the inbound port (15006) of
the first endpoint of the service the mesh's client calls (payment-v1), with that service's authority. Under
PERMISSIVE its calls succeed (the sidecar takes plaintext on the same port); under STRICT the sidecar closes
the connection during the handshake and every call fails with UNAVAILABLE. It is not in the topology: the
control plane knows nothing about it, as Istio knows nothing about a pod without a sidecar.

Seed (``up --seed N`` or the topology's ``seed``): every sidecar gets ``--seed`` (pyproxy's flag: its
per-request random decisions, weighted clusters, load balancing, back-off jitter, sampling, become
reproducible). Not N itself: :func:`sidecar_seed` derives one per sidecar from N and the workload's name, so
two sidecars of one mesh do not draw the same numbers (with one seed for all, every client sidecar would pick
the same subset for its first call, its second...), while the same N gives every sidecar the same seed run
after run. A restarted sidecar starts its sequence again.

The supervisor restarts the control plane, the apps and the sidecars when they die (``restart=True``), the way
Kubernetes restarts istiod and a kubelet restarts a pod's containers: the sidecars keep serving their last
configuration while the control plane is away and resync when it is back. The load clients are not restarted
(their summaries would start again). The control plane's addresses: ``<control-plane address>:15010+N`` (xDS,
plain gRPC) and ``:15014+N`` (the management API), N the port offset, 127.0.0.1 by default.

Metrics: every app (servers and load clients, the non-mesh one too) serves its own metrics on its ``metrics``
address (9464, ``--metrics-address``); every sidecar serves the proxy's on ``prometheus`` (15090) and, on
``merged`` (15020, ``--merged-stats-address``), the agent's, the proxy's and its app's (``--app-metrics-url``),
Istio's metrics merging.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mesh_ctl.addressing import PORT_BLOCK, RESERVED_ADDRESSES, AddressingError, Placement
from mesh_ctl.runtime.identity import token_path
from mesh_ctl.runtime.state import Role, RunDir
from mesh_ctl.topology import Topology, Workload

ReadyKind = Literal["tcp", "http-ready", "first-report"]

XDS_PORT = 15010  # istiod's plain-text xDS port
API_PORT = 15014  # istiod's monitoring/debug port; here the management API the CLI calls
DEFAULT_CONTROL_PLANE_HOST = "127.0.0.1"
CONTROL_PLANE = "control-plane"  # its process name, workload and role in state.json
NON_MESH_CLIENT = "legacy-client"  # the workload `up --non-mesh-client` adds
NON_MESH_NOTE = "outside the mesh: no sidecar, plaintext"
APPS_WITH_METRICS = frozenset({"payment-server", "payment-client"})  # apps that serve --metrics-address
DEFAULT_NON_MESH_RPS = 5.0


@dataclass(frozen=True, slots=True)
class ControlPlaneAddresses:
    """Where `mesh_ctl up` runs the control plane: ``host:15010+N`` (xDS) and ``host:15014+N`` (API)."""

    host: str
    xds_port: int
    api_port: int

    @classmethod
    def for_offset(cls, host: str | None, port_offset: int) -> ControlPlaneAddresses:
        host = host or DEFAULT_CONTROL_PLANE_HOST
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise AddressingError(f"control plane address {host!r} is not an IP address") from None
        if not ip.is_loopback:
            raise AddressingError(f"control plane address {host} is not a loopback address: its xDS port is "
                                  "plain, unauthenticated gRPC (like istiod's 15010)")
        ports = (XDS_PORT + port_offset, API_PORT + port_offset)
        if not all(1 <= p <= 65535 for p in ports):
            raise AddressingError(f"control plane ports {ports} are out of range: choose a smaller port offset")
        return cls(str(ip), *ports)

    def _join(self, port: int) -> str:
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    @property
    def xds(self) -> str:
        return self._join(self.xds_port)

    @property
    def api(self) -> str:
        return self._join(self.api_port)

    def sockets(self) -> list[tuple[str, str, str, int]]:
        """(owner, role, host, port) like :meth:`mesh_ctl.addressing.Placement.sockets`."""
        return [(CONTROL_PLANE, "xds", self.host, self.xds_port), (CONTROL_PLANE, "api", self.host, self.api_port)]


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str  # unique: "<workload>" for the app, "<workload>-sidecar" for its proxy
    workload: str
    role: Role
    argv: tuple[str, ...]
    addresses: dict[str, str]  # role -> host:port it listens on (or dials, for "target")
    ready: ReadyKind
    ready_at: str | None  # host:port to probe for "tcp" / "http-ready"
    ready_path: str = "/ready"  # what "http-ready" GETs (Prometheus: /-/ready)
    reports: bool = False  # stdout carries the client's JSON reports
    restart: bool = False  # the supervisor starts it again when it exits (control plane, apps, sidecars)
    note: str = ""  # for a load client outside the mesh: what it is (shown with its summary)


@dataclass(frozen=True, slots=True)
class NonMeshClient:
    """`up --non-mesh-client`: a load client with no sidecar calling ``target`` (a sidecar's inbound port)
    directly in plaintext, with the ``authority`` of the service behind it."""

    address: str  # its own loopback address (a pod IP)
    target: str  # host:port it dials: the inbound listener of ``target_workload``'s sidecar
    target_workload: str
    namespace: str
    authority: str  # <service>:<port>
    metrics: str  # host:port of its own metrics (9464 on its address; in the shared mode the next port block)
    rps: float = DEFAULT_NON_MESH_RPS
    concurrency: int = 1
    name: str = NON_MESH_CLIENT


def non_mesh_client(topology: Topology, placement: Placement, rps: float = DEFAULT_NON_MESH_RPS) -> NonMeshClient:
    """Where `up --non-mesh-client` points the client outside the mesh: the first endpoint (in topology order)
    of the service the first mesh client calls (``payment-v1`` in the default topology), else of any service.
    Raises :class:`AddressingError` when no workload serves anything."""
    callers = [w for w in topology.workloads if w.calls]
    services = [*(topology.called_services(callers[0]) if callers else ()), *topology.services]
    for service in services:
        for endpoint in topology.endpoints(service):
            at = placement.of(endpoint.name)
            target = at.at(at.inbound)
            if target is not None:
                address = next_address(placement)
                return NonMeshClient(address=address, target=target,
                                     target_workload=endpoint.name, namespace=service.namespace,
                                     authority=f"{service.name}:{service.port}",
                                     metrics=_join(address, _next_metrics_port(placement)), rps=rps)
    raise AddressingError("--non-mesh-client: no workload of the topology serves a service")


def next_address(placement: Placement) -> str:
    """A loopback address of its own for one more workload: in the per-workload mode the address after the
    highest one placed (skipping reserved ones, .0 and .255, as the placement does), else the shared one."""
    first = placement.workloads[0].address if placement.workloads else DEFAULT_CONTROL_PLANE_HOST
    if placement.mode == "shared":
        return first
    n = max(int(ipaddress.ip_address(w.address)) for w in placement.workloads) + 1
    while True:
        ip = ipaddress.ip_address(n)
        if not ip.is_loopback:
            raise AddressingError(f"no loopback address left after {placement.workloads[-1].address}")
        if str(ip) not in RESERVED_ADDRESSES and (n & 0xFF) not in (0, 255):
            return str(ip)
        n += 1


def _next_metrics_port(placement: Placement) -> int:
    """The app metrics port of one more workload: the first workload's (9464 + the offset), moved by one more
    port block in the shared mode, as the placement moves each workload's ports."""
    first = placement.workloads[0].metrics
    port = first + (len(placement.workloads) * PORT_BLOCK if placement.mode == "shared" else 0)
    if not 1 <= port <= 65535:
        raise AddressingError(f"port {port} is out of range: choose a smaller port offset")
    return port


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sidecar_name(workload: str) -> str:
    return f"{workload}-sidecar"


def sidecar_seed(seed: int, workload: str) -> int:
    """The ``pyproxy --seed`` of ``workload``'s sidecar in a mesh seeded with ``seed``: the first 8 bytes of
    SHA-256("<seed>/<workload>"), big-endian (0 .. 2^64-1)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{workload}".encode()).digest()[:8], "big")


def build_specs(
    topology: Topology,
    placement: Placement,
    bootstraps: dict[str, Path],
    *,
    python: str,
    proxy_log_level: str = "info",
    control_plane: ControlPlaneAddresses | None = None,
    run_dir: RunDir | None = None,
    port_offset: int = 0,
    cert_ttl: str | None = None,
    non_mesh: NonMeshClient | None = None,
) -> list[list[ProcessSpec]]:
    """The start groups for ``topology`` placed by ``placement``: [control plane], apps, sidecars, clients.

    With ``control_plane`` (then ``run_dir`` is needed too) the first group runs `mesh_ctl serve` there, and
    every sidecar's identity agent asks its CA for certificates of ``cert_ttl`` (a duration pyproxy reads,
    e.g. ``24h`` or ``6s``; None: the agent's default, 24 h). ``non_mesh`` adds the client outside the mesh
    to the clients."""
    ws = topology.workloads
    apps = [_app(placement, w, python) for w in ws if w.app == "payment-server"]
    clients = [_client(topology, placement, w, python) for w in ws if w.app == "payment-client"]
    if non_mesh is not None:
        clients.append(_non_mesh_client(non_mesh, python))
    if control_plane is None:
        if cert_ttl is not None:
            raise ValueError("a certificate TTL needs the control plane's CA (not with --static)")
        admin_token = run_dir.api_token if run_dir is not None else None
        sidecars = [_sidecar(placement, w, bootstraps[w.name], python, proxy_log_level, admin_token=admin_token,
                             seed=topology.seed)
                    for w in ws]
        return [apps, sidecars, clients]
    if run_dir is None:
        raise ValueError("the control plane needs the run dir")
    ttl = ("--cert-ttl", cert_ttl) if cert_ttl is not None else ()
    sidecars = [_sidecar(placement, w, bootstraps[w.name], python, proxy_log_level,
                         ("--ca-address", control_plane.xds, "--token-path", str(token_path(run_dir.tokens, w.name)),
                          *ttl), run_dir.api_token, topology.seed)
                for w in ws]
    return [[_control_plane(placement, control_plane, run_dir, port_offset, python)], apps, sidecars, clients]


def _control_plane(placement: Placement, cp: ControlPlaneAddresses, run_dir: RunDir, port_offset: int,
                   python: str) -> ProcessSpec:
    """`mesh_ctl serve` with the registry of this mesh: the topology `up` wrote, placed exactly as `up` placed
    it (first workload address, resolved mode, offset). No ``--certs``: the sidecars get their certificates
    from its CA (SDS), not from files; its CA directory is <run dir>/certs/ca (serve's default)."""
    first = placement.workloads[0].address if placement.workloads else DEFAULT_CONTROL_PLANE_HOST
    return ProcessSpec(
        name=CONTROL_PLANE, workload=CONTROL_PLANE, role="control-plane",
        argv=(python, "-m", "mesh_ctl", "serve", "--run-dir", str(run_dir.root), "--topology",
              str(run_dir.topology), "--base-address", first,
              "--address-mode", placement.mode, "--port-offset", str(port_offset), "--xds-address", cp.xds,
              "--api-address", cp.api),
        addresses={"xds": cp.xds, "api": cp.api, "metrics": cp.api},  # metrics: GET /metrics on the API
        ready="http-ready", ready_at=cp.api, restart=True,
    )


def _app(placement: Placement, w: Workload, python: str) -> ProcessSpec:
    at = placement.of(w.name)
    listen = at.at(at.app)
    assert listen is not None  # a payment-server is always selected by a service
    metrics = at.at(at.metrics)
    assert metrics is not None
    return ProcessSpec(
        name=w.name, workload=w.name, role="app",
        argv=(python, "-m", "payment_service.server", "--version", w.version or "v1", "--listen", listen,
              "--name", w.name, *(("--error-rate", f"{w.error_rate:g}") if w.error_rate else ()),
              "--metrics-address", metrics),
        addresses={"app": listen, "metrics": metrics}, ready="tcp", ready_at=listen, restart=True,
    )


def _sidecar(placement: Placement, w: Workload, bootstrap: Path, python: str, level: str,
             agent: tuple[str, ...] = (), admin_token: Path | None = None, seed: int | None = None) -> ProcessSpec:
    """``agent``: the identity agent's flags (the CA's address and the token file), with a control plane;
    ``admin_token``: the owner's credential, which the admin API's changing endpoints then require; ``seed``:
    the mesh's seed (the sidecar gets :func:`sidecar_seed` of it). Restarted when it dies, like a kubelet
    restarts a container."""
    at = placement.of(w.name)
    addresses = {role: addr for role in ("outbound", "inbound", "admin", "prometheus", "merged")
                 if (addr := at.at(getattr(at, role))) is not None}
    app_metrics = ("--app-metrics-url", f"http://{at.at(at.metrics)}/metrics") if w.app in APPS_WITH_METRICS else ()
    admin = ("--admin-token-file", str(admin_token)) if admin_token is not None else ()
    seeded = ("--seed", str(sidecar_seed(seed, w.name))) if seed is not None else ()
    return ProcessSpec(
        name=sidecar_name(w.name), workload=w.name, role="sidecar",
        argv=(python, "-m", "pyproxy", "-c", str(bootstrap), "--stats-address", addresses["prometheus"],
              "--merged-stats-address", addresses["merged"], *app_metrics, "-l", level, *agent, *admin, *seeded),
        addresses=addresses, ready="http-ready", ready_at=addresses["admin"], restart=True,
    )


def _client(topology: Topology, placement: Placement, w: Workload, python: str) -> ProcessSpec:
    at = placement.of(w.name)
    target = at.at(at.outbound)
    assert target is not None  # a payment-client calls one service, so it has an outbound listener
    call = w.calls[0]
    service = topology.service(call.service, w.namespace)
    metrics = at.at(at.metrics)
    assert metrics is not None
    return ProcessSpec(
        name=w.name, workload=w.name, role="app",
        argv=(python, "-m", "payment_service.client", "--target", target,
              "--authority", f"{service.name}:{service.port}", "--rps", f"{call.rps:g}", "--duration", "0",
              "--concurrency", str(call.concurrency), "--json", "--interval", "1", "--metrics-address", metrics),
        addresses={"target": target, "metrics": metrics}, ready="first-report", ready_at=None, reports=True,
    )


def _non_mesh_client(c: NonMeshClient, python: str) -> ProcessSpec:
    return ProcessSpec(
        name=c.name, workload=c.name, role="app",
        argv=(python, "-m", "payment_service.client", "--target", c.target, "--authority", c.authority,
              "--rps", f"{c.rps:g}", "--duration", "0", "--concurrency", str(c.concurrency), "--json",
              "--interval", "1", "--metrics-address", c.metrics),
        addresses={"target": c.target, "metrics": c.metrics}, ready="first-report", ready_at=None, reports=True,
        note=NON_MESH_NOTE,
    )
