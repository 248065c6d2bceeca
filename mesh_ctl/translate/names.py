"""Istio's names for xDS resources, and the xDS v3 type URLs."""

from __future__ import annotations

from mesh_ctl.registry import ServiceEntry

_TYPE = "type.googleapis.com/"
LISTENER_TYPE = f"{_TYPE}envoy.config.listener.v3.Listener"
ROUTE_TYPE = f"{_TYPE}envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = f"{_TYPE}envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = f"{_TYPE}envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = f"{_TYPE}envoy.extensions.transport_sockets.tls.v3.Secret"
# The order Envoy asks for them over ADS (CDS, then EDS for those clusters, then LDS, then RDS).
TYPE_URLS = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
SHORT_NAMES = {CLUSTER_TYPE: "CDS", ENDPOINT_TYPE: "EDS", LISTENER_TYPE: "LDS", ROUTE_TYPE: "RDS",
               SECRET_TYPE: "SDS"}
# Istio's SDS resource names: the workload's key and certificate chain (the sidecar's agent makes and keeps
# them: the control plane never serves it) and the trust bundle (served by the control plane).
SDS_DEFAULT = "default"
SDS_ROOT = "ROOTCA"

HCM_TYPE = f"{_TYPE}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = f"{_TYPE}envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_TLS_TYPE = f"{_TYPE}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS_TYPE = f"{_TYPE}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = f"{_TYPE}{HTTP_OPTIONS}"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_HOSTS_TYPE = f"{_TYPE}envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
RBAC_TYPE = f"{_TYPE}envoy.extensions.filters.http.rbac.v3.RBAC"
FAULT_TYPE = f"{_TYPE}envoy.extensions.filters.http.fault.v3.HTTPFault"
TLS_INSPECTOR_TYPE = f"{_TYPE}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
RBAC = "envoy.filters.http.rbac"
FAULT = "envoy.filters.http.fault"
TLS = "envoy.transport_sockets.tls"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"

OUTBOUND_LISTENER = "virtualOutbound"  # the sidecar listener the app dials (Istio's name for :15001)
INBOUND_LISTENER = "virtualInbound"  # the sidecar listener other sidecars dial (Istio's name for :15006)
OUTBOUND_ROUTE = "virtualOutbound"  # the outbound listener's route configuration (as mesh_ctl up names it)
DEFAULT_ROUTE = "default"  # Istio's name for the route generated when no VirtualService applies


def outbound_cluster(port: int, subset: str, fqdn: str) -> str:
    """Istio's ``outbound|<port>|<subset>|<fqdn>``."""
    return f"outbound|{port}|{subset}|{fqdn}"


def service_cluster(service: ServiceEntry, subset: str = "") -> str:
    return outbound_cluster(service.port, subset, service.fqdn)


def inbound_cluster(port: int) -> str:
    """Istio's ``inbound|<port>||``."""
    return f"inbound|{port}||"


def outbound_sni(service: ServiceEntry, subset: str = "") -> str:
    """Istio's ``outbound_.<port>_.<subset>_.<fqdn>``."""
    return f"outbound_.{service.port}_.{subset}_.{service.fqdn}"


def service_hosts(service: ServiceEntry, caller_namespace: str) -> list[str]:
    """The host names a caller in ``caller_namespace`` may use for ``service``, FQDN first (Istio's
    ``generateVirtualHostDomains``): the short name only from the same namespace."""
    ns_host = f"{service.name}.{service.namespace}"
    if service.namespace == caller_namespace:
        return [service.fqdn, service.name, f"{ns_host}.svc", ns_host]
    return [service.fqdn, ns_host, f"{ns_host}.svc"]


def service_domains(service: ServiceEntry, caller_namespace: str) -> list[str]:
    """Virtual host domains: every host of :func:`service_hosts`, without and with ``:<port>``."""
    return [d for h in service_hosts(service, caller_namespace) for d in (h, f"{h}:{service.port}")]


def vhost_name(service: ServiceEntry) -> str:
    return f"{service.fqdn}:{service.port}"
