"""Every metric the proxy exports, declared once: Istio's standard request metrics and Envoy-style counters.

Istio metrics (names, label names and order, values and histogram buckets as in REFERENCE.md section 5):
``istio_requests_total``, ``istio_request_duration_milliseconds``, ``istio_request_bytes``,
``istio_response_bytes``. ``reporter`` is ``source`` on OUTBOUND listeners and ``destination`` on INBOUND
ones. Who is on each side comes from the node metadata (this proxy), Istio's metadata-exchange headers
(``x-envoy-peer-metadata``, the peer proxy) and the mTLS certificates (principals).

Cost on the request path: one dict lookup for the label set (the parts that only depend on the peer and the
cluster are cached), integer adds, and a bisect per histogram. Text is only produced at scrape time.
Not prometheus_client here, by measurement (``python -m bench.recording_cost``): ~0.5 us per request against
~3 us with its children cached (~10 us calling ``labels()``), ~3 % of a sidecar's CPU per request. Its
parser and a real Prometheus check this module's exposition in the tests.
"""

from __future__ import annotations

import base64
import bisect
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trio import current_time

from pyproxy.config.model import NodeInfo, RbacConfig
from pyproxy.filters.fault import FaultCounters
from pyproxy.filters.rbac import RbacCounters

if TYPE_CHECKING:
    from pyproxy.proxy.record import RecordChain, RequestRecord

ISTIO_LABELS = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
# Envoy's default histogram buckets (ms), used by Istio for all its histograms.
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
           1800000, 3600000)
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Workload:
    """The workload fields of Istio's labels (one side of a request)."""

    workload: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    cluster: str = UNKNOWN

    @classmethod
    def from_metadata(cls, meta: dict[str, object]) -> Workload:
        labels = meta.get("LABELS")
        labels = labels if isinstance(labels, dict) else {}
        name = str(meta.get("WORKLOAD_NAME") or meta.get("NAME") or UNKNOWN)
        app = str(labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN)
        version = str(labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN)
        return cls(
            workload=name,
            canonical_service=str(labels.get("service.istio.io/canonical-name") or (app if app != UNKNOWN
                                                                                    else name)),
            canonical_revision=str(labels.get("service.istio.io/canonical-revision") or
                                   (version if version != UNKNOWN else "latest")),
            namespace=str(meta.get("NAMESPACE") or UNKNOWN),
            app=app,
            version=version,
            cluster=str(meta.get("CLUSTER_ID") or UNKNOWN),
        )

    @classmethod
    def from_node(cls, node: NodeInfo) -> Workload:
        return cls.from_metadata(dict(node.metadata)) if node.metadata else cls()


_UNKNOWN_WORKLOAD = Workload()
_peer_cache: dict[bytes, Workload] = {}


def decode_peer_metadata(header: bytes | None) -> Workload:
    """Istio's ``x-envoy-peer-metadata`` (base64 protobuf Struct) -> Workload; cached by header value."""
    if not header:
        return _UNKNOWN_WORKLOAD
    cached = _peer_cache.get(header)
    if cached is not None:
        return cached
    from google.protobuf import json_format, struct_pb2

    try:
        struct = struct_pb2.Struct()
        struct.ParseFromString(base64.b64decode(header, validate=True))
        workload = Workload.from_metadata(json_format.MessageToDict(struct))
    except Exception:
        workload = _UNKNOWN_WORKLOAD
    if len(_peer_cache) > 1024:
        _peer_cache.clear()
    _peer_cache[header] = workload
    return workload


def service_of_cluster(cluster_name: str) -> str | None:
    """The service host of an Istio cluster name ``outbound|8080|v1|payment.default.svc.cluster.local``."""
    parts = cluster_name.split("|")
    if len(parts) == 4 and parts[3]:
        return parts[3]
    return None


class Series:
    __slots__ = ("count", "dur", "dur_sum", "req", "req_sum", "resp", "resp_sum")

    def __init__(self) -> None:
        n = len(BUCKETS) + 1
        self.count = 0
        self.dur = [0] * n
        self.dur_sum = 0.0
        self.req = [0] * n
        self.req_sum = 0
        self.resp = [0] * n
        self.resp_sum = 0


class ListenerCounters:
    """Envoy's ``listener.<address>.*`` counters of one listener (kept across configuration updates).

    ``downstream_cx_active`` is also the per-listener connection limit's count: a socket counts from accept
    (listener filters and TLS handshake included, as Envoy's connection balancer counts it) until it closes."""

    __slots__ = ("downstream_cx_active", "downstream_cx_destroy", "downstream_cx_overflow", "downstream_cx_total",
                 "downstream_cx_transport_socket_connect_timeout", "downstream_global_cx_overflow",
                 "downstream_pre_cx_timeout")

    def __init__(self) -> None:
        self.downstream_cx_total = 0
        self.downstream_cx_active = 0
        self.downstream_cx_destroy = 0
        self.downstream_cx_overflow = 0  # over envoy.resource_limits.listener.<name>.connection_limit
        self.downstream_global_cx_overflow = 0  # over the overload manager's global limit
        self.downstream_pre_cx_timeout = 0  # listener filters timed out
        self.downstream_cx_transport_socket_connect_timeout = 0


class HcmCounters:
    """Envoy's ``http.<stat_prefix>.*`` connection timeout counters of one connection manager."""

    __slots__ = ("downstream_cx_idle_timeout", "downstream_cx_max_duration_reached", "downstream_rq_header_timeout")

    def __init__(self) -> None:
        self.downstream_cx_idle_timeout = 0
        self.downstream_cx_max_duration_reached = 0
        self.downstream_rq_header_timeout = 0


class ProxyStats:
    """All counters of one proxy process."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], Series] = {}
        self.downstream_tls_failures = 0
        self.downstream_plaintext_refused = 0
        self.downstream_rq_total = 0
        # Connections sent a GOAWAY for too many premature stream resets (Envoy's
        # http.<prefix>.downstream_rq_too_many_premature_resets, summed over listeners).
        self.downstream_rq_too_many_premature_resets = 0
        self._prefix_cache: dict[tuple[object, ...], tuple[str, ...]] = {}
        # (HCM stat_prefix, rules_stat_prefix, shadow_rules_stat_prefix) -> counters
        self.rbac: dict[tuple[str, str, str], RbacCounters] = {}
        self.faults: dict[str, FaultCounters] = {}  # by HCM stat_prefix
        self.listeners: dict[str, ListenerCounters] = {}  # by listener name
        self.hcms: dict[str, HcmCounters] = {}  # by HCM stat_prefix

    def listener_counters(self, name: str) -> ListenerCounters:
        counters = self.listeners.get(name)
        if counters is None:
            counters = self.listeners[name] = ListenerCounters()
        return counters

    def hcm_counters(self, stat_prefix: str) -> HcmCounters:
        counters = self.hcms.get(stat_prefix)
        if counters is None:
            counters = self.hcms[stat_prefix] = HcmCounters()
        return counters

    def rbac_counters(self, config: RbacConfig, hcm_stat_prefix: str) -> RbacCounters:
        """Counters shared by every snapshot's copy of the same RBAC filter: Envoy's
        ``http.<hcm stat_prefix>.rbac.<rules_stat_prefix>{allowed,denied}`` and
        ``...rbac.<shadow_rules_stat_prefix>shadow_{allowed,denied}``."""
        key = (hcm_stat_prefix, config.stat_prefix, config.shadow_stat_prefix)
        return self.rbac.setdefault(key, RbacCounters())

    def rbac_stats(self) -> list[tuple[str, str, int]]:
        """``(hcm stat_prefix, name after "http.<hcm>.rbac.", value)`` of every RBAC counter."""
        out = []
        for (hcm, rules, shadow), c in sorted(self.rbac.items()):
            out += [(hcm, f"{rules}allowed", c.allowed), (hcm, f"{rules}denied", c.denied),
                    (hcm, f"{shadow}shadow_allowed", c.shadow_allowed),
                    (hcm, f"{shadow}shadow_denied", c.shadow_denied)]
        return out

    def fault_counters(self, hcm_stat_prefix: str) -> FaultCounters:
        """Counters shared by every fault filter of a connection manager, in every snapshot: Envoy's
        ``http.<hcm stat_prefix>.fault.*`` (its filters share one stats scope)."""
        counters = self.faults.get(hcm_stat_prefix)
        if counters is None:
            counters = self.faults[hcm_stat_prefix] = FaultCounters()
        return counters

    def fault_stats(self) -> list[tuple[str, str, str, int]]:
        """``(hcm stat_prefix, downstream cluster or "", name, value)`` of every fault counter and of the
        ``active_faults`` gauge: Envoy's ``http.<hcm>.fault.<name>`` and ``http.<hcm>.fault.<cluster>.<name>``."""
        out: list[tuple[str, str, str, int]] = []
        for hcm, c in sorted(self.faults.items()):
            out += [(hcm, "", "aborts_injected", c.aborts_injected), (hcm, "", "delays_injected", c.delays_injected),
                    (hcm, "", "faults_overflow", c.faults_overflow),
                    (hcm, "", "response_rl_injected", c.response_rl_injected),
                    (hcm, "", "active_faults", c.active_faults)]
            for cluster, (delays, aborts) in sorted(c.downstream.items()):
                out += [(hcm, cluster, "aborts_injected", aborts), (hcm, cluster, "delays_injected", delays)]
        return out

    def recorder(self, node: NodeInfo) -> Callable[[RecordChain, RequestRecord], None]:
        me = Workload.from_node(node)
        prefix_cache = self._prefix_cache
        series_map = self.series
        bisect_left = bisect.bisect_left
        buckets = BUCKETS

        def record(ctx: RecordChain, s: RequestRecord) -> None:
            self.downstream_rq_total += 1
            inbound = ctx.inbound
            cluster = s.cluster
            cluster_name = cluster.name if cluster is not None else ""
            down = s.down
            key = (inbound, s.peer_metadata, down.peer.principal if inbound else "",
                   cluster_name, s.authority)
            prefix = prefix_cache.get(key)
            if prefix is None:
                prefix = _label_prefix(ctx, me, s, cluster_name)
                if len(prefix_cache) > 4096:
                    prefix_cache.clear()
                prefix_cache[key] = prefix
            if inbound:
                security = "mutual_tls" if down.transport.secure and down.peer.principal else "none"
                dest_principal = prefix[11]
            else:
                security = UNKNOWN
                dest_principal = s.upstream_principal or prefix[11]
            grpc = s.grpc_status
            labels = (*prefix[:11], dest_principal, *prefix[12:],
                      "grpc" if s.is_grpc else "http", str(s.response_code),
                      "" if grpc is None else str(grpc), s.flags, security)
            series = series_map.get(labels)
            if series is None:
                series = series_map[labels] = Series()
            series.count += 1
            ms = (current_time() - s.start_time) * 1000.0
            series.dur[bisect_left(buckets, ms)] += 1
            series.dur_sum += ms
            rq = s.bytes_received
            series.req[bisect_left(buckets, rq)] += 1
            series.req_sum += rq
            rs = s.bytes_sent
            series.resp[bisect_left(buckets, rs)] += 1
            series.resp_sum += rs

        return record

    # ------------------------------------------------------------------------------------- exposition

    def prometheus_lines(self) -> Iterator[str]:
        series = list(self.series.items())
        yield "# HELP istio_requests_total Total requests handled by this proxy (Istio standard metric)."
        yield "# TYPE istio_requests_total counter"
        label_texts = [(_labels_text(labels), s) for labels, s in series]
        for text, s in label_texts:
            yield f"istio_requests_total{{{text}}} {s.count}"
        for name, attr, sum_attr, help_text in (
                ("istio_request_duration_milliseconds", "dur", "dur_sum", "Request duration (ms)."),
                ("istio_request_bytes", "req", "req_sum", "Request body sizes (bytes)."),
                ("istio_response_bytes", "resp", "resp_sum", "Response body sizes (bytes).")):
            yield f"# HELP {name} {help_text}"
            yield f"# TYPE {name} histogram"
            for text, s in label_texts:
                counts = getattr(s, attr)
                acc = 0
                for bound, c in zip(BUCKETS, counts, strict=False):
                    acc += c
                    yield f'{name}_bucket{{{text},le="{_fmt(bound)}"}} {acc}'
                acc += counts[-1]
                yield f'{name}_bucket{{{text},le="+Inf"}} {acc}'
                yield f"{name}_sum{{{text}}} {_fmt(getattr(s, sum_attr))}"
                yield f"{name}_count{{{text}}} {acc}"


def _label_prefix(ctx: RecordChain, me: Workload, s: RequestRecord, cluster_name: str) -> tuple[str, ...]:
    """Labels 0..19 (reporter .. destination_cluster) for this request's peer/cluster/authority."""
    peer = decode_peer_metadata(s.peer_metadata)
    authority = s.authority.decode("latin-1")
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    if ctx.inbound:
        src, dst = peer, me
        src_principal = s.down.peer.principal or UNKNOWN
        dst_principal = ctx.local_principal or UNKNOWN
        service = host
        if service and "." not in service and me.namespace != UNKNOWN:
            service = f"{service}.{me.namespace}.svc.cluster.local"
    else:
        src, dst = me, peer
        src_principal = (s.cluster.local_principal if s.cluster is not None else "") or UNKNOWN
        dst_principal = UNKNOWN
        service = service_of_cluster(cluster_name) or host
    service = service or UNKNOWN
    if _is_ip(service) or service == UNKNOWN:
        service_name, service_ns = service, UNKNOWN
    else:
        parts = service.split(".")
        service_name = parts[0]
        service_ns = parts[1] if len(parts) > 1 else dst.namespace
    return (
        "destination" if ctx.inbound else "source",
        src.workload, src.canonical_service, src.canonical_revision, src.namespace, src_principal,
        src.app, src.version, src.cluster,
        dst.workload, dst.namespace, dst_principal, dst.app, dst.version, service,
        dst.canonical_service, dst.canonical_revision, service_name, service_ns, dst.cluster,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _labels_text(values: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in zip(ISTIO_LABELS, values, strict=True))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


