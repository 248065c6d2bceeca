"""Bootstrap-level pieces: ``node``, ``admin`` and ``layered_runtime``."""

from __future__ import annotations

from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, socket_address, struct_to_python
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
