"""VirtualService ``http[]`` -> Envoy routes, following Istio's ``route/route.go``.

Per ``http[i]``, one route per ``match[j]`` (OR across blocks), in order; a route that matches everything
(prefix ``/`` and no header matchers) ends the list, as Istio stops there. Matches whose ``port`` is not the
service port, or whose ``sourceLabels``/``sourceNamespace``/``gateways`` exclude the proxy, are dropped for
that proxy. Route names are ``http[i].name`` (``.match[j].name`` appended), as Istio names them.

Supported: uri/authority/method/scheme/headers/withoutHeaders (exact, prefix, regex, presence),
``ignoreUriCase``; ``route[]`` to one cluster or ``weighted_clusters`` (weight 0 dropped, ``total_weight``
never set, as grpcio ignores it); per-destination ``headers``; ``timeout``; ``retries``; ``mirror`` /
``mirrors`` / ``mirrorPercentage``; ``headers.request/response`` ``set``/``add``/``remove``; ``rewrite``
(``uri`` as prefix rewrite, ``authority``); ``directResponse``; ``fault`` (the route's
``typed_per_filter_config`` for ``envoy.filters.http.fault``, :mod:`.fault`). Not (yet) in pyproxy, so
refused with a :class:`TranslationError`: ``redirect``, ``corsPolicy``, ``delegate``, query parameter
matches, ``uriRegexRewrite``, JWT claim matches, header values with ``%`` formatter commands.

Timeouts (Istio's ``setTimeout``): ``timeout`` default 0 (disabled). A sidecar gets
``max_stream_duration {max_stream_duration: 0s, grpc_timeout_header_max: <timeout or 0s>}`` so a caller's
``grpc-timeout`` is honoured, capped by the route timeout; a proxyless client gets
``max_stream_duration.max_stream_duration = <timeout>``, which is what grpcio reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh_ctl.registry import Labels, ServiceEntry, matches
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.fault import million, per_route_fault
from mesh_ctl.translate.headers import header_operations
from mesh_ctl.translate.istio import MESH_GATEWAY, Config, resolve_host
from mesh_ctl.translate.matches import route_match
from mesh_ctl.translate.names import DEFAULT_ROUTE, FAULT, outbound_cluster, service_cluster
from mesh_ctl.translate.retry import default_policy, retry_policy
from mesh_ctl.translate.values import (
    ANY_KEY,
    Json,
    array,
    duration,
    integer,
    join,
    obj,
    percent,
    proto_duration,
    string,
    wrapped_int,
)

_HTTP_ROUTE_FIELDS = {"name", "match", "route", "timeout", "retries", "mirror", "mirrors", "mirrorPercentage",
                      "mirrorPercent", "headers", "rewrite", "directResponse", "fault"}
_HTTP_ROUTE_REASONS = {
    "redirect": "redirects are not supported (gRPC clients do not follow redirects)",
    "corsPolicy": "CORS policies are not supported (no CORS filter in pyproxy)",
    "delegate": "delegate VirtualServices are not supported",
}
_MATCH_FIELDS = {"name", "uri", "authority", "method", "scheme", "headers", "withoutHeaders", "ignoreUriCase",
                 "port", "sourceLabels", "sourceNamespace", "gateways", "statPrefix"}
_MATCH_REASONS = {"queryParams": "query parameter matching is not supported (gRPC requests have no query)"}


@dataclass(frozen=True, slots=True)
class RouteScope:
    """Where routes are generated: one service's virtual host, for one proxy."""

    port: int  # the service port (Istio: the listener port)
    domain_suffix: str
    proxy_namespace: str
    proxy_labels: Labels
    proxyless: bool
    # FQDN -> the service's port when it is a registry service (a destination without port.number uses it)
    service_port: Callable[[str], int | None]
    # Check mode (``check_resource``): translate every match of every route, selecting none away.
    everything: bool = False


# --------------------------------------------------------------------------------------------- entry points


def virtual_service_routes(vs: Config, scope: RouteScope) -> list[Json]:
    """The routes ``vs`` gives a proxy for the service of ``scope`` (possibly none: then the service gets the
    default route, as in Istio)."""
    out: list[Json] = []
    try:
        for i, http in enumerate(array(vs.spec.get("http"), "spec.http")):
            path = join("spec.http", i)
            h = obj(http, path, _HTTP_ROUTE_FIELDS, _HTTP_ROUTE_REASONS)
            match_list = array(h.get("match"), join(path, "match"))
            catchall = not match_list
            for j, match in enumerate(match_list or [None]):
                r = _route(vs, h, path, match, join(join(path, "match"), j) if match_list else "", scope)
                if r is not None:
                    out.append(r)
                    if match is not None and is_catch_all(r) and not scope.everything:
                        catchall = True
                        break
            if catchall and not scope.everything:
                break
    except TranslationError as e:
        raise e.in_resource(vs.label) from None
    return out


def default_route(service: ServiceEntry, scope: RouteScope, weighted: list[tuple[str, int]] | None = None,
                  ) -> Json:
    """Istio's route for a service without a VirtualService (``BuildDefaultHTTPOutboundRoute``); with
    ``weighted`` (cluster, weight) pairs it splits like the topology's subsets say."""
    action: Json
    if weighted and len(weighted) > 1:
        action = {"weighted_clusters": {"clusters": [{"name": n, "weight": w} for n, w in weighted]}}
    else:
        action = {"cluster": weighted[0][0] if weighted else service_cluster(service)}
    action.update(_timeouts(None, scope))
    action["retry_policy"] = default_policy()
    return {
        "name": DEFAULT_ROUTE,
        "match": {"prefix": "/"},
        "route": action,
        "decorator": {"operation": f"{service.fqdn}:{service.port}/*"},
    }


def is_catch_all(route: Json) -> bool:
    """Istio's ``IsCatchAllRoute``: prefix ``/`` (or regex ``.*``) and no header matchers."""
    m = route.get("match", {})
    catchall = m.get("prefix") == "/" or m.get("safe_regex", {}).get("regex") == ".*"
    return catchall and not m.get("headers")


def referenced_clusters(route: Json) -> list[str]:
    """Every cluster a route sends to or mirrors to."""
    action = route.get("route")
    if action is None:
        return []
    out = [action["cluster"]] if "cluster" in action else [c["name"] for c in action["weighted_clusters"]["clusters"]]
    out.extend(m["cluster"] for m in action.get("request_mirror_policies", []))
    return out


# --------------------------------------------------------------------------------------------- one route


def _route(vs: Config, h: Mapping[str, Any], path: str, match: object, mpath: str, scope: RouteScope,
           ) -> Json | None:
    m = obj(match, mpath, _MATCH_FIELDS, _MATCH_REASONS) if match is not None else None
    if m is not None and not _applies(m, mpath, scope):
        return None
    name = string(h.get("name", ""), join(path, "name"))
    if m is not None and m.get("name"):
        name = f"{name}.{string(m['name'], join(mpath, 'name'))}"
    out: Json = {"name": name, "match": route_match(m, mpath)}
    if m is not None and m.get("statPrefix"):
        out["stat_prefix"] = string(m["statPrefix"], join(mpath, "statPrefix"))
    authority = ""
    if "headers" in h:
        ops, authority = header_operations(h["headers"], join(path, "headers"))
        out.update(ops)
    if "directResponse" in h:
        if "route" in h:
            raise TranslationError(join(path, "directResponse"), "cannot be combined with route")
        out["direct_response"] = _direct_response(h["directResponse"], join(path, "directResponse"))
    else:
        out["route"] = _action(vs, h, path, authority, out, scope)
    out["decorator"] = {"operation": _operation(out, vs.name, scope.port)}
    if "fault" in h:
        out["typed_per_filter_config"] = {FAULT: per_route_fault(h["fault"], join(path, "fault"))}
    metadata: Json = {"istio": {"config": vs.config_path}}
    trailers = grpc_trailers_options(vs)
    if trailers:
        metadata["minimesh"] = trailers
    out["metadata"] = {"filter_metadata": metadata}
    return out


# minimesh's opt-in gRPC behaviours, beyond Istio and Envoy, for every route of a VirtualService (an annotation,
# so the resource stays valid Istio YAML; Istio ignores it): "retry" retries a unary call on a retriable
# grpc-status that arrives in trailers after headers (the retry policy's gRPC conditions decide), "outlier" lets
# outlier detection count that status. pyproxy reads them from the route's filter_metadata["minimesh"].
GRPC_TRAILERS_ANNOTATION = "minimesh.io/grpc-status-in-trailers"
_TRAILERS_WORDS = {"retry": "retry_on_trailers", "outlier": "outlier_on_trailers"}


def grpc_trailers_options(vs: Config) -> Json:
    raw = vs.annotations.get(GRPC_TRAILERS_ANNOTATION)
    if raw is None:
        return {}
    path = f"metadata.annotations[{GRPC_TRAILERS_ANNOTATION}]"
    words = [w.strip().lower() for w in str(raw).split(",") if w.strip()]
    unknown = [w for w in words if w not in _TRAILERS_WORDS]
    if unknown or not words:
        raise TranslationError(path, f"{raw!r}: expected a comma list of {', '.join(_TRAILERS_WORDS)} "
                                     "(e.g. \"retry,outlier\")")
    return {key: True for word, key in _TRAILERS_WORDS.items() if word in words}


def _applies(m: Mapping[str, Any], path: str, scope: RouteScope) -> bool:
    """Istio's per-match port and source selection (``translateRoute`` / ``sourceMatchHTTP``)."""
    if "port" in m and integer(m["port"], join(path, "port"), 1, 65535) != scope.port and not scope.everything:
        return False
    gateways = [string(g, join(join(path, "gateways"), i)) for i, g in enumerate(array(m.get("gateways"),
                                                                                      join(path, "gateways")))]
    source = obj(m.get("sourceLabels"), join(path, "sourceLabels"), ANY_KEY)
    ns = string(m.get("sourceNamespace", ""), join(path, "sourceNamespace"))
    if scope.everything:
        return True
    if gateways:
        return MESH_GATEWAY in gateways
    if not matches(scope.proxy_labels, {str(k): str(v) for k, v in source.items()}):
        return False
    return not ns or ns == scope.proxy_namespace


# --------------------------------------------------------------------------------------------- actions


def _timeouts(timeout: float | None, scope: RouteScope) -> Json:
    t = proto_duration(timeout or 0.0)
    if scope.proxyless:
        return {"timeout": t, "max_stream_duration": {"max_stream_duration": t}}
    return {"timeout": t, "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": t}}


def _action(vs: Config, h: Mapping[str, Any], path: str, authority: str, out: Json, scope: RouteScope) -> Json:
    timeout = duration(h["timeout"], join(path, "timeout")) if "timeout" in h else None
    action: Json = _timeouts(timeout, scope)
    if "rewrite" in h:
        rw = obj(h["rewrite"], join(path, "rewrite"), {"uri", "authority"},
                 {"uriRegexRewrite": "regex rewrites are not supported by pyproxy (use uri)"})
        if rw.get("uri"):
            action["prefix_rewrite"] = string(rw["uri"], join(join(path, "rewrite"), "uri"))
        if rw.get("authority"):
            authority = string(rw["authority"], join(join(path, "rewrite"), "authority"))
    if authority:
        action["host_rewrite_literal"] = authority
    mirrors = _mirrors(vs, h, path, scope)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    destinations = array(h.get("route"), join(path, "route"))
    if not destinations:
        raise TranslationError(join(path, "route"), "a route needs at least one destination")
    if len(destinations) == 1:
        dpath = join(join(path, "route"), 0)
        d = obj(destinations[0], dpath, {"destination", "weight", "headers"})
        action["cluster"] = _cluster_of(vs, d.get("destination"), join(dpath, "destination"), scope)
        if "headers" in d:
            ops, dest_authority = header_operations(d["headers"], join(dpath, "headers"))
            for key, values in ops.items():
                out.setdefault(key, []).extend(values)
            if dest_authority and "host_rewrite_literal" not in action:
                action["host_rewrite_literal"] = dest_authority
    else:
        clusters: list[Json] = []
        for k, dest in enumerate(destinations):
            dpath = join(join(path, "route"), k)
            d = obj(dest, dpath, {"destination", "weight", "headers"})
            weight = integer(d.get("weight", 0), join(dpath, "weight"), 0, 2**31 - 1)
            if weight == 0:
                continue  # Istio drops weight-0 destinations when there are several
            cw: Json = {"name": _cluster_of(vs, d.get("destination"), join(dpath, "destination"), scope),
                        "weight": weight}
            if "headers" in d:
                ops, dest_authority = header_operations(d["headers"], join(dpath, "headers"))
                if dest_authority:
                    raise TranslationError(join(dpath, "headers"), "rewriting the authority per weighted "
                                           "destination is not supported by pyproxy")
                cw.update(ops)
            clusters.append(cw)
        if not clusters:
            raise TranslationError(join(path, "route"), "the weights add up to 0: no destination gets traffic")
        action["weighted_clusters"] = {"clusters": clusters}
    retries = retry_policy(h.get("retries"), join(path, "retries"))
    if retries is not None:
        action["retry_policy"] = retries
    return action


def _cluster_of(vs: Config, destination: object, path: str, scope: RouteScope) -> str:
    """Istio's ``GetDestinationCluster``: ``outbound|<port>|<subset>|<host>``."""
    d = obj(destination, path, {"host", "subset", "port"})
    if "host" not in d:
        raise TranslationError(join(path, "host"), "is required")
    host = resolve_host(string(d["host"], join(path, "host")), vs.namespace, scope.domain_suffix)
    port = scope.service_port(host) or scope.port
    if "port" in d:
        p = obj(d["port"], join(path, "port"), {"number"})
        port = integer(p.get("number", port), join(join(path, "port"), "number"), 1, 65535)
    subset = string(d.get("subset", ""), join(path, "subset"))
    return outbound_cluster(port, subset, host)


def _mirrors(vs: Config, h: Mapping[str, Any], path: str, scope: RouteScope) -> list[Json]:
    """``mirror`` + ``mirrorPercentage`` (or the deprecated ``mirrorPercent``) and ``mirrors[]``; an explicit
    0% mirrors nothing (Istio's ``MirrorPercent``)."""
    out: list[Json] = []
    if "mirror" in h:
        fraction: Json | None = {"numerator": 100, "denominator": "HUNDRED"}
        if "mirrorPercentage" in h:
            fraction = _fraction(percent(h["mirrorPercentage"], join(path, "mirrorPercentage")))
        elif "mirrorPercent" in h:
            legacy = wrapped_int(h["mirrorPercent"], join(path, "mirrorPercent")) or 0
            fraction = {"numerator": legacy, "denominator": "HUNDRED"} if legacy > 0 else None
        if fraction is not None:
            out.append(_mirror(_cluster_of(vs, h["mirror"], join(path, "mirror"), scope), fraction))
    for i, policy in enumerate(array(h.get("mirrors"), join(path, "mirrors"))):
        mpath = join(join(path, "mirrors"), i)
        mp = obj(policy, mpath, {"destination", "percentage"})
        share: Json | None = {"numerator": 100, "denominator": "HUNDRED"}
        if "percentage" in mp:
            share = _fraction(percent(mp["percentage"], join(mpath, "percentage")))
        if share is not None and "destination" in mp:
            out.append(_mirror(_cluster_of(vs, mp["destination"], join(mpath, "destination"), scope), share))
    return out


def _fraction(pct: float) -> Json | None:
    """Istio's ``translatePercentToFractionalPercent``: parts per million; 0 means no mirroring."""
    if pct <= 0:
        return None
    return million(pct)


def _mirror(cluster: str, fraction: Json) -> Json:
    return {"cluster": cluster, "runtime_fraction": {"default_value": fraction}, "trace_sampled": False}


def _direct_response(value: object, path: str) -> Json:
    d = obj(value, path, {"status", "body"})
    out: Json = {"status": integer(d.get("status", 0), join(path, "status"), 200, 599)}
    if "body" in d:
        body = obj(d["body"], join(path, "body"), {"string", "bytes"})
        if "string" in body:
            out["body"] = {"inline_string": string(body["string"], join(join(path, "body"), "string"))}
        elif "bytes" in body:
            out["body"] = {"inline_bytes": string(body["bytes"], join(join(path, "body"), "bytes"))}
    return out


def _operation(route: Json, vs_name: str, port: int) -> str:
    """Istio's ``GetRouteOperation`` (the tracing decorator; cosmetic in pyproxy)."""
    m = route["match"]
    suffix = "/*"
    if "prefix" in m:
        suffix = m["prefix"] + "*"
    elif "path" in m:
        suffix = m["path"]
    elif "safe_regex" in m:
        suffix = m["safe_regex"]["regex"]
    cluster = route.get("route", {}).get("cluster", "")
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound":
        return f"{parts[3]}:{parts[1]}{suffix}"
    return f"{vs_name}:{port}{suffix}"
