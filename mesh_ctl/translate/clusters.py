"""Services -> CDS clusters and EDS load assignments, for a sidecar or a proxyless gRPC client.

Per service a proxy can reach: ``outbound|<port>||<fqdn>`` (every endpoint) and one
``outbound|<port>|<subset>|<fqdn>`` per subset. Subsets come from the DestinationRule that applies (see
:mod:`.istio`); without one, from the topology's subsets (the registry's implicit DestinationRule, so that a
mesh with no Istio resources is configured like ``mesh_ctl up``'s bootstraps).

Sidecar clusters (Istio's ``cluster_builder.go``): type EDS over ADS, HTTP/2 upstream, the traffic policy of
:mod:`.policy`, Istio mTLS (certificates by SDS or files, a SAN match on the SPIFFE IDs of the service's
workloads, Istio's SNI ``outbound_.<port>_.<subset>_.<fqdn>``) unless auto-mTLS or the DestinationRule says
plaintext (:mod:`.tls`), and cluster metadata.
Endpoints are the workloads' sidecar inbound listeners (``<address>:15006``: local mode has no iptables
redirect).

Proxyless clusters (Istio's ``grpcgen/cds.go``, and what grpcio accepts): type EDS over ADS and
``ROUND_ROBIN``, nothing else; grpcio rejects ``LEAST_REQUEST``. Endpoints are the apps' own ports,
plaintext (issue 4 adds security). Every locality carries ``load_balancing_weight`` (grpcio drops
localities without one) and a ``locality`` message, empty here (grpcio NACKs a locality without it).
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh_ctl.registry import Labels, Registry, ServiceEntry, WorkloadEntry
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.istio import DestinationRuleEntry, IstioConfig
from mesh_ctl.translate.names import (
    HTTP_OPTIONS,
    HTTP_OPTIONS_TYPE,
    inbound_cluster,
    outbound_sni,
    service_cluster,
)
from mesh_ctl.translate.policy import (
    ConnectionPool,
    TrafficPolicy,
    connection_pool,
    load_balancer,
    merge_subset,
    outlier_detection,
    port_policy,
    tls_mode,
)
from mesh_ctl.translate.tls import TlsSource, client_tls_mode, upstream_tls
from mesh_ctl.translate.values import (
    ANY_KEY,
    Json,
    array,
    join,
    obj,
    proto_duration,
    source_bind_config,
    string,
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The proxy clusters are built for: its namespace and labels (DestinationRule selection), whether it
    is proxyless, and (for a sidecar) where its TLS material comes from."""

    namespace: str
    labels: Labels
    proxyless: bool
    tls: TlsSource | None = None
    source_address: str | None = None  # a sidecar's workload address: its upstream connections come from it


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Labels
    policy: TrafficPolicy


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """How one service looks to one proxy: its DestinationRule (if any), policy and subsets."""

    service: ServiceEntry
    rule: DestinationRuleEntry | None
    policy: TrafficPolicy
    subsets: tuple[Subset, ...]

    def cluster_names(self) -> list[str]:
        return [service_cluster(self.service), *(service_cluster(self.service, s.name) for s in self.subsets)]


def plan_service(istio: IstioConfig, service: ServiceEntry, viewer: Viewer) -> ServicePlan:
    rule = istio.destination_rule(service.fqdn, service.namespace, viewer.namespace, viewer.labels)
    if rule is None:
        subsets = tuple(Subset(s.name, s.labels, TrafficPolicy()) for s in service.subsets)
        return ServicePlan(service, None, TrafficPolicy(), subsets)
    spec = rule.config.spec
    try:
        policy = port_policy(spec["trafficPolicy"], "spec.trafficPolicy", service.port)[0] \
            if "trafficPolicy" in spec else TrafficPolicy()
        out = []
        for i, subset in enumerate(array(spec.get("subsets"), "spec.subsets")):
            spath = join("spec.subsets", i)
            s = obj(subset, spath, {"name", "labels", "trafficPolicy"})
            labels = obj(s.get("labels"), join(spath, "labels"), ANY_KEY)
            merged = merge_subset(spec.get("trafficPolicy"), "spec.trafficPolicy", s.get("trafficPolicy"),
                                  join(spath, "trafficPolicy"), service.port)
            out.append(Subset(string(s.get("name", ""), join(spath, "name")),
                              {str(k): str(v) for k, v in labels.items()}, merged))
    except TranslationError as e:
        raise e.in_resource(rule.config.label) from None
    return ServicePlan(service, rule, policy, tuple(out))


# --------------------------------------------------------------------------------------------- clusters


def outbound_clusters(plan: ServicePlan, registry: Registry, istio: IstioConfig, viewer: Viewer,
                      warnings: list[str]) -> list[Json]:
    out = [_cluster(plan, None, plan.policy, registry, istio, viewer, warnings)]
    out.extend(_cluster(plan, s, s.policy, registry, istio, viewer, warnings) for s in plan.subsets)
    return out


def _eds(name: str, *, initial_fetch_timeout: bool) -> Json:
    source: Json = {"ads": {}, "resource_api_version": "V3"}
    if initial_fetch_timeout:
        source["initial_fetch_timeout"] = "0s"  # Istio: do not hold the cluster back waiting for EDS
    return {"service_name": name, "eds_config": source}


def _cluster(plan: ServicePlan, sub: Subset | None, policy: TrafficPolicy, registry: Registry, istio: IstioConfig,
             viewer: Viewer, warnings: list[str]) -> Json:
    service = plan.service
    subset = sub.name if sub is not None else ""
    name = service_cluster(service, subset)
    label = plan.rule.config.label if plan.rule else ""
    try:
        lb = load_balancer(policy)
        pool = connection_pool(policy)
        outlier = outlier_detection(policy)
        mode = tls_mode(policy)
    except TranslationError as e:
        raise e.in_resource(label) from None
    if viewer.proxyless:
        asked = policy.load_balancer.value.get("simple", 0) if policy.load_balancer is not None else 0
        if asked not in (0, 4, "UNSPECIFIED", "ROUND_ROBIN"):
            warnings.append(f"{name}: proxyless gRPC clients only get ROUND_ROBIN ({label} asks for {asked})")
        if outlier is not None or policy.connection_pool is not None:
            warnings.append(f"{name}: connectionPool/outlierDetection of {label} do not apply to proxyless "
                            "gRPC clients")
        if mode == "ISTIO_MUTUAL":
            warnings.append(f"{name}: proxyless gRPC clients call the apps in plaintext ({label} asks for "
                            "ISTIO_MUTUAL)")
        return {"name": name, "type": "EDS", "eds_cluster_config": _eds(name, initial_fetch_timeout=False),
                "lb_policy": "ROUND_ROBIN"}
    cluster: Json = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": _eds(name, initial_fetch_timeout=True),
        "connect_timeout": proto_duration(pool.connect_timeout),
        "lb_policy": lb,
        "common_lb_config": {},
        "circuit_breakers": {"thresholds": [dict(pool.thresholds or {})]},
        "typed_extension_protocol_options": http_protocol_options(pool),
        "metadata": {"filter_metadata": {"istio": _metadata(service, subset, plan.rule)}},
    }
    if viewer.source_address is not None:
        cluster["upstream_bind_config"] = source_bind_config(viewer.source_address)
    if outlier is not None:
        cluster["outlier_detection"], panic = outlier
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": panic}}
    endpoints = registry.endpoints(service, sub.labels if sub is not None else None)
    endpoint_modes = [istio.mtls(w.namespace, w.labels).for_port(service.port) for w in endpoints]
    client, mixed = client_tls_mode(mode, endpoint_modes, istio.mtls(service.namespace, {}).mode)
    if mixed:
        off = sorted(f"{w.namespace}/{w.name}" for w, m in zip(endpoints, endpoint_modes, strict=True)
                     if m == "DISABLE")
        warnings.append(f"{name}: PeerAuthentication disables mTLS on {', '.join(off)} but not on the other "
                        "endpoints; this cluster originates mTLS, so calls to those endpoints fail (pyproxy has "
                        "no per-endpoint transport_socket_matches)")
    if client == "ISTIO_MUTUAL":
        cluster["transport_socket"] = upstream_tls(_require_tls(viewer), registry.service_accounts(service),
                                                   outbound_sni(service, subset))
    return cluster


def inbound_cluster_for(service: ServiceEntry, workload: WorkloadEntry, rule: DestinationRuleEntry | None,
                        ) -> Json:
    """``inbound|<port>||``: STATIC to the local app (h2c); a DestinationRule's connectionPool applies here
    too, as in Istio."""
    assert workload.app_port is not None
    policy = TrafficPolicy()
    if rule is not None and "trafficPolicy" in rule.config.spec:
        try:
            policy = port_policy(rule.config.spec["trafficPolicy"], "spec.trafficPolicy", service.port)[0]
            pool = connection_pool(policy)
        except TranslationError as e:
            raise e.in_resource(rule.config.label) from None
    else:
        pool = connection_pool(policy)
    name = inbound_cluster(service.port)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": proto_duration(pool.connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {"thresholds": [dict(pool.thresholds or {})]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(workload.address, workload.app_port)}}]}]},
        "typed_extension_protocol_options": http_protocol_options(pool),
        "metadata": {"filter_metadata": {"istio": {"services": [_service_meta(service)]}}},
    }


def http_protocol_options(pool: ConnectionPool) -> Json:
    """HTTP/2 upstream (gRPC), with the connection pool's HTTP settings."""
    h2: Json = {}
    if pool.max_concurrent_streams:
        h2["max_concurrent_streams"] = pool.max_concurrent_streams
    options: Json = {"@type": HTTP_OPTIONS_TYPE}
    if pool.use_client_protocol:
        options["use_downstream_protocol_config"] = {"http2_protocol_options": h2}
    else:
        options["explicit_http_config"] = {"http2_protocol_options": h2}
    common: Json = {}
    if pool.idle_timeout is not None:
        common["idle_timeout"] = proto_duration(pool.idle_timeout)
    if pool.max_requests_per_connection:
        common["max_requests_per_connection"] = pool.max_requests_per_connection
    if common:
        options["common_http_protocol_options"] = common
    return {HTTP_OPTIONS: options}


def _require_tls(viewer: Viewer) -> TlsSource:
    if viewer.tls is None:
        raise TranslationError("registry", "this proxy has no TLS settings, which mTLS needs")
    return viewer.tls


def _service_meta(service: ServiceEntry) -> Json:
    return {"host": service.fqdn, "name": service.name, "namespace": service.namespace}


def _metadata(service: ServiceEntry, subset: str, rule: DestinationRuleEntry | None) -> Json:
    meta: Json = {"services": [_service_meta(service)], "default_original_port": service.port}
    if subset:
        meta["subset"] = subset
    if rule is not None:
        meta["config"] = rule.config.config_path
    return meta


# --------------------------------------------------------------------------------------------- endpoints


def load_assignments(plan: ServicePlan, registry: Registry, viewer: Viewer) -> list[Json]:
    """One ClusterLoadAssignment per cluster of the plan."""
    out = [_assignment(service_cluster(plan.service), registry.endpoints(plan.service), registry, viewer)]
    for s in plan.subsets:
        workloads = registry.endpoints(plan.service, s.labels)
        out.append(_assignment(service_cluster(plan.service, s.name), workloads, registry, viewer))
    return out


def _assignment(name: str, workloads: tuple[WorkloadEntry, ...], registry: Registry, viewer: Viewer) -> Json:
    lb_endpoints = []
    for w in workloads:
        port = w.app_port if viewer.proxyless else w.inbound_port
        if port is None or not registry.is_ready(w):  # Istio leaves endpoints that are not ready out of EDS
            continue
        lb_endpoints.append({
            "endpoint": {"address": socket_address(w.address, port)},
            "metadata": {"filter_metadata": {"istio": {"workload": istio_workload(w, registry)}}},
            "load_balancing_weight": 1,
        })
    if not lb_endpoints:
        # No locality at all rather than one with weight 0 (grpcio drops those, Envoy ignores them).
        return {"cluster_name": name, "endpoints": []}
    # ``locality`` must be present even when empty: grpcio NACKs a locality without it.
    return {"cluster_name": name, "endpoints": [
        {"locality": {}, "lb_endpoints": lb_endpoints, "load_balancing_weight": len(lb_endpoints)}]}


def istio_workload(w: WorkloadEntry, registry: Registry) -> str:
    """Istio's endpoint metadata ``istio.workload``: name;namespace;canonical service;revision;cluster."""
    return ";".join([w.name, w.namespace, w.canonical_service or w.name, w.canonical_revision,
                     registry.cluster_id])


def socket_address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def subset_weights(plan: ServicePlan) -> list[tuple[str, int]] | None:
    """The topology's split over the subsets the proxy has (None: send to the whole service)."""
    defined = {s.name for s in plan.subsets}
    live = [(service_cluster(plan.service, s.name), s.weight) for s in plan.service.subsets
            if s.weight > 0 and s.name in defined]
    return live or None
