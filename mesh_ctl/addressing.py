"""Where each workload of a topology lives on this machine: its loopback address and its ports.

Linux routes all of 127.0.0.0/8 to the loopback interface, so each workload gets an address of its own,
the way a pod gets its own IP: 127.0.0.10, .11, .12 ... (skipping addresses that common services use).
Every workload then uses the same ports, by Istio's convention:

    app         the service port (8080 for ``payment``)    the app serves plain gRPC (h2c) here
    15001       sidecar outbound                          the local app dials it (h2c)
    15006       sidecar inbound                           mTLS from other sidecars
    15000       sidecar admin                             /ready, /config_dump, /clusters, /stats/prometheus
    15090       sidecar Prometheus                        /stats/prometheus (the proxy's own metrics)
    15020       sidecar merged Prometheus                 /stats/prometheus: agent + proxy + app metrics
    9464        app metrics                               the app's /metrics (prometheus_client), merged by 15020

Where only 127.0.0.1 can be bound (macOS without aliases, some sandboxes) every workload shares one address
and workload ``i`` moves all of its ports up by ``i * 100`` (15000, 15100, 15200 ...; 8080, 8180 ...), so
the Istio digits stay recognisable. ``port_offset`` moves every port in both modes, and ``base_address`` the
first address, so a test or a second mesh can run beside the first. Only loopback addresses are accepted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mesh_ctl.topology import Topology

ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
PROMETHEUS_PORT = 15090
MERGED_PORT = 15020  # Istio's merged Prometheus port (agent + Envoy + app)
APP_METRICS_PORT = 9464  # the app's own metrics (OpenTelemetry's Prometheus exporter port), every workload

DEFAULT_BASE_ADDRESS = "127.0.0.10"
SHARED_ADDRESS = "127.0.0.1"
PORT_BLOCK = 100
# localhost, systemd-resolved's stub (.53) and its proxy stub (.54), Debian's hostname entry (127.0.1.1).
RESERVED_ADDRESSES = frozenset({"127.0.0.1", "127.0.0.53", "127.0.0.54", "127.0.1.1"})

AddressMode = Literal["auto", "per-workload", "shared"]
ADDRESS_MODES: tuple[AddressMode, ...] = ("auto", "per-workload", "shared")


class AddressingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class WorkloadAddresses:
    """One workload's address and ports; a port is None when that listener does not exist."""

    workload: str
    address: str
    app: int | None  # the app's server port (None: the app serves nothing, e.g. the load client)
    outbound: int | None  # sidecar outbound listener (None: the app calls no service)
    inbound: int | None  # sidecar inbound listener (None: no service selects the workload)
    admin: int
    prometheus: int
    merged: int  # sidecar's merged Prometheus endpoint (15020)
    metrics: int  # the app's own metrics (9464); the load client has them too

    def at(self, port: int | None) -> str | None:
        """``host:port`` (``[host]:port`` for IPv6), or None for a missing port."""
        if port is None:
            return None
        return f"[{self.address}]:{port}" if ":" in self.address else f"{self.address}:{port}"

    def sockets(self) -> list[tuple[str, int]]:
        """Every (role, port) something listens on for this workload."""
        roles = [("app", self.app), ("outbound", self.outbound), ("inbound", self.inbound),
                 ("admin", self.admin), ("prometheus", self.prometheus), ("merged", self.merged),
                 ("metrics", self.metrics)]
        return [(role, port) for role, port in roles if port is not None]


@dataclass(frozen=True, slots=True)
class Placement:
    mode: Literal["per-workload", "shared"]
    workloads: tuple[WorkloadAddresses, ...]

    def of(self, workload: str) -> WorkloadAddresses:
        for w in self.workloads:
            if w.workload == workload:
                return w
        raise KeyError(workload)

    def sockets(self) -> list[tuple[str, str, str, int]]:
        """(workload, role, host, port) for every listening socket of the mesh."""
        return [(w.workload, role, w.address, port) for w in self.workloads for role, port in w.sockets()]


def plan(
    topology: Topology,
    *,
    base_address: str | None = None,
    port_offset: int = 0,
    mode: AddressMode = "auto",
    probe: Callable[[str], bool] | None = None,
) -> Placement:
    """Give every workload of ``topology`` an address and ports (pure, apart from ``probe``).

    ``probe(address)`` says whether an address other than 127.0.0.1 can be bound (default:
    :func:`can_bind`); it decides the ``auto`` mode.
    """
    if mode not in ADDRESS_MODES:
        raise AddressingError(f"address mode must be one of {', '.join(ADDRESS_MODES)} (got {mode!r})")
    probe = probe or can_bind
    shared = mode == "shared"
    base = base_address or (SHARED_ADDRESS if shared else DEFAULT_BASE_ADDRESS)
    ip = _loopback(base)
    if mode == "auto":
        shared = ip.version == 6 or not probe(str(ip))
        if shared and base_address is None:
            ip = ipaddress.ip_address(SHARED_ADDRESS)
    if not shared and ip.version == 6:
        raise AddressingError("one address per workload needs IPv4 (127.0.0.0/8); use the shared mode "
                              "for ::1")
    addresses = [str(ip)] * len(topology.workloads) if shared else _allocate(ip, len(topology.workloads))
    placed = []
    for i, (w, addr) in enumerate(zip(topology.workloads, addresses, strict=True)):
        shift = port_offset + (i * PORT_BLOCK if shared else 0)
        service = topology.served_by(w)
        placed.append(WorkloadAddresses(
            workload=w.name,
            address=addr,
            app=None if service is None else _port(service.port + shift),
            outbound=_port(OUTBOUND_PORT + shift) if w.calls else None,
            inbound=None if service is None else _port(INBOUND_PORT + shift),
            admin=_port(ADMIN_PORT + shift),
            prometheus=_port(PROMETHEUS_PORT + shift),
            merged=_port(MERGED_PORT + shift),
            metrics=_port(APP_METRICS_PORT + shift),
        ))
    return Placement("shared" if shared else "per-workload", tuple(placed))


def _loopback(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise AddressingError(f"{address!r} is not an IP address") from None
    if not ip.is_loopback:
        raise AddressingError(f"{address} is not a loopback address (127.0.0.0/8 or ::1): minimesh's local "
                              "mode only listens on loopback")
    return ip


def _allocate(first: ipaddress.IPv4Address | ipaddress.IPv6Address, count: int) -> list[str]:
    out: list[str] = []
    n = int(first)
    while len(out) < count:
        ip = ipaddress.ip_address(n)
        if not ip.is_loopback:
            raise AddressingError(f"ran out of loopback addresses after {out[-1] if out else first}")
        last_octet = n & 0xFF
        if str(ip) not in RESERVED_ADDRESSES and last_octet not in (0, 255):
            out.append(str(ip))
        n += 1
    return out


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise AddressingError(f"port {port} is out of range: choose a smaller port offset")
    return port


def can_bind(address: str, port: int = 0) -> bool:
    """Whether a TCP socket can be bound to ``address:port`` (port 0: any port) right now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Like every server here: a port with only TIME_WAIT connections left counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def busy_sockets(placement: Placement) -> list[tuple[str, str, str, int]]:
    """The (workload, role, host, port) of the placement that cannot be bound now (in use, or no address)."""
    return [s for s in placement.sockets() if not can_bind(s[2], s[3])]


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False
