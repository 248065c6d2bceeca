"""Envoy v3 protos -> the frozen model (:mod:`pyproxy.config.model`), pure functions except for writing
inline TLS material to private files.

Layout, one module per resource family, each taking protos (never the whole bootstrap) so the xDS client
can reuse them for LDS/RDS/CDS/EDS/SDS resources:

- ``common``: the :class:`Ctx` (problem collector, static secrets, cluster references), the field check
  that makes "never silently ignore" hold (every *set* field must be in an explicit supported set), and
  shared converters (durations, addresses, matchers, RE2 regexes, header mutations, metadata).
- ``server``: node, admin, layered_runtime.
- ``listeners`` -> ``hcm`` (HTTP connection manager, http filters, access logs) -> ``routes`` (route tables,
  matchers, domain index) -> ``actions`` (route actions: weights, timeouts, retries, mirrors).
- ``clusters`` (discovery, load balancing, endpoints) -> ``cluster_options`` (HTTP/2 upstream, circuit
  breakers, outlier detection); ``tls`` (transport sockets, certificates, static SDS secrets).
- ``consistency``: cross-resource checks (unique names and addresses, referenced clusters exist).
- ``dynamic``: ``dynamic_resources`` (the ADS stream) and ADS config sources (rds, EDS, SDS, LDS, CDS).

:mod:`pyproxy.config.xds_resources` runs the same functions on single LDS/RDS/CDS/EDS/SDS resources.

Every function appends ``(path, reason)`` problems to the context and carries on, so one pass reports as
much as it can; :func:`translate_bootstrap` raises :class:`ConfigError` at the end if anything was found.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pyproxy.config import model as m
from pyproxy.config.errors import Problems
from pyproxy.config.material import MaterialStore, default_store
from pyproxy.config.translate.clusters import cluster
from pyproxy.config.translate.common import Ctx
from pyproxy.config.translate.consistency import check_consistency
from pyproxy.config.translate.dynamic import check_ads_cluster, dynamic_resources
from pyproxy.config.translate.listeners import listener
from pyproxy.config.translate.server import (
    admin_config,
    connection_limits,
    layered_runtime,
    node_info,
    overload_manager,
)
from pyproxy.config.translate.tls import translate_secrets

_XDS_REASON = "not supported: give ADS config sources ({ads: {}}) and dynamic_resources.ads_config"
_BOOTSTRAP_REASONS = {
    "stats_sinks": "stats sinks are not supported (scrape /stats/prometheus instead)",
    "stats_config": "stats_config is not supported (only an empty stats_config is accepted)",
    "tracing": "tracing is not supported",
    "cluster_manager": "cluster_manager settings are not supported",
    "hds_config": "health discovery (HDS) is not supported",
    "watchdog": "watchdog settings are not supported",
    "watchdogs": "watchdog settings are not supported",
    "bootstrap_extensions": "bootstrap extensions are not supported",
    "default_config_source": _XDS_REASON,
    "config_sources": _XDS_REASON,
    "certificate_provider_instances": "certificate providers are not supported (use secrets)",
}


def translate_bootstrap(
    bootstrap: Any,
    *,
    source: dict[str, object] | None = None,
    material: MaterialStore | None = None,
    problems: Problems | None = None,
) -> m.Snapshot:
    """``envoy.config.bootstrap.v3.Bootstrap`` -> :class:`Snapshot`; raises ConfigError with every problem."""
    ctx = Ctx(problems=problems if problems is not None else Problems(), material=material or default_store())
    ctx.check(
        bootstrap,
        "",
        {"node", "static_resources", "admin", "layered_runtime", "dynamic_resources", "overload_manager"},
        empty_ok={"stats_config", "cluster_manager"},
        reasons=_BOOTSTRAP_REASONS,
    )
    node = node_info(ctx, bootstrap.node, "node")
    admin = (
        admin_config(ctx, bootstrap.admin, "admin") if bootstrap.HasField("admin") else m.AdminConfig(None)
    )
    runtime = (
        layered_runtime(ctx, bootstrap.layered_runtime, "layered_runtime")
        if bootstrap.HasField("layered_runtime")
        else {}
    )
    max_connections = connection_limits(ctx, runtime, "layered_runtime")
    if bootstrap.HasField("overload_manager"):
        # The resource monitor wins over the deprecated runtime key, as in Envoy.
        max_connections = overload_manager(ctx, bootstrap.overload_manager, "overload_manager") or max_connections
    ctx.runtime = runtime
    dynamic = None
    # Whether ADS is configured decides if static resources may use ads config sources; an ads_config with
    # problems still counts, so its problems are not echoed by every rds/EDS/SDS that relies on it.
    ctx.ads = bootstrap.dynamic_resources.HasField("ads_config")
    if bootstrap.dynamic_resources.ByteSize():  # an empty dynamic_resources asks for nothing, as in Envoy
        dynamic = dynamic_resources(ctx, bootstrap.dynamic_resources, "dynamic_resources")
    sr = bootstrap.static_resources
    ctx.check(sr, "static_resources", {"listeners", "clusters", "secrets"})
    ctx.secrets = translate_secrets(ctx, sr.secrets, "static_resources.secrets")
    clusters: dict[str, m.Cluster] = {}
    declared: list[tuple[str, str]] = []
    protos: dict[str, Any] = {}
    for i, proto in enumerate(sr.clusters):
        path = f"static_resources.clusters[{i}]"
        declared.append((path, proto.name))
        protos.setdefault(proto.name, proto)
        translated = cluster(ctx, proto, path)
        if translated is not None:
            clusters.setdefault(translated.name, translated)
    listeners: list[tuple[str, m.Listener]] = []
    for i, proto in enumerate(sr.listeners):
        path = f"static_resources.listeners[{i}]"
        translated_listener = listener(ctx, proto, path)
        if translated_listener is not None:
            listeners.append((path, translated_listener))
    check_consistency(ctx, listeners, declared, admin)
    if dynamic is not None:
        check_ads_cluster(ctx, dynamic, protos, clusters)
    ctx.problems.raise_if_any()
    digest = hashlib.sha256(bootstrap.SerializeToString(deterministic=True)).hexdigest()[:16]
    return m.Snapshot(
        version=f"bootstrap-{digest}",
        node=node,
        admin=admin,
        listeners={lst.name: lst for _, lst in listeners},
        clusters=clusters,
        source=source if source is not None else {},
        runtime=runtime,
        warnings=tuple(ctx.warnings),
        dynamic=dynamic,
        max_downstream_connections=max_connections,
    )


__all__ = ["translate_bootstrap"]
