"""`mesh_ctl proxy-config endpoints`: a sidecar's ``/clusters?format=json`` as istioctl shows it, and more.

istioctl's columns come first (ENDPOINT, STATUS = the endpoint's EDS health, OUTLIER CHECK = OK or FAILED),
then minimesh's (pyproxy's extensions of Envoy's ``/clusters``, see ``pyproxy/admin/dumps.py``):

- ``RQ ACTIVE``: requests in flight to the endpoint now (Envoy's host gauge ``rq_active``);
- ``EJECTED UNTIL``: while outlier detection keeps it out, until when (local time, and how long from now;
  ``due`` once the time is up: the detector lets it back at its next interval check);
- ``EJECTION REASON``: which detector ejected it (Envoy's ``OutlierEjectionType``: ``consecutive_5xx``,
  ``consecutive_gateway_failure``, ``consecutive_local_origin_failure``, ``success_rate``,
  ``failure_percentage``) and how many times it was ejected (each ejection lasts base x times);
- ``CIRCUIT BREAKERS``: its cluster's limited resources, in use / maximum, ``OPEN`` when at the maximum (the
  next one is refused with UNAVAILABLE, ``x-envoy-overloaded``): ``cx`` connections, ``pending`` requests
  waiting for a connection, ``rq`` requests, ``retries`` in flight; ``unlimited`` when nothing is limited
  (Istio's default: 2^32-1 everywhere);
- ``CLUSTER`` last (istioctl's fourth column: long names read best at the end).

``-o short`` prints exactly istioctl's table (ENDPOINT STATUS OUTLIER CHECK CLUSTER); ``-o json``/``yaml`` print
istioctl's JSON: the ``ClusterStatus`` of every cluster with an endpoint that passes the filters (with pyproxy's
extension fields). Filters, as istioctl's: ``--cluster`` (name), ``--address``, ``--port``, ``--status`` (EDS
health: HEALTHY, UNHEALTHY, DRAINING, TIMEOUT, DEGRADED), all exact and case-insensitive.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Doc = Mapping[str, Any]
UNLIMITED = 2**31 - 1  # a limit this high limits nothing (Istio writes 2^32-1 when a DestinationRule sets none)
BREAKERS = (("cx", "max_connections"), ("pending", "max_pending_requests"), ("rq", "max_requests"),
            ("retries", "max_retries"))

SHORT_HEAD = ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
WIDE_HEAD = ["ENDPOINT", "STATUS", "OUTLIER CHECK", "RQ ACTIVE", "EJECTED UNTIL", "EJECTION REASON",
             "CIRCUIT BREAKERS", "CLUSTER"]


def get(doc: object, *keys: str, default: Any = None) -> Any:
    """``doc[key]`` for the first key present (snake_case and camelCase spellings of a field)."""
    if isinstance(doc, Mapping):
        for key in keys:
            if key in doc:
                return doc[key]
    return default


@dataclass(frozen=True, slots=True)
class Filter:
    """istioctl's ``EndpointFilter``: empty fields match everything."""

    cluster: str = ""
    address: str = ""
    port: int = 0
    status: str = ""

    def matches(self, endpoint: Endpoint) -> bool:
        return ((not self.address or endpoint.address.lower() == self.address.lower())
                and (not self.port or endpoint.port == self.port)
                and (not self.cluster or endpoint.cluster.lower() == self.cluster.lower())
                and (not self.status or endpoint.status.lower() == self.status.lower()))


@dataclass(frozen=True, slots=True)
class Breaker:
    name: str  # cx | pending | rq | retries
    current: int | None  # None: not known (a proxy that does not report it)
    max: int

    @property
    def limited(self) -> bool:
        return self.max < UNLIMITED

    @property
    def open(self) -> bool:
        return self.current is not None and self.current >= self.max

    def text(self) -> str:
        used = "?" if self.current is None else str(self.current)
        return f"{self.name} {used}/{self.max}" + (" OPEN" if self.open else "")


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    cluster: str
    status: str  # EDS health: HEALTHY, UNHEALTHY, ...
    failed_outlier_check: bool | None  # None: not known (from the control plane's EDS)
    stats: Mapping[str, int] = field(default_factory=dict)
    outlier: Mapping[str, Any] | None = None  # pyproxy's outlier_detection extension
    breakers: tuple[Breaker, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def outlier_check(self) -> str:
        return "-" if self.failed_outlier_check is None else "FAILED" if self.failed_outlier_check else "OK"

    def sort_key(self) -> tuple[Any, ...]:
        try:
            ip: tuple[int, Any] = (0, ipaddress.ip_address(self.address))
        except ValueError:
            ip = (1, self.address)
        return (ip[0], str(ip[1]) if ip[0] else int(ip[1]), self.port, self.cluster)


# ------------------------------------------------------------------------------------------------ reading


def _stats(host: Doc) -> dict[str, int]:
    """Envoy's host stats: a list of ``SimpleMetric`` (``{"name", "value" (a uint64 string, absent when 0),
    "type"}``); an older pyproxy's flat ``{name: value}`` is accepted too."""
    raw = get(host, "stats", default=[])
    if isinstance(raw, Mapping):
        return {str(k): int(v) for k, v in raw.items()}
    out: dict[str, int] = {}
    for metric in raw if isinstance(raw, list) else []:
        if isinstance(metric, Mapping) and "name" in metric:
            out[str(metric["name"])] = int(metric.get("value", 0) or 0)
    return out


def _breakers(cluster: Doc) -> tuple[Breaker, ...]:
    """The DEFAULT priority's thresholds (Envoy's ``circuit_breakers``) with what is in use now (pyproxy's
    ``circuit_breaker_state``)."""
    thresholds = get(get(cluster, "circuit_breakers", "circuitBreakers", default={}), "thresholds", default=[])
    default = next((t for t in thresholds if get(t, "priority", default="DEFAULT") in ("DEFAULT", 0)), None)
    if default is None:
        return ()
    state = get(cluster, "circuit_breaker_state", "circuitBreakerState", default={})
    out = []
    for name, key in BREAKERS:
        limit = get(default, key, "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_"))))
        if limit is None:
            continue
        current = get(get(state, name, default={}), "current")
        out.append(Breaker(name, None if current is None else int(current), int(limit)))
    return tuple(out)


def from_clusters(clusters_json: Doc) -> list[Endpoint]:
    """Every host of a proxy's ``/clusters?format=json``."""
    out = []
    for c in get(clusters_json, "cluster_statuses", "clusterStatuses", default=[]):
        name = str(get(c, "name", default=""))
        breakers = _breakers(c)
        for h in get(c, "host_statuses", "hostStatuses", default=[]):
            sock = get(get(h, "address", default={}), "socket_address", "socketAddress", default={})
            health = get(h, "health_status", "healthStatus", default={})
            out.append(Endpoint(
                address=str(get(sock, "address", default="")), port=int(get(sock, "port_value", "portValue",
                                                                            default=0)),
                cluster=name, status=str(get(health, "eds_health_status", "edsHealthStatus", default="HEALTHY")),
                failed_outlier_check=bool(get(health, "failed_outlier_check", "failedOutlierCheck", default=False)),
                stats=_stats(h), outlier=get(h, "outlier_detection", "outlierDetection"), breakers=breakers))
    return out


def from_assignments(assignments: Sequence[Doc]) -> list[Endpoint]:
    """Endpoints of ClusterLoadAssignments (what the control plane sent a proxy: no live state)."""
    out = []
    for cla in assignments:
        for locality in get(cla, "endpoints", default=[]):
            for e in get(locality, "lb_endpoints", "lbEndpoints", default=[]):
                sock = get(get(get(e, "endpoint", default={}), "address", default={}), "socket_address",
                           "socketAddress", default={})
                out.append(Endpoint(str(get(sock, "address", default="")),
                                    int(get(sock, "port_value", "portValue", default=0)),
                                    str(get(cla, "cluster_name", "clusterName", default="")),
                                    str(get(e, "health_status", "healthStatus", default="HEALTHY")), None))
    return out


def select(endpoints: Sequence[Endpoint], flt: Filter) -> list[Endpoint]:
    """istioctl's order: by address, port, cluster (addresses compared as addresses)."""
    return sorted((e for e in endpoints if flt.matches(e)), key=Endpoint.sort_key)


def matching_clusters(clusters_json: Doc, flt: Filter) -> list[Doc]:
    """istioctl's ``-o json``: each ClusterStatus with at least one host passing the filter, whole."""
    out = []
    for c in get(clusters_json, "cluster_statuses", "clusterStatuses", default=[]):
        if any(flt.matches(e) for e in from_clusters({"cluster_statuses": [c]})):
            out.append(c)
    return out


# ------------------------------------------------------------------------------------------------ rows


def _local_time(rfc3339: str) -> str:
    try:
        when = datetime.strptime(rfc3339.rstrip("Z")[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return rfc3339
    return when.astimezone().strftime("%H:%M:%S")


def _seconds(left: float) -> str:
    """Whole seconds, rounded up (``in 0s`` would read as "now"): ``29s``, ``1m05s``."""
    whole = math.ceil(left)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def ejected_until(e: Endpoint) -> str:
    o = e.outlier
    if not o or not o.get("ejected") or not o.get("ejected_until"):
        return "-"
    left = float(o.get("ejection_time_left_s", 0.0) or 0.0)
    return f"{_local_time(str(o['ejected_until']))} ({'in ' + _seconds(left) if left > 0 else 'due'})"


def ejection_reason(e: Endpoint) -> str:
    o = e.outlier
    if not o or not o.get("ejected"):
        return "-"
    times = int(o.get("times_ejected", 0) or 0)
    return f"{o.get('ejection_reason') or 'unknown'} (ejection {times})" if times else str(
        o.get("ejection_reason") or "unknown")


def breakers_text(breakers: Sequence[Breaker]) -> str:
    if not breakers:
        return "-"
    limited = [b for b in breakers if b.limited]
    if not limited:
        return "unlimited"
    return ", ".join(b.text() for b in limited)


def short_row(e: Endpoint) -> list[str]:
    return [e.endpoint, e.status, e.outlier_check, e.cluster]


def wide_row(e: Endpoint) -> list[str]:
    active = e.stats.get("rq_active")
    return [e.endpoint, e.status, e.outlier_check, "-" if active is None else str(active), ejected_until(e),
            ejection_reason(e), breakers_text(e.breakers), e.cluster]
