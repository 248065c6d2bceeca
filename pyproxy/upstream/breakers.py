"""A cluster's circuit breakers as Envoy reports them, computed from the live counters when asked.

Envoy's resource manager keeps, per routing priority, four resources (connections, pending requests, requests,
retries) with a maximum each; a resource is *open* when its current count has reached the maximum (the next
one would be refused: ``x-envoy-overloaded``, flag ``UO``). Its stats are gauges under
``cluster.<name>.circuit_breakers.<priority>.``: ``cx_open``, ``cx_pool_open``, ``rq_pending_open``,
``rq_open``, ``rq_retry_open`` always, and ``remaining_cx``, ``remaining_pending``, ``remaining_rq``,
``remaining_retries`` when the thresholds set ``track_remaining`` (Istio sets it on every cluster it writes).

pyproxy counts what the breakers limit where it happens (the cluster's open and connecting connections, the
streams waiting in its hosts' pools, its active requests and the retries waiting for their back-off), so
nothing here costs anything per request: the gauges are derived at scrape time (``/stats``,
``/stats/prometheus``, ``/clusters``). Every request uses the DEFAULT priority (pyproxy has no route
priorities), so the HIGH priority's resources are always empty.

``cx_pool_open`` is always 0: pyproxy has no ``max_connection_pools`` (one pool per host, unlimited as in
Envoy's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyproxy.config.model import CircuitBreakers

if TYPE_CHECKING:
    from pyproxy.upstream.cluster import ClusterState

# The resources, by the names of Envoy's remaining_* gauges, and their thresholds' field names.
RESOURCES = (("cx", "max_connections"), ("pending", "max_pending_requests"), ("rq", "max_requests"),
             ("retries", "max_retries"))
_OPEN_GAUGE = {"cx": "cx_open", "pending": "rq_pending_open", "rq": "rq_open", "retries": "rq_retry_open"}


@dataclass(frozen=True, slots=True)
class Resource:
    """One circuit-breaker resource: how many are in use (``current``) out of ``max``."""

    name: str  # cx | pending | rq | retries
    current: int
    max: int

    @property
    def open(self) -> bool:
        """At capacity: the next one is refused (Envoy's ``*_open`` gauge is 1)."""
        return self.current >= self.max

    @property
    def remaining(self) -> int:
        return max(0, self.max - self.current)


def resources(cluster: ClusterState) -> tuple[Resource, ...]:
    """The DEFAULT priority's four resources of ``cluster``, now."""
    cb = cluster.config.circuit_breakers
    pending = 0
    for host in cluster.hosts:
        pool = host.pool
        if pool is not None:
            pending += len(pool.pending)
    current = {"cx": cluster.open_connections, "pending": pending, "rq": cluster.stats.upstream_rq_active,
               "retries": cluster.retries_active}
    return tuple(Resource(name, current[name], getattr(cb, field)) for name, field in RESOURCES)


def _priority_gauges(cb: CircuitBreakers, current: dict[str, int]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for name, field in RESOURCES:
        gauge = _OPEN_GAUGE[name]
        out.append((gauge, int(current[name] >= getattr(cb, field))))
        if name == "cx":
            out.append(("cx_pool_open", 0))
    if cb.track_remaining:
        out += [(f"remaining_{name}", max(0, getattr(cb, field) - current[name])) for name, field in RESOURCES]
    return out


def gauges(cluster: ClusterState) -> list[tuple[str, int]]:
    """``(name after "cluster.<name>.circuit_breakers.", value)`` of every circuit-breaker gauge of
    ``cluster``, Envoy's names and order (``default.cx_open`` ... ``high.remaining_retries``)."""
    default = {r.name: r.current for r in resources(cluster)}
    idle = dict.fromkeys(default, 0)
    out = [(f"default.{k}", v) for k, v in _priority_gauges(cluster.config.circuit_breakers, default)]
    out += [(f"high.{k}", v) for k, v in _priority_gauges(cluster.config.high_priority_circuit_breakers, idle)]
    return out
