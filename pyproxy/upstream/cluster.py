"""Clusters at run time: hosts, health, load balancer, pools, stats; kept across config snapshots.

:class:`ClusterManager.update` is called with every new snapshot. A cluster whose configuration did not
change keeps its :class:`ClusterState` (hosts, pools, open connections, counters), so a weight change in a
route never drops a connection. Changed clusters get a new state; the old one drains (streams in flight
finish, then its connections close).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from pyproxy.config.model import Cluster, Endpoint, HealthStatus, SocketAddress
from pyproxy.http2.connection import H2Settings
from pyproxy.tls import local_principal
from pyproxy.upstream.lb import LoadBalancer, make_load_balancer
from pyproxy.upstream.outlier import HostOutlierState, OutlierDetector
from pyproxy.upstream.pool import HostPool

if TYPE_CHECKING:
    from pyproxy.upstream.interfaces import UpstreamRuntime

log = logging.getLogger("pyproxy.upstream")

_UNHEALTHY = frozenset({HealthStatus.UNHEALTHY, HealthStatus.DRAINING, HealthStatus.TIMEOUT})
_FAMILIES = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}


def _order_by_family(infos: list[Any], lookup_family: str) -> list[Any]:
    """Envoy's dns_lookup_family: AUTO prefers IPv6, V4_PREFERRED prefers IPv4, ALL keeps both."""
    if lookup_family == "V4_PREFERRED":
        v4 = [i for i in infos if i[0] == socket.AF_INET]
        return v4 or infos
    if lookup_family == "AUTO":
        v6 = [i for i in infos if i[0] == socket.AF_INET6]
        return v6 or infos
    return infos


@dataclass(slots=True)
class ClusterStats:
    upstream_rq_total: int = 0
    upstream_rq_active: int = 0
    upstream_rq_pending_overflow: int = 0
    upstream_rq_timeout: int = 0
    upstream_rq_2xx: int = 0
    upstream_rq_4xx: int = 0
    upstream_rq_5xx: int = 0
    upstream_cx_total: int = 0
    upstream_cx_connect_fail: int = 0
    upstream_cx_overflow: int = 0
    upstream_rq_retry: int = 0
    upstream_rq_retry_overflow: int = 0
    upstream_rq_per_try_timeout: int = 0


class Host:
    """One upstream endpoint and its counters (used by the load balancers)."""

    address: SocketAddress

    __slots__ = ("active_requests", "address", "connect_failures", "cx_total", "ejected", "endpoint", "health",
                 "hostname", "metadata", "outlier", "pool", "rq_error", "rq_success", "rq_total", "weight")

    def __init__(self, address: SocketAddress, endpoint: Endpoint | None = None) -> None:
        self.address = address
        self.endpoint = endpoint
        self.weight = endpoint.load_balancing_weight if endpoint else 1
        self.health = endpoint.health_status if endpoint else HealthStatus.UNKNOWN
        self.hostname = endpoint.hostname if endpoint else ""
        self.metadata = endpoint.metadata if endpoint else ()
        self.active_requests = 0
        # Envoy's per-host stats (/clusters): rq_total counts streams started on a connection to the host,
        # rq_success/rq_error their responses (5xx, and trailers-only gRPC errors Envoy maps to 5xx, are errors).
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.cx_total = 0
        self.connect_failures = 0
        self.pool: HostPool | None = None
        self.ejected = False  # by outlier detection
        self.outlier: HostOutlierState | None = None

    @property
    def healthy(self) -> bool:
        return self.health not in _UNHEALTHY and not self.ejected

    def __repr__(self) -> str:
        return f"<Host {self.address} w={self.weight} active={self.active_requests}>"


class ClusterState:
    name: str

    def __init__(self, runtime: UpstreamRuntime, config: Cluster) -> None:
        self.runtime = runtime
        self.config = config
        self.name = config.name
        self.stats = ClusterStats()
        self.lb: LoadBalancer = make_load_balancer(config.lb_policy, config.least_request_choice_count,
                                                   config.active_request_bias)
        self.ssl_context: ssl.SSLContext | None = runtime.ssl_context(config.tls) if config.tls else None
        self.local_principal = local_principal(config.tls)
        h2 = config.http2
        self.h2_settings = H2Settings(initial_window=h2.initial_stream_window_size,
                                      initial_connection_window=h2.initial_connection_window_size,
                                      max_concurrent_streams=h2.max_concurrent_streams,
                                      header_table_size=h2.hpack_table_size)
        self.hosts: list[Host] = []
        self.open_connections = 0
        self.retries_active = 0  # circuit breaker max_retries counts retries in flight
        self.address_family = _FAMILIES.get(config.dns_lookup_family, 0)
        self._healthy: list[Host] = []
        self.set_hosts(self._static_hosts())
        self._dns_scope: trio.CancelScope | None = None
        self.outlier: OutlierDetector | None = None
        if config.outlier_detection is not None:
            self.outlier = OutlierDetector(config.outlier_detection, lambda: self.hosts, runtime.timers,
                                           runtime.rng, self._recompute_healthy, runtime.background_rng)

    def _static_hosts(self) -> list[Host]:
        hosts: list[Host] = []
        la = self.config.load_assignment
        if la is None:
            return hosts
        for locality in la.localities:
            for ep in locality.endpoints:
                hosts.append(Host(ep.address, ep))
        return hosts

    def set_hosts(self, hosts: Iterable[Host]) -> None:
        """Replace the host set, keeping the state (pools, counters) of hosts that stay."""
        old = {(h.address.host, h.address.port): h for h in self.hosts}
        new: list[Host] = []
        for h in hosts:
            prev = old.pop((h.address.host, h.address.port), None)
            if prev is not None:
                prev.weight = h.weight
                prev.health = h.health
                prev.metadata = h.metadata
                new.append(prev)
            else:
                new.append(h)
        for gone in old.values():
            if gone.pool is not None:
                gone.pool.drain()
        self.hosts = new
        self._recompute_healthy()

    def _recompute_healthy(self) -> None:
        self._healthy = [h for h in self.hosts if h.healthy and h.weight > 0]

    @property
    def needs_dns(self) -> bool:
        return self.config.discovery_type in ("STRICT_DNS", "LOGICAL_DNS")

    def pick_host(self, rng: random.Random) -> Host | None:
        """A host by the load balancer, honouring the panic threshold; None when there is none."""
        healthy = self._healthy
        hosts = self.hosts
        if not hosts:
            return None
        if len(healthy) * 100 < len(hosts) * self.config.healthy_panic_threshold or not healthy:
            candidates = [h for h in hosts if h.weight > 0] if len(healthy) < len(hosts) else healthy
            if not candidates:
                return None
            return self.lb.pick(candidates, rng)  # type: ignore[return-value]
        return self.lb.pick(healthy, rng)  # type: ignore[return-value]

    def pool_for(self, host: Host) -> HostPool:
        pool = host.pool
        if pool is None:
            pool = host.pool = HostPool(self.runtime, self, host)
        return pool

    async def resolve_forever(self) -> None:
        """STRICT_DNS / LOGICAL_DNS: resolve the endpoints' names now and every dns_refresh_rate."""
        while True:
            await self._resolve_once()
            await trio.sleep(self.config.dns_refresh_rate)

    async def _resolve_once(self) -> None:
        hosts: list[Host] = []
        la = self.config.load_assignment
        if la is None:
            return
        for locality in la.localities:
            for ep in locality.endpoints:
                family = _FAMILIES.get(self.config.dns_lookup_family, 0)
                try:
                    infos = await trio.socket.getaddrinfo(ep.address.host, ep.address.port, family=family,
                                                          type=socket.SOCK_STREAM)
                except OSError as e:
                    log.warning("cluster %s: cannot resolve %s: %s", self.name, ep.address.host, e)
                    continue
                seen: set[str] = set()
                infos = _order_by_family(infos, self.config.dns_lookup_family)
                for info in infos:
                    ip = str(info[4][0])
                    if ip in seen:
                        continue
                    seen.add(ip)
                    hosts.append(Host(SocketAddress(ip, ep.address.port), ep))
                    if self.config.discovery_type == "LOGICAL_DNS":
                        break
        if hosts or not self.hosts:
            self.set_hosts(hosts)

    def reconfigure(self, config: Cluster) -> None:
        """Take ``config`` which differs from the current one only in endpoints and/or TLS material."""
        tls_changed = config.tls != self.config.tls
        self.config = config
        if tls_changed:
            self.ssl_context = self.runtime.ssl_context(config.tls) if config.tls else None
            self.local_principal = local_principal(config.tls)
        if not self.needs_dns:
            self.set_hosts(self._static_hosts())

    def drain(self) -> None:
        if self.outlier is not None:
            self.outlier.close()
        if self._dns_scope is not None:
            self._dns_scope.cancel()
        for h in self.hosts:
            if h.pool is not None:
                h.pool.drain()


def _only_endpoints_or_tls_changed(old: Cluster, new: Cluster) -> bool:
    return dataclasses.replace(old, load_assignment=new.load_assignment, tls=new.tls) == new


class ClusterManager:
    def __init__(self, runtime: UpstreamRuntime) -> None:
        self.runtime = runtime
        self.clusters: dict[str, ClusterState] = {}

    def get(self, name: str) -> ClusterState | None:
        return self.clusters.get(name)

    def update(self, configs: dict[str, Cluster]) -> None:
        new: dict[str, ClusterState] = {}
        for name, cfg in configs.items():
            old = self.clusters.get(name)
            if old is not None and old.config == cfg:
                new[name] = old
                continue
            if old is not None and _only_endpoints_or_tls_changed(old.config, cfg):
                # EDS updates and certificate rotation (SDS) change a cluster in place, as in Envoy: hosts that
                # stay keep their connections; new connections use the new certificate; nothing is reset.
                old.reconfigure(cfg)
                new[name] = old
                continue
            state = ClusterState(self.runtime, cfg)
            if old is not None:
                # Same cluster, new settings: keep the host objects' counters where addresses match.
                if not state.needs_dns:
                    state.set_hosts(state.hosts)
                old.drain()
            new[name] = state
            if state.needs_dns:
                self.runtime.spawn(self._run_dns, state)
        for name, old in self.clusters.items():
            if name not in new:
                old.drain()
        self.clusters = new

    async def _run_dns(self, state: ClusterState) -> None:
        with trio.CancelScope() as scope:
            state._dns_scope = scope
            await state.resolve_forever()
