"""``envoy.config.route.v3.RouteConfiguration`` -> :class:`RouteConfiguration` (with its domain index).

Regexes are compiled, names lower-cased and domains indexed here, once per snapshot, so the request path
does none of it. Route actions (timeouts, retries, mirrors, weights) are in :mod:`.actions`.
"""

from __future__ import annotations

from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.actions import retry_policy, route_action
from pyproxy.config.translate.common import (
    HEADER_MUTATION_FIELDS,
    PER_FILTER_REASON,
    Ctx,
    compile_regex,
    data_source,
    header_matcher,
    header_mutations,
    wrapped,
)
from pyproxy.config.translate.per_filter import typed_per_filter_config


def route_configuration(
    ctx: Ctx, rc: Any, path: str, *, validate_clusters_default: bool
) -> m.RouteConfiguration:
    """Translate a route table. Cluster references are recorded in ``ctx.cluster_refs`` when validated."""
    ctx.check(
        rc,
        path,
        {
            "name",
            "virtual_hosts",
            "validate_clusters",
            "max_direct_response_body_size_bytes",
            "ignore_port_in_host_matching",
            "metadata",
            *HEADER_MUTATION_FIELDS,
        },
        reasons={"vhds": "on-demand virtual hosts (vhds) are not supported",
                 "typed_per_filter_config": PER_FILTER_REASON},
    )
    validate = wrapped(rc, "validate_clusters", validate_clusters_default)
    max_body = wrapped(rc, "max_direct_response_body_size_bytes", 4096)
    refs_before = len(ctx.cluster_refs)
    vhosts = tuple(
        virtual_host(ctx, vh, f"{join(path, 'virtual_hosts')}[{i}]", max_body)
        for i, vh in enumerate(rc.virtual_hosts)
    )
    if not validate:
        del ctx.cluster_refs[refs_before:]
    request_headers, response_headers = header_mutations(ctx, rc, path)
    return m.RouteConfiguration(
        name=rc.name,
        virtual_hosts=vhosts,
        request_headers=request_headers,
        response_headers=response_headers,
        domain_index=_domain_index(ctx, rc, vhosts, path),
        ignore_port_in_host_matching=rc.ignore_port_in_host_matching,
        validate_clusters=validate,
    )


def _domain_index(ctx: Ctx, rc: Any, vhosts: tuple[m.VirtualHost, ...], path: str) -> m.DomainIndex:
    """Envoy's RouteMatcher: exact, then ``*suffix`` and ``prefix*`` (longest first), then ``*``."""
    exact: dict[str, m.VirtualHost] = {}
    suffixes: dict[str, m.VirtualHost] = {}
    prefixes: dict[str, m.VirtualHost] = {}
    wildcard: m.VirtualHost | None = None
    for i, (vh, vh_proto) in enumerate(zip(vhosts, rc.virtual_hosts, strict=True)):
        for j, domain in enumerate(vh_proto.domains):
            dpath = f"{join(path, 'virtual_hosts')}[{i}].domains[{j}]"
            d = domain.lower()
            if d == "*":
                if wildcard is not None:
                    ctx.add(
                        dpath, f"only one virtual host may use the wildcard domain '*' (route {rc.name!r})"
                    )
                    continue
                wildcard = vh
                continue
            table, key = (
                (suffixes, d[1:])
                if d.startswith("*")
                else (prefixes, d[:-1])
                if d.endswith("*")
                else (exact, d)
            )
            if key in table:
                ctx.add(dpath, f"duplicate domain {domain!r}: domains must be unique in route {rc.name!r}")
                continue
            table[key] = vh
    by_length = lambda item: -len(item[0])  # noqa: E731 - a sort key
    return m.DomainIndex(
        exact=exact,
        suffixes=tuple(sorted(suffixes.items(), key=by_length)),
        prefixes=tuple(sorted(prefixes.items(), key=by_length)),
        wildcard=wildcard,
    )


def virtual_host(ctx: Ctx, vh: Any, path: str, max_body: int) -> m.VirtualHost:
    ctx.check(
        vh,
        path,
        {
            "name",
            "domains",
            "routes",
            "retry_policy",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "metadata",
            "typed_per_filter_config",
            *HEADER_MUTATION_FIELDS,
        },
        reasons={"require_tls": "require_tls is not supported (terminate TLS on the listener instead)"},
    )
    routes = tuple(route(ctx, r, f"{join(path, 'routes')}[{i}]", max_body) for i, r in enumerate(vh.routes))
    request_headers, response_headers = header_mutations(ctx, vh, path)
    retry = (
        retry_policy(ctx, vh.retry_policy, join(path, "retry_policy"))
        if vh.HasField("retry_policy")
        else None
    )
    return m.VirtualHost(
        name=vh.name,
        domains=tuple(d.lower() for d in vh.domains),
        routes=routes,
        request_headers=request_headers,
        response_headers=response_headers,
        retry_policy=retry,
        include_request_attempt_count=vh.include_request_attempt_count,
        include_attempt_count_in_response=vh.include_attempt_count_in_response,
        per_filter_config=typed_per_filter_config(ctx, vh, path),
    )


def route(ctx: Ctx, r: Any, path: str, max_body: int) -> m.Route:
    ctx.check(
        r,
        path,
        {
            "name",
            "match",
            "route",
            "direct_response",
            "metadata",
            "decorator",
            "stat_prefix",
            "typed_per_filter_config",
            *HEADER_MUTATION_FIELDS,
        },
        reasons={"redirect": "redirect routes are not supported (gRPC clients do not follow redirects)"},
    )
    if r.HasField("decorator"):  # tracing only; pyproxy does no tracing, so it changes nothing
        ctx.check(r.decorator, join(path, "decorator"), {"operation", "propagate"})
    match = route_match(ctx, r.match, join(path, "match"))
    action: m.RouteAction | m.DirectResponse
    kind = r.WhichOneof("action")
    if kind == "direct_response":
        action = direct_response(ctx, r.direct_response, join(path, "direct_response"), max_body)
    elif kind == "route":
        action = route_action(ctx, r.route, join(path, "route"))
    else:
        action = m.DirectResponse(status=500)  # unsupported/missing action: already reported
    request_headers, response_headers = header_mutations(ctx, r, path)
    return m.Route(
        name=r.name,
        match=match,
        action=action,
        request_headers=request_headers,
        response_headers=response_headers,
        per_filter_config=typed_per_filter_config(ctx, r, path),
        grpc_trailers=grpc_trailers_options(ctx, r, path),
    )


MINIMESH_METADATA = "minimesh"
_TRAILERS_KEYS = {"retry_on_trailers", "outlier_on_trailers"}


def grpc_trailers_options(ctx: Ctx, r: Any, path: str) -> m.GrpcTrailersOptions:
    """minimesh's opt-in gRPC behaviours from ``metadata.filter_metadata["minimesh"]`` (Envoy ignores it):
    ``retry_on_trailers`` and ``outlier_on_trailers``, booleans. Our own namespace, so anything else in it is
    an error rather than silently ignored."""
    if not r.HasField("metadata") or MINIMESH_METADATA not in r.metadata.filter_metadata:
        return m.GrpcTrailersOptions()
    fields = r.metadata.filter_metadata[MINIMESH_METADATA].fields
    mpath = f"{join(path, 'metadata')}.filter_metadata[{MINIMESH_METADATA!r}]"
    values: dict[str, bool] = {}
    for key, value in fields.items():
        if key not in _TRAILERS_KEYS:
            ctx.add(join(mpath, key), f"unknown key (known: {', '.join(sorted(_TRAILERS_KEYS))})")
        elif value.WhichOneof("kind") != "bool_value":
            ctx.add(join(mpath, key), "must be true or false")
        else:
            values[key] = value.bool_value
    return m.GrpcTrailersOptions(**values)


def route_match(ctx: Ctx, rm: Any, path: str) -> m.RouteMatch:
    ctx.check(
        rm,
        path,
        {"prefix", "path", "safe_regex", "case_sensitive", "headers", "grpc"},
        reasons={
            "path_separated_prefix": "path_separated_prefix is not supported (use prefix)",
            "connect_matcher": "CONNECT is not supported",
            "path_match_policy": "path_match_policy (URI templates) is not supported",
            "query_parameters": "query parameter matching is not supported (gRPC has no query)",
        },
    )
    if rm.HasField("grpc"):
        ctx.check(rm.grpc, join(path, "grpc"), set())
    case_sensitive = wrapped(rm, "case_sensitive", True)
    headers = tuple(
        hm
        for hm in (header_matcher(ctx, h, f"{join(path, 'headers')}[{i}]") for i, h in enumerate(rm.headers))
        if hm is not None
    )
    kind = rm.WhichOneof("path_specifier")
    prefix = path_value = None
    regex = None
    if kind == "prefix":
        prefix = rm.prefix if case_sensitive else rm.prefix.lower()
    elif kind == "path":
        path_value = rm.path if case_sensitive else rm.path.lower()
    elif kind == "safe_regex":
        regex = compile_regex(ctx, rm.safe_regex, join(path, "safe_regex"))
    return m.RouteMatch(
        prefix=prefix,
        path=path_value,
        safe_regex=regex,
        case_sensitive=case_sensitive,
        headers=headers,
        grpc=rm.HasField("grpc"),
    )


def direct_response(ctx: Ctx, dr: Any, path: str, max_body: int) -> m.DirectResponse:
    ctx.check(dr, path, {"status", "body"})
    body = ""
    if dr.HasField("body"):
        data, _ = data_source(ctx, dr.body, join(path, "body"), "response body")
        if data is not None:
            if len(data) > max_body:
                ctx.add(
                    join(path, "body"),
                    f"{len(data)} bytes is over max_direct_response_body_size_bytes ({max_body})",
                )
            try:
                body = data.decode()
            except UnicodeDecodeError:
                ctx.add(join(path, "body"), "must be UTF-8 text")
    return m.DirectResponse(status=dr.status, body=body)
