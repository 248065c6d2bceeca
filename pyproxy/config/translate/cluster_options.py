"""Cluster options: the upstream HTTP protocol (pyproxy needs HTTP/2), circuit breakers, outlier detection.

pyproxy only speaks HTTP/2 upstream, so a cluster must say so, in one of the ways Envoy accepts:
``typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`` with
``explicit_http_config.http2_protocol_options``, ``use_downstream_protocol_config`` (pyproxy's downstream is
always HTTP/2, so this always picks HTTP/2) or ``auto_config`` over TLS (ALPN offers h2; gRPC servers
accept it), or the deprecated Cluster field ``http2_protocol_options``. Anything else is rejected.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, enum_name, opt_seconds, typed_name, unpack, wrapped
from pyproxy.config.translate.hcm import http2_options

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
NEEDS_HTTP2 = (
    "pyproxy needs HTTP/2 upstreams; add typed_extension_protocol_options: "
    "{envoy.extensions.upstreams.http.v3.HttpProtocolOptions: "
    '{"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, '
    "explicit_http_config: {http2_protocol_options: {}}}} (see pyproxy/config/README.md)"
)


def upstream_protocol(
    ctx: Ctx, proto: Any, path: str, *, has_tls: bool
) -> tuple[m.Http2Options | None, float | None, int | None]:
    """(HTTP/2 options or None if the cluster is not HTTP/2, idle_timeout, max_requests_per_connection)."""
    before = len(ctx.problems)
    http2: m.Http2Options | None = None
    idle_timeout: float | None = 3600.0
    max_requests = wrapped(proto, "max_requests_per_connection", None)
    common: Any = None
    common_path = ""
    if proto.HasField("http2_protocol_options"):
        http2 = http2_options(ctx, proto.http2_protocol_options, join(path, "http2_protocol_options"))
    if proto.HasField("common_http_protocol_options"):
        common, common_path = proto.common_http_protocol_options, join(path, "common_http_protocol_options")
    options_path = join(path, "typed_extension_protocol_options")
    for key in sorted(proto.typed_extension_protocol_options):
        kpath = f'{options_path}["{key}"]'
        value = proto.typed_extension_protocol_options[key]
        if key != HTTP_PROTOCOL_OPTIONS or typed_name(value) != HTTP_PROTOCOL_OPTIONS:
            ctx.add(
                kpath,
                f"protocol options {key!r} ({typed_name(value)}) are not supported "
                f"(supported: {HTTP_PROTOCOL_OPTIONS})",
            )
            continue
        if proto.HasField("http2_protocol_options") or proto.HasField("common_http_protocol_options"):
            ctx.add(
                kpath,
                "cannot be combined with the deprecated Cluster fields http2_protocol_options / "
                "common_http_protocol_options",
            )
            return None, idle_timeout, max_requests
        options = unpack(value, hpo_pb2.HttpProtocolOptions)
        http2 = _http_protocol_options(ctx, options, kpath, has_tls=has_tls)
        if options.HasField("common_http_protocol_options"):
            common, common_path = (
                options.common_http_protocol_options,
                join(kpath, "common_http_protocol_options"),
            )
    if common is not None:
        ctx.check(common, common_path, {"idle_timeout", "max_requests_per_connection"})
        idle_timeout = opt_seconds(common, "idle_timeout", 3600.0)
        if common.HasField("max_requests_per_connection"):
            if max_requests is not None:
                ctx.add(
                    join(common_path, "max_requests_per_connection"),
                    "set either Cluster.max_requests_per_connection (deprecated) or this, not both",
                )
            max_requests = common.max_requests_per_connection.value
    if max_requests == 0:
        max_requests = None  # 0 means unlimited
    explained = len(ctx.problems) != before or proto.HasField("http_protocol_options")
    if http2 is None and not explained:
        ctx.add(path, f"cluster {proto.name!r}: {NEEDS_HTTP2}")
    return http2, idle_timeout, max_requests


def _http_protocol_options(ctx: Ctx, options: Any, path: str, *, has_tls: bool) -> m.Http2Options | None:
    ctx.check(
        options,
        path,
        {
            "common_http_protocol_options",
            "explicit_http_config",
            "use_downstream_protocol_config",
            "auto_config",
        },
        reasons={
            "http_filters": "upstream http filters are not supported",
            "upstream_http_protocol_options": "auto_sni and friends are not supported",
            "header_validation_config": "header_validation_config is not supported",
        },
    )
    kind = options.WhichOneof("upstream_protocol_options")
    if kind == "explicit_http_config":
        ehc, epath = options.explicit_http_config, join(path, "explicit_http_config")
        proto_kind = ehc.WhichOneof("protocol_config")
        if proto_kind == "http2_protocol_options":
            return http2_options(ctx, ehc.http2_protocol_options, join(epath, "http2_protocol_options"))
        if proto_kind is not None:
            ctx.add(
                join(epath, proto_kind),
                f"{'HTTP/1' if proto_kind == 'http_protocol_options' else 'HTTP/3'} "
                "upstreams are not supported: pyproxy speaks HTTP/2 upstream (use http2_protocol_options)",
            )
        return None
    if kind in ("use_downstream_protocol_config", "auto_config"):
        sub, spath = getattr(options, kind), join(path, kind)
        # http_protocol_options is accepted and unused: with use_downstream the downstream is always HTTP/2,
        # with auto_config pyproxy offers only h2 in ALPN.
        ctx.check(
            sub,
            spath,
            {"http_protocol_options", "http2_protocol_options"},
            reasons={
                "http3_protocol_options": "HTTP/3 is not supported",
                "alternate_protocols_cache_options": "HTTP/3 alternate protocols are not supported",
            },
        )
        if kind == "auto_config" and not has_tls:
            ctx.add(spath, "auto_config picks the protocol by ALPN and needs a TLS transport_socket")
            return None
        if sub.HasField("http2_protocol_options"):
            return http2_options(ctx, sub.http2_protocol_options, join(spath, "http2_protocol_options"))
        return m.Http2Options()
    return None


def _thresholds(ctx: Ctx, t: Any, path: str) -> m.CircuitBreakers:
    ctx.check(
        t,
        path,
        {
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "track_remaining",
        },
        reasons={
            "retry_budget": "retry budgets are not supported (use max_retries)",
            "max_connection_pools": "max_connection_pools is not supported",
        },
    )
    d = m.CircuitBreakers()
    return m.CircuitBreakers(
        max_connections=wrapped(t, "max_connections", d.max_connections),
        max_pending_requests=wrapped(t, "max_pending_requests", d.max_pending_requests),
        max_requests=wrapped(t, "max_requests", d.max_requests),
        max_retries=wrapped(t, "max_retries", d.max_retries),
        track_remaining=t.track_remaining,
    )


def circuit_breakers(ctx: Ctx, proto: Any, path: str) -> tuple[m.CircuitBreakers, m.CircuitBreakers]:
    """(DEFAULT, HIGH) priority thresholds, Envoy's defaults where unset."""
    by_priority = {0: m.CircuitBreakers(), 1: m.CircuitBreakers()}
    if not proto.HasField("circuit_breakers"):
        return by_priority[0], by_priority[1]
    cb, cpath = proto.circuit_breakers, join(path, "circuit_breakers")
    ctx.check(
        cb,
        cpath,
        {"thresholds"},
        reasons={"per_host_thresholds": "per-host circuit breakers are not supported"},
    )
    seen: set[int] = set()
    for i, t in enumerate(cb.thresholds):
        tpath = f"{join(cpath, 'thresholds')}[{i}]"
        if t.priority in seen:
            ctx.add(join(tpath, "priority"), f"duplicate thresholds for priority {enum_name(t, 'priority')}")
            continue
        seen.add(t.priority)
        if t.priority in by_priority:
            by_priority[t.priority] = _thresholds(ctx, t, tpath)
    return by_priority[0], by_priority[1]


_OUTLIER_INTS = (
    "consecutive_5xx",
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_success_rate",
    "success_rate_minimum_hosts",
    "success_rate_request_volume",
    "success_rate_stdev_factor",
    "consecutive_gateway_failure",
    "enforcing_consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate",
    "failure_percentage_threshold",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
    "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
)
_OUTLIER_DURATIONS = ("interval", "base_ejection_time", "max_ejection_time", "max_ejection_time_jitter")


def outlier_detection(ctx: Ctx, od: Any, path: str) -> m.OutlierDetection:
    ctx.check(
        od,
        path,
        {*_OUTLIER_INTS, *_OUTLIER_DURATIONS, "split_external_local_origin_errors"},
        reasons={
            "successful_active_health_check_uneject_host": "active health checking is not supported",
            "monitors": "outlier detection monitors are not supported",
            "always_eject_one_host": "always_eject_one_host is not supported",
            "detect_degraded_as_unhealthy": "detect_degraded_as_unhealthy is not supported",
        },
    )
    d = m.OutlierDetection()
    ints: dict[str, Any] = {name: wrapped(od, name, getattr(d, name)) for name in _OUTLIER_INTS}
    durations: dict[str, Any] = {
        name: opt_seconds(od, name, getattr(d, name), zero_disables=False) or 0.0
        for name in _OUTLIER_DURATIONS
    }
    if durations["max_ejection_time"] < durations["base_ejection_time"]:
        ctx.add(
            join(path, "max_ejection_time"),
            f"must not be smaller than base_ejection_time ({durations['base_ejection_time']:g}s)",
        )
    return m.OutlierDetection(
        split_external_local_origin_errors=od.split_external_local_origin_errors, **ints, **durations
    )
