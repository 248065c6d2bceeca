"""``HttpConnectionManager`` (+ its http filters, HTTP/2 options and access logs) -> model.

Routes are inline (``route_config``) or come over RDS (``rds`` with an ADS config source: the model keeps
only the name, ``rds_route_config_name``, and the runtime looks the table up per stream).
pyproxy speaks HTTP/2 only, so ``codec_type`` must be AUTO or HTTP2. The http filters are fault injection
(``envoy.filters.http.fault``), RBAC (``envoy.filters.http.rbac``) and the router
(``envoy.filters.http.router``), which must be last, as Envoy requires of a terminal filter. A filter
marked ``is_optional`` that pyproxy does not have is skipped with a warning, which is what Envoy does for
an optional filter whose extension is not compiled in.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_http_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import (
    Ctx,
    data_source,
    enum_name,
    opt_seconds,
    struct_to_python,
    typed_name,
    unpack,
    wrapped,
)
from pyproxy.config.translate.dynamic import ADS_SOURCE, config_source
from pyproxy.config.translate.fault import FAULT, FAULT_TYPE, fault_filter
from pyproxy.config.translate.rbac import RBAC, RBAC_TYPE, rbac_filter
from pyproxy.config.translate.routes import route_configuration

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
_ROUTER_NAMES = {ROUTER, "envoy.router"}
_ACCESS_LOG_TYPES = {
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": "stdout",
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog": "stderr",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog": "file",
}
_HTTP2_FIELDS = {
    "hpack_table_size",
    "max_concurrent_streams",
    "initial_stream_window_size",
    "initial_connection_window_size",
    "max_outbound_frames",
    "max_outbound_control_frames",
    "max_consecutive_inbound_frames_with_empty_payload",
    "max_inbound_priority_frames_per_stream",
    "max_inbound_window_update_frames_per_data_frame_sent",
    "connection_keepalive",
}


def http2_options(ctx: Ctx, opts: Any, path: str) -> m.Http2Options:
    """``envoy.config.core.v3.Http2ProtocolOptions`` with Envoy's defaults."""
    ctx.check(
        opts,
        path,
        _HTTP2_FIELDS,
        reasons={
            "allow_connect": "CONNECT is not supported",
            "allow_metadata": "METADATA frames are not supported",
            "custom_settings_parameters": "custom SETTINGS are not supported",
        },
    )
    d = m.Http2Options()
    interval = timeout = None
    jitter = d.connection_keepalive_interval_jitter
    if opts.HasField("connection_keepalive"):
        ka, kpath = opts.connection_keepalive, join(path, "connection_keepalive")
        ctx.check(ka, kpath, {"interval", "timeout", "interval_jitter"})
        interval = opt_seconds(ka, "interval", None)
        timeout = opt_seconds(ka, "timeout", None)
        if ka.HasField("interval_jitter"):
            jitter = ka.interval_jitter.value
    return m.Http2Options(
        max_concurrent_streams=wrapped(opts, "max_concurrent_streams", d.max_concurrent_streams),
        initial_stream_window_size=wrapped(opts, "initial_stream_window_size", d.initial_stream_window_size),
        initial_connection_window_size=wrapped(
            opts, "initial_connection_window_size", d.initial_connection_window_size
        ),
        max_outbound_frames=wrapped(opts, "max_outbound_frames", d.max_outbound_frames),
        max_outbound_control_frames=wrapped(
            opts, "max_outbound_control_frames", d.max_outbound_control_frames
        ),
        max_consecutive_inbound_frames_with_empty_payload=wrapped(
            opts,
            "max_consecutive_inbound_frames_with_empty_payload",
            d.max_consecutive_inbound_frames_with_empty_payload,
        ),
        max_inbound_priority_frames_per_stream=wrapped(
            opts, "max_inbound_priority_frames_per_stream", d.max_inbound_priority_frames_per_stream
        ),
        max_inbound_window_update_frames_per_data_frame_sent=wrapped(
            opts,
            "max_inbound_window_update_frames_per_data_frame_sent",
            d.max_inbound_window_update_frames_per_data_frame_sent,
        ),
        connection_keepalive_interval=interval,
        connection_keepalive_timeout=timeout,
        connection_keepalive_interval_jitter=jitter,
        hpack_table_size=wrapped(opts, "hpack_table_size", d.hpack_table_size),
    )


def http_connection_manager(ctx: Ctx, proto: Any, path: str) -> m.HttpConnectionManager | None:
    before = len(ctx.problems)
    ctx.check(
        proto,
        path,
        {
            "codec_type",
            "stat_prefix",
            "route_config",
            "rds",
            "http_filters",
            "http2_protocol_options",
            "stream_idle_timeout",
            "request_timeout",
            "request_headers_timeout",
            "max_request_headers_kb",
            "common_http_protocol_options",
            "server_name",
            "server_header_transformation",
            "access_log",
            "drain_timeout",
            "generate_request_id",
            "use_remote_address",
            "xff_num_trusted_hops",
        },
        empty_ok={"http_protocol_options"},
        reasons={
            "scoped_routes": "scoped routes are not supported; use an inline route_config",
            "upgrade_configs": "upgrades (websocket, CONNECT) are not supported: pyproxy proxies gRPC",
            "http_protocol_options": "HTTP/1 options do not apply: pyproxy serves HTTP/2 only",
            "http3_protocol_options": "HTTP/3 is not supported",
            "tracing": "tracing is not supported",
        },
    )
    codec = enum_name(proto, "codec_type")
    if codec not in ("AUTO", "HTTP2"):
        ctx.add(
            join(path, "codec_type"),
            f"{codec} is not supported (supported: AUTO, HTTP2): pyproxy serves HTTP/2 (gRPC) only",
        )
    filters = _http_filters(ctx, proto.http_filters, join(path, "http_filters"))
    route_config = None
    rds_name = None
    if proto.HasField("route_config"):
        route_config = route_configuration(
            ctx, proto.route_config, join(path, "route_config"), validate_clusters_default=True
        )
    elif proto.HasField("rds"):
        rds_name = _rds(ctx, proto.rds, join(path, "rds"))
    http2 = m.Http2Options()
    if proto.HasField("http2_protocol_options"):
        http2 = http2_options(ctx, proto.http2_protocol_options, join(path, "http2_protocol_options"))
    idle_timeout: float | None = 3600.0
    max_stream_duration: float | None = None
    max_connection_duration: float | None = None
    underscores = "ALLOW"
    if proto.HasField("common_http_protocol_options"):
        cpath = join(path, "common_http_protocol_options")
        chpo = proto.common_http_protocol_options
        ctx.check(chpo, cpath, {"idle_timeout", "headers_with_underscores_action", "max_stream_duration",
                                "max_connection_duration"})
        idle_timeout = opt_seconds(chpo, "idle_timeout", 3600.0)
        max_stream_duration = opt_seconds(chpo, "max_stream_duration", None)
        max_connection_duration = opt_seconds(chpo, "max_connection_duration", None)
        underscores = enum_name(chpo, "headers_with_underscores_action")
    access_logs = tuple(
        log
        for log in (
            access_log(ctx, a, f"{join(path, 'access_log')}[{i}]") for i, a in enumerate(proto.access_log)
        )
        if log is not None
    )
    if len(ctx.problems) != before:
        return None
    return m.HttpConnectionManager(
        stat_prefix=proto.stat_prefix,
        route_config=route_config,
        rds_route_config_name=rds_name,
        http_filters=filters,
        http2=http2,
        codec_type="HTTP2" if codec == "HTTP2" else "AUTO",
        stream_idle_timeout=opt_seconds(proto, "stream_idle_timeout", m.DEFAULT_STREAM_IDLE_TIMEOUT),
        request_timeout=opt_seconds(proto, "request_timeout", None),
        max_request_headers_kb=wrapped(proto, "max_request_headers_kb", m.DEFAULT_MAX_REQUEST_HEADERS_KB),
        server_name=proto.server_name or "envoy",
        server_header_transformation=enum_name(proto, "server_header_transformation"),  # type: ignore[arg-type]
        access_logs=access_logs,
        drain_timeout=opt_seconds(proto, "drain_timeout", 5.0, zero_disables=False) or 0.0,
        generate_request_id=wrapped(proto, "generate_request_id", True),
        use_remote_address=wrapped(proto, "use_remote_address", False),
        xff_num_trusted_hops=proto.xff_num_trusted_hops,
        idle_timeout=idle_timeout,
        max_stream_duration=max_stream_duration,
        max_connection_duration=max_connection_duration,
        request_headers_timeout=opt_seconds(proto, "request_headers_timeout", None),
        headers_with_underscores_action=underscores,  # type: ignore[arg-type]
    )


def _rds(ctx: Ctx, rds: Any, path: str) -> str | None:
    """``Rds`` -> the route configuration name to subscribe to over ADS."""
    if not ctx.ads:
        ctx.add(path, "rds needs dynamic_resources.ads_config (routes come over ADS); or use an inline route_config")
        return None
    ctx.check(rds, path, {"config_source", "route_config_name"})
    if not rds.route_config_name:
        ctx.add(join(path, "route_config_name"), "is required")
    if rds.HasField("config_source"):
        config_source(ctx, rds.config_source, join(path, "config_source"))
    else:
        ctx.add(join(path, "config_source"), f"is required: {ADS_SOURCE}")
    return rds.route_config_name or None


def _http_filters(ctx: Ctx, filters: Any, path: str) -> tuple[m.HttpFilter, ...]:
    out: list[m.HttpFilter] = []
    if not len(filters):
        ctx.add(path, f"must not be empty: end the list with {ROUTER}")
        return ()
    for i, f in enumerate(filters):
        fpath = f"{path}[{i}]"
        ctx.check(
            f,
            fpath,
            {"name", "typed_config", "is_optional"},
            reasons={
                "config_discovery": "filter config discovery (ECDS) is not supported",
                "disabled": "disabled filters are not supported",
            },
        )
        type_name = typed_name(f.typed_config) if f.HasField("typed_config") else ""
        is_router = type_name == ROUTER_TYPE or (not type_name and f.name in _ROUTER_NAMES)
        if type_name == RBAC_TYPE:
            tpath = join(fpath, "typed_config")
            rbac = rbac_filter(ctx, unpack(f.typed_config, rbac_http_pb2.RBAC), tpath)
            if i == len(filters) - 1:
                ctx.add(fpath, f"the last http filter must be {ROUTER}")
            out.append(m.HttpFilter(name=f.name or RBAC, type_url=f"type.googleapis.com/{RBAC_TYPE}", config=rbac))
            continue
        if type_name == FAULT_TYPE:
            # An empty HTTPFault is valid: no fault unless a route's typed_per_filter_config names one.
            tpath = join(fpath, "typed_config")
            fault = fault_filter(ctx, unpack(f.typed_config, fault_pb2.HTTPFault), tpath)
            if i == len(filters) - 1:
                ctx.add(fpath, f"the last http filter must be {ROUTER}")
            out.append(m.HttpFilter(name=f.name or FAULT, type_url=f"type.googleapis.com/{FAULT_TYPE}", config=fault))
            continue
        if not is_router:
            what = f"http filter {f.name!r}" + (f" ({type_name})" if type_name else "")
            if f.is_optional:
                ctx.warnings.append(f"{fpath}: optional {what} is not supported by pyproxy: skipped")
                continue
            ctx.add(fpath, f"{what} is not supported by pyproxy (supported: {FAULT}, {RBAC}, {ROUTER})")
            continue
        config = m.RouterConfig()
        if type_name:
            tpath = join(fpath, "typed_config")
            router = unpack(f.typed_config, router_pb2.Router)
            ctx.check(router, tpath, {"suppress_envoy_headers", "start_child_span", "dynamic_stats"})
            config = m.RouterConfig(suppress_envoy_headers=router.suppress_envoy_headers)
        if i != len(filters) - 1:
            ctx.add(fpath, f"{ROUTER} is a terminal filter and must be the last http filter")
        out.append(
            m.HttpFilter(name=f.name or ROUTER, type_url=f"type.googleapis.com/{ROUTER_TYPE}", config=config)
        )
    if not out:
        ctx.add(path, f"has no {ROUTER}: the last http filter must be the router")
    return tuple(out)


def access_log(ctx: Ctx, al: Any, path: str) -> m.AccessLog | None:
    """``envoy.config.accesslog.v3.AccessLog`` with a stdout/stderr/file logger."""
    ctx.check(al, path, {"name", "typed_config"}, reasons={"filter": "access log filters are not supported"})
    if not al.HasField("typed_config"):
        ctx.add(path, "typed_config is required (StdoutAccessLog, StderrAccessLog or FileAccessLog)")
        return None
    tpath = join(path, "typed_config")
    type_name = typed_name(al.typed_config)
    sink = _ACCESS_LOG_TYPES.get(type_name)
    if sink is None:
        ctx.add(
            tpath,
            f"access logger {type_name!r} is not supported "
            f"(supported: {', '.join(sorted(_ACCESS_LOG_TYPES))})",
        )
        return None
    if sink == "file":
        fal = unpack(al.typed_config, file_pb2.FileAccessLog)
        ctx.check(
            fal,
            tpath,
            {"path", "log_format", "format", "json_format"},
            reasons={"typed_json_format": "typed_json_format is not supported (use log_format.json_format)"},
        )
        if fal.HasField("log_format"):
            text, json_fields = _log_format(ctx, fal.log_format, join(tpath, "log_format"))
        elif fal.HasField("json_format"):
            text, json_fields = None, _json_format(ctx, fal.json_format, join(tpath, "json_format"))
        else:
            text, json_fields = fal.format or None, None
        return m.AccessLog(sink="file", path=fal.path, format=text, json_format=json_fields)
    cls = stream_pb2.StdoutAccessLog if sink == "stdout" else stream_pb2.StderrAccessLog
    sal = unpack(al.typed_config, cls)
    ctx.check(sal, tpath, {"log_format"})
    text, json_fields = (None, None)
    if sal.HasField("log_format"):
        text, json_fields = _log_format(ctx, sal.log_format, join(tpath, "log_format"))
    return m.AccessLog(sink=sink, format=text, json_format=json_fields)  # type: ignore[arg-type]


def _log_format(ctx: Ctx, fmt: Any, path: str) -> tuple[str | None, tuple[tuple[str, str], ...] | None]:
    """``SubstitutionFormatString``: text (inline or file) or a flat JSON format."""
    ctx.check(
        fmt,
        path,
        {"text_format", "text_format_source", "json_format"},
        reasons={"formatters": "custom formatter extensions are not supported"},
    )
    kind = fmt.WhichOneof("format")
    if kind == "text_format":
        return fmt.text_format, None
    if kind == "text_format_source":
        data, _ = data_source(ctx, fmt.text_format_source, join(path, "text_format_source"), "log format")
        return (data.decode(errors="replace") if data is not None else None), None
    if kind == "json_format":
        return None, _json_format(ctx, fmt.json_format, join(path, "json_format"))
    return None, None


def _json_format(ctx: Ctx, struct: Any, path: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for key, value in struct_to_python(struct).items():
        if not isinstance(value, str):
            ctx.add(
                join(path, key), "only string values are supported in json_format (no nesting or numbers)"
            )
            continue
        out.append((key, value))
    return tuple(out)
