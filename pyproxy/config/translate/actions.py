"""``envoy.config.route.v3.RouteAction`` -> :class:`RouteAction`: cluster choice, timeouts, retries, mirrors.

Envoy's defaults: route timeout 15 s when unset (0 disables); one retry when a retry policy has no
``num_retries``; back-off 25 ms base, max 10x base; mirrors at 100% without ``runtime_fraction``.
``max_stream_duration`` (Envoy's "new timeouts"), when set, replaces ``max_grpc_timeout`` and
``grpc_timeout_offset``: its ``grpc_timeout_header_max``/``_offset`` fill the same model fields.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import (
    HEADER_MUTATION_FIELDS,
    PER_FILTER_REASON,
    Ctx,
    fractional_percent,
    header_mutations,
    opt_seconds,
    seconds,
    typed_name,
    unpack,
    wrapped,
)

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on vocabulary (router_filter.rst).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_HOSTS_TYPE = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}


def route_action(ctx: Ctx, ra: Any, path: str) -> m.RouteAction:
    ctx.check(
        ra,
        path,
        {
            "cluster",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "host_rewrite_literal",
            "timeout",
            "idle_timeout",
            "retry_policy",
            "request_mirror_policies",
            "max_grpc_timeout",
            "grpc_timeout_offset",
            "max_stream_duration",
        },
        reasons={
            "cluster_header": "cluster_header is not supported (name the cluster)",
            "upgrade_configs": "upgrades (websocket/CONNECT) are not supported",
            "hash_policy": "hash_policy is not supported (no ring-hash/maglev load balancer)",
            "metadata_match": "metadata_match (subset load balancing) is not supported",
        },
    )
    cluster: str | None = None
    weighted: tuple[m.WeightedCluster, ...] = ()
    total = 0
    kind = ra.WhichOneof("cluster_specifier")
    if kind == "cluster":
        cluster = ra.cluster
        ctx.cluster_refs.append((cluster, join(path, "cluster")))
    elif kind == "weighted_clusters":
        weighted, total = _weighted_clusters(ctx, ra.weighted_clusters, join(path, "weighted_clusters"))
    max_grpc = opt_seconds(ra, "max_grpc_timeout", None, zero_disables=False)
    grpc_offset = seconds(ra.grpc_timeout_offset) if ra.HasField("grpc_timeout_offset") else 0.0
    max_stream_duration: float | None = None
    if ra.HasField("max_stream_duration"):
        # Envoy's "new timeouts": when this message is set, it replaces max_grpc_timeout/grpc_timeout_offset.
        msd = ra.max_stream_duration
        ctx.check(
            msd,
            join(path, "max_stream_duration"),
            {"max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset"},
        )
        max_grpc = opt_seconds(msd, "grpc_timeout_header_max", None, zero_disables=False)
        grpc_offset = (
            seconds(msd.grpc_timeout_header_offset) if msd.HasField("grpc_timeout_header_offset") else 0.0
        )
        max_stream_duration = opt_seconds(msd, "max_stream_duration", None, zero_disables=False)
    mirrors = tuple(
        mp
        for mp in (
            _mirror(ctx, p, f"{join(path, 'request_mirror_policies')}[{i}]")
            for i, p in enumerate(ra.request_mirror_policies)
        )
        if mp is not None
    )
    retry = (
        retry_policy(ctx, ra.retry_policy, join(path, "retry_policy"))
        if ra.HasField("retry_policy")
        else None
    )
    return m.RouteAction(
        cluster=cluster,
        weighted_clusters=weighted,
        total_weight=total,
        timeout=opt_seconds(ra, "timeout", m.DEFAULT_ROUTE_TIMEOUT),
        idle_timeout=opt_seconds(ra, "idle_timeout", None, zero_disables=False),
        max_grpc_timeout=max_grpc,
        grpc_timeout_offset=grpc_offset,
        retry_policy=retry,
        mirrors=mirrors,
        prefix_rewrite=ra.prefix_rewrite or None,
        host_rewrite_literal=ra.host_rewrite_literal or None,
        max_stream_duration=max_stream_duration,
        grpc_timeout_is_stream_duration=ra.HasField("max_stream_duration"),
        cluster_not_found_response_code=_NOT_FOUND_CODES.get(ra.cluster_not_found_response_code, 503),
    )


def _weighted_clusters(ctx: Ctx, wc: Any, path: str) -> tuple[tuple[m.WeightedCluster, ...], int]:
    ctx.check(
        wc,
        path,
        {"clusters", "total_weight"},
        reasons={
            "runtime_key_prefix": "runtime weights are not supported",
            "header_name": "header-driven weighted choice is not supported",
            "use_hash_policy": "hash-driven weighted choice is not supported",
        },
    )
    out: list[m.WeightedCluster] = []
    for i, cw in enumerate(wc.clusters):
        cpath = f"{join(path, 'clusters')}[{i}]"
        ctx.check(
            cw,
            cpath,
            {"name", "weight", *HEADER_MUTATION_FIELDS},
            reasons={
                "typed_per_filter_config": PER_FILTER_REASON,
                "cluster_header": "cluster_header is not supported (name the cluster)",
            },
        )
        ctx.cluster_refs.append((cw.name, join(cpath, "name")))
        request_headers, response_headers = header_mutations(ctx, cw, cpath)
        out.append(
            m.WeightedCluster(
                name=cw.name,
                weight=wrapped(cw, "weight", 0),
                request_headers=request_headers,
                response_headers=response_headers,
            )
        )
    total = sum(c.weight for c in out)
    if out and total == 0:
        ctx.add(join(path, "clusters"), "the sum of the weights must be greater than 0")
    if wc.HasField("total_weight") and wc.total_weight.value != total:
        ctx.add(join(path, "total_weight"), f"is {wc.total_weight.value} but the weights add up to {total}")
    return tuple(out), total


def _mirror(ctx: Ctx, mp: Any, path: str) -> m.MirrorPolicy | None:
    ctx.check(
        mp,
        path,
        {"cluster", "runtime_fraction", "trace_sampled"},
        reasons={"cluster_header": "cluster_header is not supported (name the cluster)"},
    )
    if not mp.cluster:
        if not mp.cluster_header:
            ctx.add(join(path, "cluster"), "is required")
        return None
    ctx.cluster_refs.append((mp.cluster, join(path, "cluster")))
    fraction = 1.0
    if mp.HasField("runtime_fraction"):
        # Only the default_value is used: pyproxy has no runtime overrides (Envoy uses the default_value
        # too when runtime_key is absent from the runtime).
        rf = mp.runtime_fraction
        ctx.check(rf, join(path, "runtime_fraction"), {"default_value", "runtime_key"})
        fraction = fractional_percent(rf.default_value)
    return m.MirrorPolicy(cluster=mp.cluster, fraction=fraction)


def retry_policy(ctx: Ctx, rp: Any, path: str) -> m.RetryPolicy:
    ctx.check(
        rp,
        path,
        {
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retriable_status_codes",
            "retry_back_off",
        },
        reasons={
            "retriable_headers": "retriable_headers is not supported",
            "retry_priority": "retry_priority is not supported",
            "per_try_idle_timeout": "per_try_idle_timeout is not supported",
        },
    )
    retry_on: set[str] = set()
    for token in (t.strip() for t in rp.retry_on.split(",")):
        if not token:
            continue
        if token not in RETRY_ON:
            ctx.add(
                join(path, "retry_on"),
                f"unknown retry condition {token!r} (known: {', '.join(sorted(RETRY_ON))})",
            )
            continue
        retry_on.add(token)
    previous_hosts = False
    for i, predicate in enumerate(rp.retry_host_predicate):
        ppath = f"{join(path, 'retry_host_predicate')}[{i}]"
        ctx.check(predicate, ppath, {"name", "typed_config"})
        if predicate.HasField("typed_config"):
            if typed_name(predicate.typed_config) != PREVIOUS_HOSTS_TYPE:
                ctx.add(
                    join(ppath, "typed_config"),
                    f"retry host predicate {typed_name(predicate.typed_config)!r} "
                    f"is not supported (supported: {PREVIOUS_HOSTS})",
                )
                continue
            ctx.check(
                unpack(predicate.typed_config, previous_hosts_pb2.PreviousHostsPredicate),
                join(ppath, "typed_config"),
                set(),
            )
        elif predicate.name != PREVIOUS_HOSTS:
            ctx.add(
                join(ppath, "name"),
                f"retry host predicate {predicate.name!r} is not supported (supported: {PREVIOUS_HOSTS})",
            )
            continue
        previous_hosts = True
    # Without retry_back_off Envoy uses the runtime key upstream.base_retry_backoff_ms (default 25 ms).
    base_ms = ctx.runtime.get("upstream.base_retry_backoff_ms", 25)
    base = float(base_ms) / 1000.0 if isinstance(base_ms, int | float) else 0.025
    cap = base * 10
    if rp.HasField("retry_back_off"):
        bpath = join(path, "retry_back_off")
        ctx.check(rp.retry_back_off, bpath, {"base_interval", "max_interval"})
        base = seconds(rp.retry_back_off.base_interval)
        cap = opt_seconds(rp.retry_back_off, "max_interval", base * 10, zero_disables=False) or base * 10
        if cap < base:
            ctx.add(join(bpath, "max_interval"), "must be greater than or equal to base_interval")
    return m.RetryPolicy(
        retry_on=frozenset(retry_on),
        num_retries=wrapped(rp, "num_retries", 1),
        per_try_timeout=opt_seconds(rp, "per_try_timeout", None),
        retriable_status_codes=frozenset(rp.retriable_status_codes),
        base_interval=base,
        max_interval=cap,
        retry_previous_hosts=previous_hosts,
        host_selection_retry_max_attempts=rp.host_selection_retry_max_attempts or 1,
    )
