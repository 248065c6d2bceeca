"""``translate_for_proxy``: the registry + stored Istio resources -> the xDS resources of one proxy.

Which proxy: a node (``envoy.config.core.v3.Node``, or its id) is a *proxyless gRPC client* when its
metadata says ``GENERATOR: grpc`` (what Istio's grpc-agent sets) or it is registered as one; otherwise it
is a *sidecar* and its id (Istio's ``sidecar~<ip>~<workload>.<ns>~<ns>.svc.<suffix>``) must name a
registry workload.

What a sidecar sees: the services its app calls (its ``calls``; the registry's implicit Sidecar egress
scope), plus the services their routes send or mirror to (clusters only). A proxyless client sees every
service (grpcio subscribes to the names it dials; the ADS server answers only those).

What a sidecar gets for security (issue 4): TLS material by SDS (``default`` from its agent, ``ROOTCA``
from the control plane; ``tls="files"`` names the workload's certificate files instead), client-side
auto-mTLS decided per cluster from PeerAuthentication and DestinationRule (:mod:`.tls`), the inbound
listener's filter chains from the workload's effective PeerAuthentication mode, and RBAC filters from the
AuthorizationPolicies that select it (:mod:`.authz`).

Output: :class:`ProxyResources`, per type URL ``{name: proto}``, each resource with a version that is the
hash of its deterministic serialization, so a change shows up exactly where it is and the ADS server can
push only the types (and names) whose versions moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

# typed_config messages must be registered before ParseDict can resolve their @type.
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from mesh_ctl.registry import Labels, ProxylessClient, Registry, ServiceEntry, WorkloadEntry, parse_node_id
from mesh_ctl.translate.authz import rbac_filters
from mesh_ctl.translate.clusters import (
    ServicePlan,
    Viewer,
    inbound_cluster_for,
    load_assignments,
    outbound_clusters,
    plan_service,
    subset_weights,
)
from mesh_ctl.translate.errors import TranslationError, UnknownProxyError
from mesh_ctl.translate.istio import IstioConfig, index_resources
from mesh_ctl.translate.listeners import (
    inbound_listener,
    outbound_listener,
    outbound_route_configuration,
    proxyless_listener,
    proxyless_listener_names,
    proxyless_route_configuration,
    virtual_host,
)
from mesh_ctl.translate.names import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    OUTBOUND_ROUTE,
    ROUTE_TYPE,
    SECRET_TYPE,
    TYPE_URLS,
)
from mesh_ctl.translate.routes import RouteScope, default_route, referenced_clusters, virtual_service_routes
from mesh_ctl.translate.telemetry import access_logs
from mesh_ctl.translate.tls import MATERIALS, TlsMaterial, TlsSource
from mesh_ctl.translate.values import Json

ProxyKind = Literal["sidecar", "proxyless"]
GENERATOR_GRPC = "grpc"
_MESSAGES: dict[str, type[Message]] = {
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    SECRET_TYPE: secret_pb2.Secret,
}
# envoy.config.core.v3.Node, its id, or a mapping {"id": ..., "metadata": {...}} (protos are Any to mypy).
NodeLike: TypeAlias = Any


@dataclass(frozen=True)
class ProxyResources:
    """The xDS resources of one proxy. ``resources[type_url][name]`` is the proto (do not mutate it),
    ``versions[type_url][name]`` its version (16 hex digits of SHA-256 over the deterministic
    serialization). ``warnings`` are things translated with a caveat, for the operator's log."""

    node_id: str
    kind: ProxyKind
    resources: Mapping[str, Mapping[str, Any]]  # the protos (Envoy's message classes are untyped for mypy)
    versions: Mapping[str, Mapping[str, str]]
    warnings: tuple[str, ...] = ()
    # Which services (FQDNs) this proxy's configuration depends on: for deciding whom a change concerns.
    services: frozenset[str] = field(default_factory=frozenset)
    # encoded[type_url][name]: the deterministic serialization the version was computed from, made where the
    # translation runs (a worker thread) and sent as the Any's value, so that the event loop never serializes
    # a resource (a route configuration of 20,000 routes is 13 MB: ~0.1 s per serialization, issue 9.6).
    encoded: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)

    def of(self, type_url: str) -> Mapping[str, Any]:
        return self.resources.get(type_url, {})

    def type_version(self, type_url: str, names: Iterable[str] | None = None) -> str:
        """One version for a whole type (or the ``names`` subset of it): what SotW ``version_info`` needs."""
        versions = self.versions.get(type_url, {})
        wanted = sorted(versions) if names is None else sorted(n for n in set(names) if n in versions)
        h = hashlib.sha256()
        for name in wanted:
            h.update(f"{name}\0{versions[name]}\n".encode())
        return h.hexdigest()[:16]

    def with_type(self, type_url: str, resources: Mapping[str, Message]) -> ProxyResources:
        """A copy whose resources of ``type_url`` are ``resources`` (versioned here), e.g. the SDS secrets
        the control plane adds to a sidecar's translated resources."""
        all_resources = {**self.resources, type_url: dict(resources)}
        data = {name: encode(m) for name, m in resources.items()}
        versions = {**self.versions, type_url: {name: version_of(d) for name, d in data.items()}}
        return ProxyResources(self.node_id, self.kind, all_resources, versions, self.warnings, self.services,
                              {**self.encoded, type_url: data})

    def changed(self, previous: ProxyResources | None) -> dict[str, set[str]]:
        """Per type URL, the names added, removed or whose version changed since ``previous`` (only types
        with a change are present)."""
        out: dict[str, set[str]] = {}
        types = dict.fromkeys((*TYPE_URLS, SECRET_TYPE, *self.versions, *(previous.versions if previous else ())))
        for type_url in types:
            new = self.versions.get(type_url, {})
            old = previous.versions.get(type_url, {}) if previous is not None else {}
            diff = {n for n in new.keys() | old.keys() if new.get(n) != old.get(n)}
            if diff:
                out[type_url] = diff
        return out


def encode(message: Message) -> bytes:
    return bytes(message.SerializeToString(deterministic=True))


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resource_version(message: Message) -> str:
    return version_of(encode(message))


# --------------------------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class Proxy:
    """A node resolved against the registry."""

    node_id: str
    kind: ProxyKind
    namespace: str
    labels: Labels
    workload: WorkloadEntry | None = None
    client: ProxylessClient | None = None


def _node_parts(node: NodeLike) -> tuple[str, dict[str, Any]]:
    if isinstance(node, str):
        return node, {}
    if isinstance(node, base_pb2.Node):
        return node.id, json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    metadata = node.get("metadata") or {}
    return str(node.get("id", "")), dict(metadata) if isinstance(metadata, Mapping) else {}


def identify(registry: Registry, node: NodeLike) -> Proxy:
    """Resolve ``node``; raises :class:`UnknownProxyError` when it is neither a registry workload's sidecar
    nor a proxyless client whose namespace can be told."""
    node_id, metadata = _node_parts(node)
    client = registry.proxyless_client(node_id)
    if client is not None or metadata.get("GENERATOR") == GENERATOR_GRPC:
        if client is None:
            parts = parse_node_id(node_id)
            namespace = metadata.get("NAMESPACE") or (parts.namespace if parts else None)
            if not namespace:
                raise UnknownProxyError(f"proxyless node {node_id!r}: no NAMESPACE in its metadata and its id "
                                        "is not sidecar~<ip>~<name>.<ns>~<ns>.svc.<suffix>")
            client = ProxylessClient(node_id, str(namespace), metadata)
        return Proxy(node_id, "proxyless", client.namespace, client.labels, client=client)
    workload = registry.workload_by_node_id(node_id)
    if workload is None:
        parts = parse_node_id(node_id)
        if parts is not None:
            workload = registry.workload(parts.pod, parts.namespace)
    if workload is None:
        raise UnknownProxyError(f"node {node_id!r} is not the sidecar of any workload in the registry")
    return Proxy(node_id, "sidecar", workload.namespace, workload.labels, workload=workload)


# --------------------------------------------------------------------------------------------- translation


def translate_for_proxy(registry: Registry, resources: Sequence[Mapping[str, Any]] | IstioConfig,
                        node: NodeLike, *, tls: TlsMaterial = "sds") -> ProxyResources:
    """The xDS resources of ``node`` (see the module docstring). ``resources`` are Istio resource dicts (or
    an :class:`IstioConfig` indexed once with :func:`index_resources` and shared by many calls). ``tls``:
    where a sidecar's TLS contexts take certificates from, ``sds`` (Istio's ``default``/``ROOTCA``) or
    ``files`` (the workload's certificate files in the registry; for static bootstraps)."""
    if tls not in MATERIALS:
        raise ValueError(f"tls must be one of {MATERIALS}, got {tls!r}")
    istio = resources if isinstance(resources, IstioConfig) else index_resources(resources,
                                                                                 registry.domain_suffix)
    proxy = identify(registry, node)
    if proxy.kind == "proxyless":
        return _proxyless(registry, istio, proxy)
    return _sidecar(registry, istio, proxy, tls)


class _Builder:
    """Collects resources as JSON dicts, then parses them into protos (ParseDict checks every field name
    and @type, so a typo here fails loudly in tests) and versions them."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Json]] = {t: {} for t in (*TYPE_URLS, SECRET_TYPE)}
        self.warnings: list[str] = []
        self.services: set[str] = set()

    def add(self, type_url: str, doc: Json) -> None:
        self.docs[type_url].setdefault(str(doc.get("name") or doc.get("cluster_name")), doc)

    def build(self, proxy: Proxy) -> ProxyResources:
        resources: dict[str, dict[str, Any]] = {}
        versions: dict[str, dict[str, str]] = {}
        encoded: dict[str, dict[str, bytes]] = {}
        for type_url in TYPE_URLS:
            resources[type_url] = {}
            versions[type_url] = {}
            encoded[type_url] = {}
            for name in sorted(self.docs[type_url]):
                message = json_format.ParseDict(self.docs[type_url][name], _MESSAGES[type_url]())
                resources[type_url][name] = message
                data = encoded[type_url][name] = encode(message)
                versions[type_url][name] = version_of(data)
        return ProxyResources(proxy.node_id, proxy.kind, resources, versions, tuple(self.warnings),
                              frozenset(self.services), encoded)


def _scope(registry: Registry, service: ServiceEntry, proxy: Proxy) -> RouteScope:
    def service_port(fqdn: str) -> int | None:
        s = registry.service(fqdn)
        return s.port if s is not None else None

    return RouteScope(port=service.port, domain_suffix=registry.domain_suffix, proxy_namespace=proxy.namespace,
                      proxy_labels=proxy.labels, proxyless=proxy.kind == "proxyless", service_port=service_port)


def _routes(registry: Registry, istio: IstioConfig, plan: ServicePlan, proxy: Proxy) -> list[Json]:
    scope = _scope(registry, plan.service, proxy)
    vs = istio.virtual_service(plan.service.fqdn, proxy.namespace)
    if vs is not None:
        routes = virtual_service_routes(vs.config, scope)
        if routes:
            return routes
    return [default_route(plan.service, scope, subset_weights(plan))]


def _add_service(b: _Builder, registry: Registry, istio: IstioConfig, plan: ServicePlan, viewer: Viewer) -> None:
    b.services.add(plan.service.fqdn)
    for c in outbound_clusters(plan, registry, istio, viewer, b.warnings):
        b.add(CLUSTER_TYPE, c)
    for cla in load_assignments(plan, registry, viewer):
        b.add(ENDPOINT_TYPE, cla)


def _referenced(registry: Registry, routes: Iterable[Json], seen: set[str]) -> list[ServiceEntry]:
    """Registry services that ``routes`` send or mirror to and are not in ``seen`` yet."""
    out = []
    for route in routes:
        for cluster in referenced_clusters(route):
            fqdn = cluster.split("|")[-1]
            service = registry.service(fqdn)
            if service is not None and fqdn not in seen:
                seen.add(fqdn)
                out.append(service)
    return out


def _check_references(b: _Builder, routes: Iterable[Json], where: str) -> None:
    for route in routes:
        for cluster in referenced_clusters(route):
            if cluster not in b.docs[CLUSTER_TYPE]:
                b.warnings.append(f"{where}: route {route.get('name') or '(unnamed)'!r} sends to {cluster!r}, "
                                  "which does not exist (no such service or subset): those calls fail with 503")


def _sidecar(registry: Registry, istio: IstioConfig, proxy: Proxy, material: TlsMaterial) -> ProxyResources:
    w = proxy.workload
    assert w is not None
    if material == "files" and w.certs is None:
        raise TranslationError("registry", f"workload {w.namespace}/{w.name} has no certificate files (its "
                               "sidecar needs them for mTLS with tls=files)")
    b = _Builder()
    source = TlsSource(material, w.certs)
    viewer = Viewer(proxy.namespace, proxy.labels, proxyless=False, tls=source, source_address=w.address)
    logs = access_logs(registry.access_log_file, registry.access_log_format)
    if w.outbound_port is not None:
        called = [s for s in (registry.service(fqdn) for fqdn in w.calls) if s is not None]
        seen = {s.fqdn for s in called}
        vhosts: list[Json] = []
        all_routes: list[Json] = []
        pending = list(called)
        while pending:
            service = pending.pop(0)
            plan = plan_service(istio, service, viewer)
            _add_service(b, registry, istio, plan, viewer)
            if service in called:
                routes = _routes(registry, istio, plan, proxy)
                vhosts.append(virtual_host(service, proxy.namespace, routes, with_ports_only=False))
                all_routes.extend(routes)
                pending.extend(_referenced(registry, routes, seen))
        b.add(LISTENER_TYPE, outbound_listener(w, OUTBOUND_ROUTE, logs))
        b.add(ROUTE_TYPE, outbound_route_configuration(OUTBOUND_ROUTE, vhosts))
        _check_references(b, all_routes, OUTBOUND_ROUTE)
    served = registry.selected_by(w)
    if served and w.inbound_port is not None and w.app_port is not None:
        service = served[0]
        rule = istio.destination_rule(service.fqdn, service.namespace, service.namespace, w.labels)
        mode = istio.mtls(w.namespace, w.labels).for_port(service.port)
        filters = rbac_filters(istio.authorization(w.namespace, w.labels), service.port)
        b.add(LISTENER_TYPE, inbound_listener(w, service, mode, source, registry.trust_domain, filters, logs))
        b.add(CLUSTER_TYPE, inbound_cluster_for(service, w, rule))
        b.services.add(service.fqdn)
    return b.build(proxy)


def _proxyless(registry: Registry, istio: IstioConfig, proxy: Proxy) -> ProxyResources:
    b = _Builder()
    viewer = Viewer(proxy.namespace, proxy.labels, proxyless=True)
    all_routes: list[tuple[str, list[Json]]] = []
    for service in registry.services:
        plan = plan_service(istio, service, viewer)
        _add_service(b, registry, istio, plan, viewer)
        routes = _routes(registry, istio, plan, proxy)
        vhost = virtual_host(service, proxy.namespace, routes, with_ports_only=True)
        rc = proxyless_route_configuration(service, vhost)
        b.add(ROUTE_TYPE, rc)
        all_routes.append((rc["name"], routes))
        for name in proxyless_listener_names(service, proxy.namespace):
            b.add(LISTENER_TYPE, proxyless_listener(name, service))
    for where, routes in all_routes:
        _check_references(b, routes, where)
    return b.build(proxy)
