"""xDS plumbing in the bootstrap: ``dynamic_resources`` (one ADS stream) and ADS ``ConfigSource``\\ s.

pyproxy is a state-of-the-world ADS client over gRPC, xDS v3, as Envoy's bootstrap describes it::

    dynamic_resources:
      ads_config: {api_type: GRPC, transport_api_version: V3, set_node_on_first_message_only: true,
                   grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]}
      lds_config: {ads: {}, resource_api_version: V3}
      cds_config: {ads: {}, resource_api_version: V3}

Every config source (``lds_config``, ``cds_config``, an HCM's ``rds.config_source``, a cluster's
``eds_config``, an ``sds_config``) must be ``ads: {}``; files, REST, non-aggregated gRPC, delta xDS and
``google_grpc`` are rejected with a reason. The ADS cluster must be a static cluster whose endpoints are in
the bootstrap (it is HTTP/2 like every pyproxy cluster) and whose TLS material is not itself fetched over
the stream it serves.
"""

from __future__ import annotations

from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, enum_name, opt_seconds

DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0  # ConfigSource.initial_fetch_timeout when unset (Envoy)
ADS_SOURCE = "{ads: {}, resource_api_version: V3}"
_FILE_SOURCE = f"file-based config sources are not supported: pyproxy takes xDS over ADS only (use {ADS_SOURCE})"
_SOURCE_REASONS = {
    "path": _FILE_SOURCE,
    "path_config_source": _FILE_SOURCE,
    "api_config_source": (
        f"only ADS config sources are supported (use {ADS_SOURCE} with dynamic_resources.ads_config)"
    ),
    "self": f"'self' config sources are not supported (use {ADS_SOURCE})",
    "authorities": "xDS-TP authorities are not supported",
}
_API_TYPE_REASONS = {
    "DELTA_GRPC": "incremental (delta) xDS is not supported (supported: GRPC, state of the world)",
    "AGGREGATED_DELTA_GRPC": "incremental (delta) xDS is not supported (supported: GRPC, state of the world)",
    "REST": "REST xDS is not supported (supported: GRPC)",
    "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE": "is required (supported: GRPC)",
}
_V2 = "the v2 xDS API is not supported (use V3)"
_STATIC_TYPES = ("STATIC", "STRICT_DNS", "LOGICAL_DNS")


def config_source(ctx: Ctx, cs: Any, path: str) -> float | None:
    """An ADS ``ConfigSource`` -> its ``initial_fetch_timeout`` in seconds (None: 0s, wait indefinitely).

    Callers check that ADS is configured (``ctx.ads``) and report that at their own field, so a static
    bootstrap gets one problem ("... needs dynamic_resources.ads_config") rather than one per nested field.
    """
    ctx.check(cs, path, {"ads", "resource_api_version", "initial_fetch_timeout"}, reasons=_SOURCE_REASONS)
    if cs.HasField("ads"):
        ctx.check(cs.ads, join(path, "ads"), set())
    if enum_name(cs, "resource_api_version") == "V2":
        ctx.add(join(path, "resource_api_version"), _V2)
    # A missing specifier is reported by the protoc-gen-validate pass (the oneof is required).
    return opt_seconds(cs, "initial_fetch_timeout", DEFAULT_INITIAL_FETCH_TIMEOUT)


def dynamic_resources(ctx: Ctx, dr: Any, path: str) -> m.DynamicResources | None:
    """``Bootstrap.dynamic_resources`` -> model; None (problems reported) if it cannot be used."""
    before = len(ctx.problems)
    locator = "xDS-TP resource locators are not supported (use {} with dynamic_resources.ads_config)"
    ctx.check(
        dr,
        path,
        {"lds_config", "cds_config", "ads_config"},
        reasons={
            "lds_resources_locator": locator.format(f"lds_config: {ADS_SOURCE}"),
            "cds_resources_locator": locator.format(f"cds_config: {ADS_SOURCE}"),
        },
    )
    ads = None
    if dr.HasField("ads_config"):
        ads = _ads_config(ctx, dr.ads_config, join(path, "ads_config"))
    else:
        ctx.add(
            join(path, "ads_config"),
            "is required: pyproxy takes xDS over one ADS stream "
            "(api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: ...}}])",
        )
    timeouts: list[float | None] = []
    for name in ("lds_config", "cds_config"):
        if dr.HasField(name):
            timeouts.append(config_source(ctx, getattr(dr, name), join(path, name)))
    if ads is None or len(ctx.problems) != before:
        return None
    cluster, set_node_once, grpc_timeout = ads
    initial: float | None = DEFAULT_INITIAL_FETCH_TIMEOUT
    if timeouts:
        initial = None if None in timeouts else max(t for t in timeouts if t is not None)
    return m.DynamicResources(
        ads_cluster=cluster,
        lds=dr.HasField("lds_config"),
        cds=dr.HasField("cds_config"),
        initial_fetch_timeout=initial,
        set_node_on_first_message_only=set_node_once,
        grpc_timeout=grpc_timeout,
    )


def _ads_config(ctx: Ctx, acs: Any, path: str) -> tuple[str, bool, float | None] | None:
    """``ApiConfigSource`` of the ADS stream -> (cluster name, set_node_on_first_message_only, timeout)."""
    before = len(ctx.problems)
    rest_only = "{} applies to REST config sources only (use grpc_services)"
    ctx.check(
        acs,
        path,
        {"api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"},
        reasons={
            "cluster_names": rest_only.format("cluster_names"),
            "refresh_delay": rest_only.format("refresh_delay"),
            "request_timeout": rest_only.format("request_timeout"),
            "rate_limit_settings": "xDS rate limit settings are not supported",
            "config_validators": "config validators are not supported",
        },
    )
    api_type = enum_name(acs, "api_type")
    if api_type != "GRPC":
        reason = _API_TYPE_REASONS.get(api_type, f"{api_type} is not supported (supported: GRPC)")
        ctx.add(join(path, "api_type"), reason)
    if enum_name(acs, "transport_api_version") == "V2":
        ctx.add(join(path, "transport_api_version"), _V2)
    services_path = join(path, "grpc_services")
    if not len(acs.grpc_services):
        ctx.add(services_path, "exactly one grpc service is required: [{envoy_grpc: {cluster_name: ...}}]")
    cluster = ""
    timeout: float | None = None
    for i, gs in enumerate(acs.grpc_services):
        gpath = f"{services_path}[{i}]"
        if i > 0:
            ctx.add(gpath, "only one grpc service is supported (pyproxy does not fail over between ADS servers)")
            continue
        ctx.check(
            gs,
            gpath,
            {"envoy_grpc", "timeout"},
            reasons={
                "google_grpc": "google_grpc is not supported: use envoy_grpc with a static cluster",
                "initial_metadata": "initial_metadata is not supported",
                "retry_policy": "retry_policy is not supported",
            },
        )
        if gs.HasField("envoy_grpc"):
            ctx.check(gs.envoy_grpc, join(gpath, "envoy_grpc"), {"cluster_name"})
            cluster = gs.envoy_grpc.cluster_name
        timeout = opt_seconds(gs, "timeout", None)
    if len(ctx.problems) != before or not cluster:
        return None  # an empty cluster_name is reported by the protoc-gen-validate pass
    return cluster, acs.set_node_on_first_message_only, timeout


ADS_CLUSTER_PATH = "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name"


def check_ads_cluster(
    ctx: Ctx, dynamic: m.DynamicResources, declared: dict[str, Any], translated: dict[str, m.Cluster]
) -> None:
    """The ADS cluster is a static cluster with endpoints in the bootstrap (``declared``: cluster protos by
    name). Every pyproxy cluster is HTTP/2 (gRPC), so a translated one is fit for the stream."""
    name = dynamic.ads_cluster
    proto = declared.get(name)
    if proto is None:
        ctx.add(ADS_CLUSTER_PATH, f"unknown cluster {name!r}: the ADS cluster must be one of static_resources.clusters")
        return
    kind = enum_name(proto, "type")
    if kind not in _STATIC_TYPES:
        ctx.add(
            ADS_CLUSTER_PATH,
            f"cluster {name!r} is {kind}: the ADS cluster needs its endpoints in the bootstrap "
            f"({', '.join(_STATIC_TYPES)})",
        )
        return
    cluster = translated.get(name)
    if cluster is None or cluster.tls is None:
        return  # its own problems are reported where it is defined
    fetched = [c.sds_name for c in cluster.tls.certificates if c.sds_name and c.cert_chain_file is None]
    validation = cluster.tls.validation
    if validation is not None and validation.sds_name and validation.trusted_ca_file is None:
        fetched.append(validation.sds_name)
    if fetched:
        ctx.add(
            ADS_CLUSTER_PATH,
            f"cluster {name!r} takes TLS secrets {', '.join(repr(s) for s in fetched)} from SDS over ADS, "
            "but they are needed to open the ADS stream (use files or static_resources.secrets)",
        )
