"""Bootstrap-level pieces: ``node``, ``admin`` and ``layered_runtime``."""

from __future__ import annotations

from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, socket_address, struct_to_python, typed_name, unpack
from pyproxy.config.translate.hcm import access_log


def node_info(ctx: Ctx, node: Any, path: str) -> m.NodeInfo:
    """``envoy.config.core.v3.Node``; metadata (Istio's NAME, NAMESPACE, LABELS...) as plain Python data."""
    ctx.check(
        node,
        path,
        {
            "id",
            "cluster",
            "metadata",
            "locality",
            "user_agent_name",
            "user_agent_version",
            "user_agent_build_version",
            "client_features",
        },
    )
    if node.HasField("locality"):
        ctx.check(node.locality, join(path, "locality"), {"region", "zone", "sub_zone"})
    metadata = tuple(struct_to_python(node.metadata).items()) if node.HasField("metadata") else ()
    return m.NodeInfo(
        id=node.id,
        cluster=node.cluster,
        metadata=metadata,
        region=node.locality.region,
        zone=node.locality.zone,
        sub_zone=node.locality.sub_zone,
    )


def admin_config(ctx: Ctx, admin: Any, path: str) -> m.AdminConfig:
    ctx.check(
        admin,
        path,
        {"access_log", "access_log_path", "address"},
        reasons={
            "socket_options": "socket options are not supported",
            "allow_paths": "allow_paths is not supported",
            "profile_path": "profiling is not supported",
        },
    )
    address = None
    if admin.HasField("address"):
        address, _ = socket_address(
            ctx, admin.address, join(path, "address"), require_ip=True, allow_port_zero=True, what="admin"
        )
    logs = tuple(
        log
        for log in (
            access_log(ctx, a, f"{join(path, 'access_log')}[{i}]") for i, a in enumerate(admin.access_log)
        )
        if log is not None
    )
    return m.AdminConfig(address=address, access_log_path=admin.access_log_path or None, access_logs=logs)


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    # Envoy's ProtoLayer::walkProtoValue: a map that is empty or has a numerator/denominator is one value
    # (a FractionalPercent), not a level of keys.
    if isinstance(value, dict) and prefix and (not value or "numerator" in value or "denominator" in value):
        out[prefix] = value
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, float) and value.is_integer():
        out[prefix] = int(value)  # Struct numbers are doubles; Envoy reads integral values as integers
    else:
        out[prefix] = value


def layered_runtime(ctx: Ctx, lr: Any, path: str) -> dict[str, object]:
    """Static layers merged in order (later wins), keys flattened with dots as Envoy does."""
    ctx.check(lr, path, {"layers"})
    merged: dict[str, object] = {}
    for i, layer in enumerate(lr.layers):
        lpath = f"{join(path, 'layers')}[{i}]"
        # admin_layer is accepted: it only holds what /runtime_modify writes, which pyproxy does not offer.
        ctx.check(
            layer,
            lpath,
            {"name", "static_layer", "admin_layer"},
            reasons={
                "disk_layer": "disk runtime layers are not supported (use static_layer)",
                "rtds_layer": "runtime discovery (RTDS) is not supported (use static_layer)",
            },
        )
        if layer.HasField("static_layer"):
            _flatten("", struct_to_python(layer.static_layer), merged)
    return merged


_DOWNSTREAM_CONNECTIONS_TYPE = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
GLOBAL_CX_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"


def connection_limits(ctx: Ctx, runtime: dict[str, object], path: str) -> int | None:
    """Check the runtime keys of connection limits; return the runtime's global limit, if any.

    ``envoy.resource_limits.listener.<listener name>.connection_limit`` and
    ``overload.global_downstream_max_connections`` must be non-negative integers. Envoy reads a runtime value
    that is not a number as "unset" and goes on without a limit; pyproxy refuses the bootstrap instead, since
    a limit that silently does nothing is what these keys exist to prevent."""
    global_limit: int | None = None
    for key, value in sorted(runtime.items()):
        is_listener = key.startswith(m.LISTENER_LIMIT_PREFIX) and key.endswith(m.LISTENER_LIMIT_SUFFIX)
        if not is_listener and key != m.GLOBAL_LIMIT_RUNTIME_KEY:
            continue
        number = value
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)  # Istio writes its global limit as the string "2147483647"
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            ctx.add(f"{path}: {key}", f"a connection limit must be a non-negative integer, got {value!r}")
            continue
        runtime[key] = number
        if key == m.GLOBAL_LIMIT_RUNTIME_KEY:
            global_limit = number
    return global_limit


def overload_manager(ctx: Ctx, om: Any, path: str) -> int | None:
    """The overload manager's global downstream connection limit (the only resource monitor pyproxy has);
    None when not configured. ``refresh_interval`` is accepted and has no use: the count is exact."""
    ctx.check(om, path, {"refresh_interval", "resource_monitors"},
              reasons={"actions": "overload actions are not supported (only the global connection limit is)",
                       "loadshed_points": "load shed points are not supported",
                       "buffer_factory_config": "buffer_factory_config is not supported"})
    limit: int | None = None
    for i, rm in enumerate(om.resource_monitors):
        rpath = f"{join(path, 'resource_monitors')}[{i}]"
        ctx.check(rm, rpath, {"name", "typed_config"})
        type_name = typed_name(rm.typed_config) if rm.HasField("typed_config") else ""
        if type_name != _DOWNSTREAM_CONNECTIONS_TYPE:
            ctx.add(rpath, f"resource monitor {rm.name!r} ({type_name or 'no typed_config'}) is not supported "
                           f"(supported: {GLOBAL_CX_MONITOR}, {_DOWNSTREAM_CONNECTIONS_TYPE})")
            continue
        from envoy.extensions.resource_monitors.downstream_connections.v3 import downstream_connections_pb2

        config = unpack(rm.typed_config, downstream_connections_pb2.DownstreamConnectionsConfig)
        cpath = join(rpath, "typed_config")
        ctx.check(config, cpath, {"max_active_downstream_connections"})
        value = config.max_active_downstream_connections
        if value <= 0:  # the proto's rule: int64 gt 0
            ctx.add(join(cpath, "max_active_downstream_connections"), f"must be greater than 0, got {value}")
            continue
        if limit is not None:
            ctx.add(rpath, f"{GLOBAL_CX_MONITOR} is configured twice")
            continue
        limit = value
    return limit
