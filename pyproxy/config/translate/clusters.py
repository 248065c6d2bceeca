"""``envoy.config.cluster.v3.Cluster`` -> :class:`Cluster`: discovery type, load balancer, endpoints.

An EDS cluster (``eds_cluster_config`` with an ADS ``eds_config``) has no ``load_assignment`` in the model:
the xDS client fills it in from the ``ClusterLoadAssignment`` named ``eds_service_name``
(:func:`cluster_load_assignment` translates that resource).

The upstream protocol (HTTP/2 required), circuit breakers and outlier detection are in
:mod:`.cluster_options`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.cluster_options import (
    NEEDS_HTTP2,
    circuit_breakers,
    outlier_detection,
    upstream_protocol,
)
from pyproxy.config.translate.common import (
    Ctx,
    enum_name,
    flatten_metadata,
    opt_seconds,
    socket_address,
    wrapped,
)
from pyproxy.config.translate.dynamic import ADS_SOURCE, config_source
from pyproxy.config.translate.tls import transport_socket

_TYPES = ("STATIC", "STRICT_DNS", "LOGICAL_DNS")
_EDS_NEEDS_ADS = (
    "EDS needs dynamic_resources.ads_config; use STATIC, STRICT_DNS or LOGICAL_DNS with a load_assignment"
)
_LB_POLICIES = {
    "ROUND_ROBIN": m.LbPolicy.ROUND_ROBIN,
    "LEAST_REQUEST": m.LbPolicy.LEAST_REQUEST,
    "RANDOM": m.LbPolicy.RANDOM,
}


def cluster(ctx: Ctx, proto: Any, path: str) -> m.Cluster | None:
    before = len(ctx.problems)
    ctx.check(
        proto,
        path,
        {
            "name",
            "alt_stat_name",
            "type",
            "connect_timeout",
            "per_connection_buffer_limit_bytes",
            "lb_policy",
            "load_assignment",
            "eds_cluster_config",
            "max_requests_per_connection",
            "circuit_breakers",
            "http2_protocol_options",
            "typed_extension_protocol_options",
            "dns_refresh_rate",
            "respect_dns_ttl",
            "dns_lookup_family",
            "outlier_detection",
            "least_request_lb_config",
            "common_lb_config",
            "transport_socket",
            "metadata",
            "common_http_protocol_options",
            "upstream_bind_config",
        },
        empty_ok={"round_robin_lb_config"},
        reasons={
            "cluster_type": "custom cluster types are not supported (supported: "
            + ", ".join((*_TYPES, "EDS"))
            + ")",
            "http_protocol_options": "HTTP/1 upstreams are not supported: " + NEEDS_HTTP2,
            "transport_socket_matches": "transport_socket_matches is not supported (use transport_socket)",
            "health_checks": "active health checking is not supported",
            "lb_subset_config": "subset load balancing is not supported",
            "ring_hash_lb_config": "ring hash load balancing is not supported",
            "maglev_lb_config": "maglev load balancing is not supported",
            "filters": "upstream network filters are not supported",
            "load_balancing_policy": "load_balancing_policy is not supported (use lb_policy)",
            "upstream_http_protocol_options": "upstream_http_protocol_options is not supported",
        },
    )
    name = proto.name
    discovery = enum_name(proto, "type")
    eds_service = None
    if discovery == "EDS":
        eds_service = _eds_config(ctx, proto, path)
    elif discovery not in _TYPES:
        ctx.add(join(path, "type"), f"{discovery} is not supported (supported: {', '.join((*_TYPES, 'EDS'))})")
    if proto.HasField("eds_cluster_config") and discovery != "EDS":
        ctx.add(join(path, "eds_cluster_config"), f"only applies to type: EDS (this cluster is {discovery})")
    lb_name = enum_name(proto, "lb_policy")
    lb = _LB_POLICIES.get(lb_name)
    if lb is None:
        ctx.add(join(path, "lb_policy"), f"{lb_name} is not supported (supported: {', '.join(_LB_POLICIES)})")
    choice_count, bias = 2, 1.0
    if proto.HasField("least_request_lb_config"):
        choice_count, bias = _least_request(
            ctx, proto.least_request_lb_config, join(path, "least_request_lb_config")
        )
        if lb is not m.LbPolicy.LEAST_REQUEST:
            ctx.warnings.append(
                f"{join(path, 'least_request_lb_config')}: ignored because lb_policy is {lb_name} "
                "(as in Envoy)"
            )
    panic = 50.0
    if proto.HasField("common_lb_config"):
        clc, cpath = proto.common_lb_config, join(path, "common_lb_config")
        ctx.check(
            clc,
            cpath,
            {"healthy_panic_threshold"},
            reasons={
                "locality_weighted_lb_config": "locality-weighted load balancing is not supported",
                "zone_aware_lb_config": "zone-aware load balancing is not supported",
            },
        )
        if clc.HasField("healthy_panic_threshold"):
            panic = clc.healthy_panic_threshold.value  # 0..100, checked by the protoc-gen-validate pass
    tls: m.TlsContext | None = None
    if proto.HasField("transport_socket"):
        tls = transport_socket(ctx, proto.transport_socket, join(path, "transport_socket"), server_side=False)
    http2, idle_timeout, max_requests = upstream_protocol(ctx, proto, path, has_tls=tls is not None)
    assignment = None
    if discovery == "EDS":
        if proto.HasField("load_assignment") and ctx.ads:
            ctx.add(
                join(path, "load_assignment"),
                "an EDS cluster takes its endpoints from EDS: remove load_assignment (Envoy ignores it)",
            )
    elif proto.HasField("load_assignment"):
        assignment = _load_assignment(ctx, proto.load_assignment, join(path, "load_assignment"), discovery)
    elif discovery == "LOGICAL_DNS":
        ctx.add(join(path, "load_assignment"), "a LOGICAL_DNS cluster needs exactly one endpoint")
    breakers, high = circuit_breakers(ctx, proto, path)
    outlier = None
    if proto.HasField("outlier_detection"):
        outlier = outlier_detection(ctx, proto.outlier_detection, join(path, "outlier_detection"))
    metadata = (
        flatten_metadata(ctx, proto.metadata, join(path, "metadata")) if proto.HasField("metadata") else ()
    )
    source_address = None
    if proto.HasField("upstream_bind_config"):
        source_address = _bind_config(ctx, proto.upstream_bind_config, join(path, "upstream_bind_config"))
    if http2 is None or lb is None or len(ctx.problems) != before:
        return None
    if discovery == "EDS":
        assignment = None  # the xDS client fills it in from EDS
    elif assignment is None:
        assignment = m.ClusterLoadAssignment(cluster_name=name, localities=())
    return m.Cluster(
        name=name,
        discovery_type=discovery,  # type: ignore[arg-type]
        load_assignment=assignment,
        eds_service_name=eds_service,
        connect_timeout=opt_seconds(proto, "connect_timeout", m.DEFAULT_CONNECT_TIMEOUT, zero_disables=False)
        or m.DEFAULT_CONNECT_TIMEOUT,
        lb_policy=lb,
        least_request_choice_count=choice_count,
        active_request_bias=bias,
        http2=http2,
        tls=tls,
        circuit_breakers=breakers,
        high_priority_circuit_breakers=high,
        outlier_detection=outlier,
        healthy_panic_threshold=panic,
        per_connection_buffer_limit_bytes=wrapped(
            proto, "per_connection_buffer_limit_bytes", m.DEFAULT_PER_CONNECTION_BUFFER_LIMIT
        ),
        max_requests_per_connection=max_requests,
        idle_timeout=idle_timeout,
        dns_refresh_rate=opt_seconds(proto, "dns_refresh_rate", 5.0, zero_disables=False) or 5.0,
        metadata=metadata,
        dns_lookup_family=enum_name(proto, "dns_lookup_family"),  # type: ignore[arg-type]
        respect_dns_ttl=_respect_dns_ttl(ctx, proto, path),
        source_address=source_address,
    )


def _bind_config(ctx: Ctx, bc: Any, path: str) -> str | None:
    """``upstream_bind_config``: the source IP of upstream connections (``source_address``, port 0: the kernel
    picks a port per connection, as a pool of connections needs)."""
    ctx.check(bc, path, {"source_address"})
    spath = join(path, "source_address")
    if not bc.HasField("source_address"):
        ctx.add(spath, "is required (pyproxy supports only source_address)")
        return None
    sa = bc.source_address
    ctx.check(sa, spath, {"protocol", "address", "port_value"})
    if sa.protocol != 0:
        ctx.add(join(spath, "protocol"), "only TCP is supported")
    try:
        ipaddress.ip_address(sa.address)
    except ValueError:
        ctx.add(join(spath, "address"), f"{sa.address!r} is not an IP address")
        return None
    if sa.port_value:
        ctx.add(join(spath, "port_value"), "a fixed source port is not supported (use 0: one port per connection)")
        return None
    return str(sa.address)


def _eds_config(ctx: Ctx, proto: Any, path: str) -> str | None:
    """``type: EDS``: the service name to subscribe to (``eds_cluster_config.service_name`` or the cluster
    name), or None (reported) without ADS or without an ADS ``eds_config``."""
    if not ctx.ads:
        ctx.add(join(path, "type"), _EDS_NEEDS_ADS)
        return None
    epath = join(path, "eds_cluster_config")
    if not proto.HasField("eds_cluster_config"):
        ctx.add(epath, f"an EDS cluster needs eds_cluster_config: {{eds_config: {ADS_SOURCE}}}")
        return None
    ecc = proto.eds_cluster_config
    ctx.check(ecc, epath, {"eds_config", "service_name"})
    if not ecc.HasField("eds_config"):
        ctx.add(join(epath, "eds_config"), f"is required: {ADS_SOURCE}")
        return None
    config_source(ctx, ecc.eds_config, join(epath, "eds_config"))
    return str(ecc.service_name or proto.name)


def cluster_load_assignment(ctx: Ctx, cla: Any, path: str) -> m.ClusterLoadAssignment:
    """An EDS ``ClusterLoadAssignment`` resource (endpoint addresses must be IP literals, as in Envoy)."""
    return _load_assignment(ctx, cla, path, "EDS")


def _respect_dns_ttl(ctx: Ctx, proto: Any, path: str) -> bool:
    if proto.respect_dns_ttl:
        # getaddrinfo() does not return TTLs: say so instead of pretending.
        ctx.warnings.append(f"{join(path, 'respect_dns_ttl')}: DNS TTLs are not available to pyproxy; "
                            f"names are re-resolved every dns_refresh_rate instead")
    return bool(proto.respect_dns_ttl)


def _least_request(ctx: Ctx, lr: Any, path: str) -> tuple[int, float]:
    ctx.check(
        lr,
        path,
        {"choice_count", "active_request_bias"},
        reasons={"slow_start_config": "slow start is not supported"},
    )
    bias = 1.0
    if lr.HasField("active_request_bias"):
        # RuntimeDouble: pyproxy has no runtime overrides, so the default_value is the value.
        ctx.check(lr.active_request_bias, join(path, "active_request_bias"), {"default_value", "runtime_key"})
        bias = lr.active_request_bias.default_value
        if bias < 0:
            ctx.add(join(path, "active_request_bias"), "must not be negative")
    return wrapped(lr, "choice_count", 2), bias


def _load_assignment(ctx: Ctx, cla: Any, path: str, discovery: str) -> m.ClusterLoadAssignment:
    ctx.check(
        cla,
        path,
        {"cluster_name", "endpoints"},
        empty_ok={"policy"},
        reasons={
            "named_endpoints": "named endpoints are not supported",
            "policy": "load assignment policies (overprovisioning, drops) are not supported",
        },
    )
    localities: list[m.LocalityLbEndpoints] = []
    total = 0
    for i, lle in enumerate(cla.endpoints):
        lpath = f"{join(path, 'endpoints')}[{i}]"
        ctx.check(
            lle,
            lpath,
            {"locality", "lb_endpoints", "load_balancing_weight", "priority"},
            reasons={
                "leds_cluster_locality_config": "LEDS is not supported",
                "load_balancer_endpoints": "load_balancer_endpoints is not supported",
                "proximity": "proximity is not supported",
            },
        )
        endpoints: list[m.Endpoint] = []
        for j, lbe in enumerate(lle.lb_endpoints):
            ep = _lb_endpoint(ctx, lbe, f"{join(lpath, 'lb_endpoints')}[{j}]", discovery)
            if ep is not None:
                endpoints.append(ep)
        total += len(lle.lb_endpoints)
        if lle.HasField("locality"):
            ctx.check(lle.locality, join(lpath, "locality"), {"region", "zone", "sub_zone"})
        localities.append(
            m.LocalityLbEndpoints(
                endpoints=tuple(endpoints),
                region=lle.locality.region,
                zone=lle.locality.zone,
                sub_zone=lle.locality.sub_zone,
                load_balancing_weight=wrapped(lle, "load_balancing_weight", None),
                priority=lle.priority,
            )
        )
    if discovery == "LOGICAL_DNS" and total != 1:
        ctx.add(join(path, "endpoints"), f"a LOGICAL_DNS cluster needs exactly one endpoint (has {total})")
    return m.ClusterLoadAssignment(cluster_name=cla.cluster_name, localities=tuple(localities))


_HEALTH = {v.value: v for v in m.HealthStatus}


def _lb_endpoint(ctx: Ctx, lbe: Any, path: str, discovery: str) -> m.Endpoint | None:
    ctx.check(
        lbe,
        path,
        {"endpoint", "health_status", "metadata", "load_balancing_weight"},
        reasons={"endpoint_name": "named endpoints are not supported"},
    )
    if not lbe.HasField("endpoint"):
        if not lbe.endpoint_name:
            ctx.add(join(path, "endpoint"), "is required")
        return None
    epath = join(path, "endpoint")
    ep = lbe.endpoint
    ctx.check(
        ep,
        epath,
        {"address", "hostname"},
        empty_ok={"health_check_config"},
        reasons={
            "additional_addresses": "additional_addresses is not supported",
            "health_check_config": "active health checking is not supported",
        },
    )
    address, _ = socket_address(
        ctx,
        ep.address,
        join(epath, "address"),
        require_ip=discovery in ("STATIC", "EDS"),
        allow_port_zero=False,
        what=f"{discovery} cluster endpoint",
    )
    metadata = flatten_metadata(ctx, lbe.metadata, join(path, "metadata")) if lbe.HasField("metadata") else ()
    if address is None:
        return None
    return m.Endpoint(
        address=address,
        load_balancing_weight=wrapped(lbe, "load_balancing_weight", 1),
        health_status=_HEALTH.get(lbe.health_status, m.HealthStatus.UNKNOWN),
        hostname=ep.hostname,
        metadata=metadata,
    )
