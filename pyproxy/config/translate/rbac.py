"""``envoy.filters.http.rbac`` (``envoy.extensions.filters.http.rbac.v3.RBAC``) -> :class:`RbacConfig`.

The permission and principal kinds Istio's AuthorizationPolicy translation emits are supported (see
:class:`pyproxy.config.model.RbacMatcher`); anything else (metadata, CEL conditions, requested_server_name,
filter_state, matcher trees...) is refused with its path.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, header_matcher, string_matcher

RBAC = "envoy.filters.http.rbac"
RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
_ACTIONS: dict[int, Literal["ALLOW", "DENY", "LOG"]] = {0: "ALLOW", 1: "DENY", 2: "LOG"}
_UNSUPPORTED = "is not supported by pyproxy's RBAC filter"


def rbac_filter(ctx: Ctx, proto: rbac_pb2.RBAC, path: str) -> m.RbacConfig:
    ctx.check(proto, path, {"rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix"},
              reasons={"matcher": f"matcher {_UNSUPPORTED} (use rules)",
                       "shadow_matcher": f"shadow_matcher {_UNSUPPORTED} (use shadow_rules)",
                       "track_per_rule_stats": f"track_per_rule_stats {_UNSUPPORTED}"})
    rules = _rules(ctx, proto.rules, join(path, "rules")) if proto.HasField("rules") else None
    shadow = _rules(ctx, proto.shadow_rules, join(path, "shadow_rules")) if proto.HasField("shadow_rules") else None
    return m.RbacConfig(rules=rules, shadow_rules=shadow, stat_prefix=proto.rules_stat_prefix,
                        shadow_stat_prefix=proto.shadow_rules_stat_prefix)


def _rules(ctx: Ctx, proto: Any, path: str) -> m.RbacRules:
    ctx.check(proto, path, {"action", "policies"},
              reasons={"audit_logging_options": f"audit_logging_options {_UNSUPPORTED}"})
    policies = []
    for name in sorted(proto.policies):  # Envoy evaluates the map in an unspecified order; names decide ties
        policy = proto.policies[name]
        ppath = f"{join(path, 'policies')}[{name}]"
        ctx.check(policy, ppath, {"permissions", "principals"},
                  reasons={"condition": f"condition (CEL) {_UNSUPPORTED}",
                           "checked_condition": f"checked_condition (CEL) {_UNSUPPORTED}",
                           "cel_config": f"cel_config {_UNSUPPORTED}"})
        perms = tuple(p for i, x in enumerate(policy.permissions)
                      if (p := _permission(ctx, x, f"{join(ppath, 'permissions')}[{i}]")) is not None)
        princs = tuple(p for i, x in enumerate(policy.principals)
                       if (p := _principal(ctx, x, f"{join(ppath, 'principals')}[{i}]")) is not None)
        if not policy.permissions:
            ctx.add(join(ppath, "permissions"), "must have at least one permission")
        if not policy.principals:
            ctx.add(join(ppath, "principals"), "must have at least one principal")
        policies.append(m.RbacPolicy(name=name, permissions=perms, principals=princs))
    return m.RbacRules(action=_ACTIONS.get(proto.action, "ALLOW"), policies=tuple(policies))


def _set(ctx: Ctx, items: Any, path: str, fn: Any) -> tuple[m.RbacMatcher, ...]:
    return tuple(x for i, item in enumerate(items.rules if hasattr(items, "rules") else items.ids)
                 if (x := fn(ctx, item, f"{path}[{i}]")) is not None)


def _permission(ctx: Ctx, p: Any, path: str) -> m.RbacMatcher | None:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return m.RbacMatcher("any")
    if kind in ("and_rules", "or_rules"):
        children = tuple(x for i, item in enumerate(getattr(p, kind).rules)
                         if (x := _permission(ctx, item, f"{join(path, kind)}.rules[{i}]")) is not None)
        return m.RbacMatcher("and" if kind == "and_rules" else "or", children)
    if kind == "not_rule":
        child = _permission(ctx, p.not_rule, join(path, "not_rule"))
        return m.RbacMatcher("not", (child,)) if child is not None else None
    if kind == "header":
        hm = header_matcher(ctx, p.header, join(path, "header"))
        return m.RbacMatcher("header", header=hm) if hm is not None else None
    if kind == "url_path":
        return _url_path(ctx, p.url_path, join(path, "url_path"))
    if kind == "destination_port":
        return m.RbacMatcher("destination_port", ports=(p.destination_port, p.destination_port + 1))
    if kind == "destination_port_range":
        r = p.destination_port_range
        return m.RbacMatcher("destination_port_range", ports=(r.start, r.end))
    ctx.add(join(path, kind or "rule"), f"permission {kind!r} {_UNSUPPORTED}" if kind else "a permission is required")
    return None


def _principal(ctx: Ctx, p: Any, path: str) -> m.RbacMatcher | None:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return m.RbacMatcher("any")
    if kind in ("and_ids", "or_ids"):
        children = tuple(x for i, item in enumerate(getattr(p, kind).ids)
                         if (x := _principal(ctx, item, f"{join(path, kind)}.ids[{i}]")) is not None)
        return m.RbacMatcher("and" if kind == "and_ids" else "or", children)
    if kind == "not_id":
        child = _principal(ctx, p.not_id, join(path, "not_id"))
        return m.RbacMatcher("not", (child,)) if child is not None else None
    if kind == "authenticated":
        apath = join(path, "authenticated")
        ctx.check(p.authenticated, apath, {"principal_name"})
        sm = None
        if p.authenticated.HasField("principal_name"):
            sm = string_matcher(ctx, p.authenticated.principal_name, join(apath, "principal_name"))
            if sm is None:
                return None
        return m.RbacMatcher("authenticated", string=sm)
    if kind in ("source_ip", "direct_remote_ip", "remote_ip"):
        cidr = getattr(p, kind)
        try:
            network = ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}", strict=False)
        except ValueError as e:
            ctx.add(join(path, kind), f"invalid CIDR: {e}")
            return None
        return m.RbacMatcher(kind, cidrs=(str(network),))
    if kind == "header":
        hm = header_matcher(ctx, p.header, join(path, "header"))
        return m.RbacMatcher("header", header=hm) if hm is not None else None
    if kind == "url_path":
        return _url_path(ctx, p.url_path, join(path, "url_path"))
    ctx.add(join(path, kind or "identifier"), f"principal {kind!r} {_UNSUPPORTED}" if kind
            else "a principal is required")
    return None


def _url_path(ctx: Ctx, pm: Any, path: str) -> m.RbacMatcher | None:
    ctx.check(pm, path, {"path"})
    sm = string_matcher(ctx, pm.path, join(path, "path"))
    return m.RbacMatcher("url_path", string=sm) if sm is not None else None
