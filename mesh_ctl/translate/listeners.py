"""Listeners (LDS) and route configurations (RDS).

Sidecar:

- ``virtualOutbound`` on ``<workload ip>:15001`` (OUTBOUND, plain h2c: the local app dials it), one HTTP
  connection manager whose routes come over RDS: ``rds {config_source: {ads: {}, resource_api_version: V3},
  route_config_name: virtualOutbound}``, with the filters ``envoy.filters.http.fault`` (empty: routes with a
  VirtualService ``fault`` configure it per route) and the router, Istio's order (``buildHTTPConnectionManager``
  appends fault and CORS after the authn/authz, stats and ALPN filters, just before the router; minimesh has
  none of those on outbound, and no CORS). Istio puts the fault filter on inbound HCMs too, where no route
  ever configures it; minimesh leaves it out there. The route configuration has one virtual host per service the app
  calls, named ``<fqdn>:<port>``, with Istio's domain variants (``payment``, ``payment:8080``,
  ``payment.default`` ... ``payment.default.svc.cluster.local:8080``), ``validate_clusters: false`` (a
  route to a missing subset answers 503, as in Istio, instead of NACKing everything) and
  ``include_request_attempt_count`` (Istio's ``x-envoy-attempt-count``).
- ``virtualInbound`` on ``<workload ip>:15006`` (INBOUND) when a service selects the workload: the filter
  chains of the workload's PeerAuthentication mode for the service port (STRICT: mTLS only; PERMISSIVE:
  ``tls_inspector`` + an mTLS chain and a plaintext chain; DISABLE: plaintext; see :mod:`.tls`), each with
  the same HTTP connection manager: the RBAC filters of the AuthorizationPolicies that select the workload
  (:mod:`.authz`), then the router, and an inline route to ``inbound|<port>||`` (Istio's inbound default
  route: no timeout, grpc-timeout honoured, retry ``reset-before-request``).

Proxyless gRPC client (Istio's ``grpcgen/lds.go``): one API listener per name the client may dial,
``<host>:<port>`` for every host variant, each an HTTP connection manager with ``rds`` naming the route
configuration ``outbound|<port>||<fqdn>`` and the filters ``envoy.filters.http.fault`` and
``envoy.filters.http.router`` (Istio's ``supportedFilters``; grpcio implements the fault filter, gRFC A33);
that route configuration has the service's virtual host (domains with ports, as grpcio matches the dial
target).
"""

from __future__ import annotations

from mesh_ctl.registry import ServiceEntry, WorkloadEntry
from mesh_ctl.translate.clusters import socket_address
from mesh_ctl.translate.fault import fault_filter
from mesh_ctl.translate.limits import hcm_connection_options
from mesh_ctl.translate.names import (
    DEFAULT_ROUTE,
    HCM,
    HCM_TYPE,
    INBOUND_LISTENER,
    OUTBOUND_LISTENER,
    ROUTER,
    ROUTER_TYPE,
    inbound_cluster,
    service_cluster,
    service_hosts,
    vhost_name,
)
from mesh_ctl.translate.peer_authn import MtlsMode
from mesh_ctl.translate.retry import inbound_policy
from mesh_ctl.translate.tls import TlsSource, inbound_chains
from mesh_ctl.translate.values import Json

MAX_DIRECT_RESPONSE_BODY = 1024 * 1024  # Istio's limit (Envoy's default is 4 KiB)


def _router() -> Json:
    return {"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}


def _rds(route_config_name: str) -> Json:
    return {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": route_config_name}


def _hcm(stat_prefix: str, routes: Json, filters: list[Json] | None = None, access_log: list[Json] | None = None,
         ) -> Json:
    """``routes`` is either ``{"rds": ...}`` or ``{"route_config": ...}``; ``filters`` go before the router."""
    hcm: Json = {"@type": HCM_TYPE, "stat_prefix": stat_prefix, **routes,
                 "http_filters": [*(filters or ()), _router()],
                 "common_http_protocol_options": hcm_connection_options()}
    if access_log:
        hcm["access_log"] = access_log
    return {"name": HCM, "typed_config": hcm}


# --------------------------------------------------------------------------------------------- sidecar


def outbound_listener(workload: WorkloadEntry, route_config_name: str, access_log: list[Json] | None = None,
                      ) -> Json:
    assert workload.outbound_port is not None
    return {
        "name": OUTBOUND_LISTENER,
        "address": socket_address(workload.address, workload.outbound_port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{
            "name": f"{OUTBOUND_LISTENER}-http",
            "filters": [_hcm(f"outbound_{workload.address}_{workload.outbound_port}",
                             {"rds": _rds(route_config_name)}, [fault_filter()], access_log)],
        }],
    }


def outbound_route_configuration(name: str, vhosts: list[Json]) -> Json:
    return {
        "name": name,
        "virtual_hosts": vhosts,
        "validate_clusters": False,
        "max_direct_response_body_size_bytes": MAX_DIRECT_RESPONSE_BODY,
    }


def virtual_host(service: ServiceEntry, caller_namespace: str, routes: list[Json], *, with_ports_only: bool,
                 ) -> Json:
    hosts = service_hosts(service, caller_namespace)
    if with_ports_only:
        domains = [f"{h}:{service.port}" for h in hosts]
        domains[1:1] = [service.fqdn]  # grpcio dials `xds:///<fqdn>` without a port too
    else:
        domains = [d for h in hosts for d in (h, f"{h}:{service.port}")]
    vh: Json = {"name": vhost_name(service), "domains": domains, "routes": routes}
    if not with_ports_only:
        vh["include_request_attempt_count"] = True
    return vh


def inbound_listener(workload: WorkloadEntry, service: ServiceEntry, mode: MtlsMode, source: TlsSource,
                     trust_domain: str, http_filters: list[Json], access_log: list[Json] | None = None) -> Json:
    assert workload.inbound_port is not None
    cluster = inbound_cluster(service.port)
    route_config = {
        "name": cluster,
        "virtual_hosts": [{
            "name": f"inbound|http|{service.port}",
            "domains": ["*"],
            "routes": [{"name": DEFAULT_ROUTE, "match": {"prefix": "/"}, "route": {
                "cluster": cluster,
                "timeout": "0s",
                "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
                "retry_policy": inbound_policy(),
            }, "decorator": {"operation": f"{service.fqdn}:{service.port}/*"}}],
        }],
    }
    hcm = _hcm(f"inbound_{workload.address}_{workload.app_port}", {"route_config": route_config}, http_filters,
               access_log)
    chains, listener_filters = inbound_chains(mode, cluster, [hcm], source, trust_domain)
    listener: Json = {
        "name": INBOUND_LISTENER,
        "address": socket_address(workload.address, workload.inbound_port),
        "traffic_direction": "INBOUND",
        "filter_chains": chains,
    }
    if listener_filters:
        listener["listener_filters"] = listener_filters
    return listener


# --------------------------------------------------------------------------------------------- proxyless


def proxyless_listener_names(service: ServiceEntry, caller_namespace: str) -> list[str]:
    """The names a client in ``caller_namespace`` may dial (``xds:///<name>``), each an LDS resource."""
    hosts = service_hosts(service, caller_namespace)
    return [service.fqdn, *(f"{h}:{service.port}" for h in hosts)]


def proxyless_listener(name: str, service: ServiceEntry) -> Json:
    hcm = {"@type": HCM_TYPE, "rds": _rds(service_cluster(service)), "http_filters": [fault_filter(), _router()]}
    return {
        "name": name,
        "address": socket_address("0.0.0.0", service.port),
        "api_listener": {"api_listener": hcm},
    }


def proxyless_route_configuration(service: ServiceEntry, vhost: Json) -> Json:
    return {"name": service_cluster(service), "virtual_hosts": [vhost]}
