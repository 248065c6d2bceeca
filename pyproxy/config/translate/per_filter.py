"""``typed_per_filter_config`` of virtual hosts and routes -> ``(filter name, frozen config)`` pairs.

As in Envoy (``source/common/router/per_filter_config.cc``), the map is keyed by the filter's name in the
connection manager's ``http_filters`` and each value is opened by its *type*: an
``envoy.extensions.filters.http.fault.v3.HTTPFault`` (replaces the fault filter's config on the route) or an
``envoy.extensions.filters.http.rbac.v3.RBACPerRoute`` (replaces the RBAC filter's rules; without ``rbac`` the
filter is off on the route). A value may be wrapped in ``envoy.config.route.v3.FilterConfig``: with
``is_optional`` a type pyproxy does not have is skipped with a warning (Envoy skips a type it has no extension
for); without it, such a type is refused, as Envoy refuses it ("Didn't find a registered implementation").
An entry for a name no filter of the chain has is accepted and never read, as in Envoy (route tables are
translated apart from the listeners that use them, over RDS too). ``FilterConfig.disabled`` is refused:
pyproxy's chain cannot switch a filter off per route (its connection-manager ``disabled`` is refused too), and
an empty ``config`` (Envoy: "enabled on this route") therefore changes nothing.
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, typed_name, unpack
from pyproxy.config.translate.fault import FAULT_TYPE, fault_filter
from pyproxy.config.translate.rbac import RBAC_TYPE, rbac_filter

FILTER_CONFIG_TYPE = "envoy.config.route.v3.FilterConfig"
RBAC_PER_ROUTE_TYPE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
PER_FILTER_TYPES = (FAULT_TYPE, RBAC_PER_ROUTE_TYPE)


def typed_per_filter_config(ctx: Ctx, msg: Any, path: str) -> tuple[tuple[str, object], ...]:
    """``msg.typed_per_filter_config`` (a VirtualHost or Route) translated, sorted by filter name."""
    configs = msg.typed_per_filter_config
    base = join(path, "typed_per_filter_config")
    out: list[tuple[str, object]] = []
    for name in sorted(configs):
        config = _entry(ctx, name, configs[name], f'{base}["{name}"]')
        if config is not None:
            out.append((name, config))
    return tuple(out)


def _entry(ctx: Ctx, name: str, value: Any, path: str) -> object | None:
    type_name = typed_name(value)
    optional = False
    if type_name == FILTER_CONFIG_TYPE:
        wrapper = unpack(value, route_components_pb2.FilterConfig)
        ctx.check(
            wrapper,
            path,
            {"config", "is_optional"},
            reasons={"disabled": "disabling a filter per route is not supported by pyproxy"},
        )
        if wrapper.disabled:
            return None
        if not wrapper.HasField("config"):
            ctx.add(join(path, "config"), f"is required: empty per-route configuration for filter {name!r}")
            return None
        if not wrapper.config.type_url:
            return None  # Envoy: the filter is enabled on this route; pyproxy's filters are never disabled
        value, optional, path = wrapper.config, wrapper.is_optional, join(path, "config")
        type_name = typed_name(value)
    if type_name == FAULT_TYPE:
        return fault_filter(ctx, unpack(value, fault_pb2.HTTPFault), path)
    if type_name == RBAC_PER_ROUTE_TYPE:
        per_route = unpack(value, rbac_pb2.RBACPerRoute)
        ctx.check(per_route, path, {"rbac"})
        rbac = rbac_filter(ctx, per_route.rbac, join(path, "rbac")) if per_route.HasField("rbac") else None
        return m.RbacPerRoute(rbac=rbac)
    if type_name == RBAC_TYPE:
        # Envoy finds the RBAC extension by this type, then cannot unpack it as its per-route message.
        ctx.add(path, f"a per-route RBAC config is an {RBAC_PER_ROUTE_TYPE} (with the RBAC in its rbac field)")
        return None
    if optional:
        ctx.warnings.append(f"{path}: optional per-route config {type_name!r} for filter {name!r} is not "
                            "supported by pyproxy: skipped")
        return None
    if type_name == ROUTER_TYPE:
        ctx.add(path, f"filter {name!r} ({ROUTER_TYPE}) takes no virtual host or route specific configuration")
        return None
    ctx.add(
        path,
        f"per-route config {type_name!r} for filter {name!r} is not supported by pyproxy "
        f"(supported: {', '.join(PER_FILTER_TYPES)}; wrap it in {FILTER_CONFIG_TYPE} with is_optional: true "
        "to skip it)",
    )
    return None
