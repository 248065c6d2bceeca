"""Topology + placement -> one Envoy v3 bootstrap per sidecar (pure functions), in two shapes.

**ADS (the default, :func:`build_ads_bootstraps`)**, the shape of Istio's sidecar bootstrap: the node (id,
cluster and metadata with Istio's keys), admin on <address>:15000, and everything else from the control
plane over one ADS stream: ``dynamic_resources`` with ``lds_config`` / ``cds_config`` ``{ads: {}}`` (no
initial fetch timeout, like Istio: a sidecar is ready once it has its configuration) and ``ads_config`` (gRPC,
xDS v3, node sent on the first message only) through the STATIC cluster ``xds-grpc`` (HTTP/2) at the control
plane's xDS address. The node id is the registry's (:func:`mesh_ctl.registry.sidecar_node_id`), Istio's
``sidecar~<ip>~<pod>.<ns>~<ns>.svc.<suffix>``, so the control plane knows which workload is asking.

**Static (`mesh_ctl up --static`, :func:`build_bootstraps`)**: what the control plane would push, named the
way Istio names it, written into the bootstrap instead (no control plane needed, nothing can change it):

- client sidecar (the workload ``calls`` a service): listener ``virtualOutbound`` on <address>:15001
  (OUTBOUND, plain h2c: the local app dials it), one virtual host per called service with Istio's domains
  (``payment``, ``payment:8080``, ``payment.default`` ... ``payment.default.svc.cluster.local:8080``), a
  route splitting by ``weighted_clusters`` over the subsets, ``timeout: 0s`` and
  ``max_stream_duration.grpc_timeout_header_max: 0s`` (Istio: no route timeout, honour grpc-timeout).
  Clusters ``outbound|8080||<fqdn>`` and ``outbound|8080|<subset>|<fqdn>``: STATIC endpoints at the
  destination sidecars' inbound listeners (there is no iptables redirect in local mode, so the endpoint is
  <address>:15006 instead of <address>:8080), HTTP/2, mTLS with this sidecar's certificate, the mesh root
  and a SAN match on the destination service accounts' SPIFFE IDs, ALPN h2, Istio's SNI.
- server sidecar (a service selects the workload): listener ``virtualInbound`` on <address>:15006
  (INBOUND), mTLS required (client certificate verified against the root; *which* peers may call is
  authorization, a later issue), one route to ``inbound|8080||`` = the local app at <address>:8080 (h2c).
- every sidecar: admin on <address>:15000, node id/cluster/metadata with Istio's keys so metrics can name
  the workloads, endpoint and cluster metadata in Istio's format.

:func:`validate_bootstrap` parses a bootstrap as a real ``envoy.config.bootstrap.v3.Bootstrap``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2

# The typed_config messages must be registered before ParseDict can resolve their @type.
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.resource_monitors.downstream_connections.v3 import downstream_connections_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from mesh_ctl.addressing import Placement, WorkloadAddresses
from mesh_ctl.ca.files import CertFiles
from mesh_ctl.registry import sidecar_node_id
from mesh_ctl.topology import CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, Service, Topology, Workload
from mesh_ctl.translate import limits
from mesh_ctl.translate.names import INBOUND_LISTENER, OUTBOUND_LISTENER
from mesh_ctl.translate.telemetry import access_logs
from mesh_ctl.translate.values import source_bind_config

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS = "envoy.transport_sockets.tls"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_OPTIONS}"

CONNECT_TIMEOUT = "10s"  # Istio's connectionPool.tcp.connectTimeout default
XDS_CLUSTER = "xds-grpc"  # Istio's name for the static cluster of the control plane
XDS_CONNECT_TIMEOUT = "1s"  # Istio's xds-grpc connect_timeout
OUTBOUND_LB = "LEAST_REQUEST"  # Istio's default load balancer
ALPN = ["h2"]

Json = dict[str, Any]


class BootstrapError(ValueError):
    pass


# --------------------------------------------------------------------------------------------- names


def outbound_cluster_name(service: Service, domain_suffix: str, subset: str = "") -> str:
    """Istio's ``outbound|<port>|<subset>|<fqdn>``."""
    return f"outbound|{service.port}|{subset}|{service.fqdn(domain_suffix)}"


def inbound_cluster_name(port: int) -> str:
    """Istio's ``inbound|<port>||``."""
    return f"inbound|{port}||"


def outbound_sni(service: Service, domain_suffix: str, subset: str = "") -> str:
    """Istio's ``outbound_.<port>_.<subset>_.<fqdn>``."""
    return f"outbound_.{service.port}_.{subset}_.{service.fqdn(domain_suffix)}"


def service_domains(service: Service, domain_suffix: str) -> list[str]:
    """The authorities Istio routes to a service for a caller in the same namespace, each with and without
    the port: name, name.ns, name.ns.svc, name.ns.svc.<suffix>."""
    names = [service.name, f"{service.name}.{service.namespace}", f"{service.name}.{service.namespace}.svc",
             service.fqdn(domain_suffix)]
    return [d for n in names for d in (n, f"{n}:{service.port}")]


# --------------------------------------------------------------------------------------------- bootstraps


def build_bootstraps(topology: Topology, placement: Placement, certs: Mapping[str, CertFiles],
                     ) -> dict[str, Json]:
    """One bootstrap per workload (every workload has a sidecar), keyed by workload name."""
    return {w.name: build_bootstrap(topology, placement, w.name, certs[w.name]) for w in topology.workloads}


def build_bootstrap(topology: Topology, placement: Placement, workload: str, certs: CertFiles) -> Json:
    w = topology.workload(workload)
    here = placement.of(workload)
    listeners: list[Json] = []
    clusters: list[Json] = []
    if here.outbound is not None:
        listeners.append(_outbound_listener(topology, w, here))
        for service in topology.called_services(w):
            clusters.extend(_outbound_clusters(topology, placement, service, certs, here.address))
    served = topology.served_by(w)
    if served is not None and here.inbound is not None and here.app is not None:
        listeners.append(_inbound_listener(topology, served, here, certs))
        clusters.append(_inbound_cluster(served, here, topology.domain_suffix))
    return {
        "node": _node(topology, w, here),
        "admin": {"address": _address(here.address, here.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # Connection limits (see mesh_ctl.translate.limits for the values and why).
        "layered_runtime": limits.runtime_layer([listener["name"] for listener in listeners]),
        "overload_manager": limits.overload_manager(),
    }


def build_ads_bootstraps(topology: Topology, placement: Placement, xds_address: str) -> dict[str, Json]:
    """One ADS bootstrap per workload (every workload has a sidecar), keyed by workload name."""
    return {w.name: build_ads_bootstrap(topology, placement, w.name, xds_address) for w in topology.workloads}


def build_ads_bootstrap(topology: Topology, placement: Placement, workload: str, xds_address: str) -> Json:
    """A sidecar that gets its listeners, routes, clusters and endpoints from the control plane at
    ``xds_address`` (``host:port`` of its plain-gRPC ADS port, istiod's 15010)."""
    w = topology.workload(workload)
    here = placement.of(workload)
    host, sep, port = xds_address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BootstrapError(f"xDS address must be HOST:PORT, got {xds_address!r}")
    xds_cluster = {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": XDS_CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(host.strip("[]"), int(port))}}]}]},
        "typed_extension_protocol_options": _http2_options(),  # gRPC
    }
    return {
        "node": _node(topology, w, here),
        "admin": {"address": _address(here.address, here.admin)},
        "dynamic_resources": {
            "lds_config": _ads_config_source(),
            "cds_config": _ads_config_source(),
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
        },
        "static_resources": {"clusters": [xds_cluster]},
        # Connection limits of the listeners the control plane sends (mesh_ctl.translate.limits).
        "layered_runtime": limits.runtime_layer([OUTBOUND_LISTENER, INBOUND_LISTENER]),
        "overload_manager": limits.overload_manager(),
    }


def _ads_config_source() -> Json:
    # A new dict each time: YAML would write a shared one as an anchor and an alias.
    return {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def _node(topology: Topology, w: Workload, here: WorkloadAddresses) -> Json:
    labels = dict(w.labels)
    labels.setdefault(CANONICAL_NAME_LABEL, w.canonical_service)
    labels.setdefault(CANONICAL_REVISION_LABEL, w.canonical_revision)
    return {
        # Istio's sidecar node id: sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<suffix>
        "id": sidecar_node_id(here.address, w.name, w.namespace, topology.domain_suffix),
        "cluster": f"{w.canonical_service}.{w.namespace}",
        "metadata": {
            "NAME": w.name,
            "NAMESPACE": w.namespace,
            "WORKLOAD_NAME": w.name,
            "SERVICE_ACCOUNT": w.service_account,
            "CLUSTER_ID": topology.cluster_id,
            "MESH_ID": topology.mesh_id,
            "INSTANCE_IPS": here.address,
            "LABELS": labels,
        },
    }


def _outbound_listener(topology: Topology, w: Workload, here: WorkloadAddresses) -> Json:
    assert here.outbound is not None
    vhosts = [_outbound_vhost(topology, s) for s in topology.called_services(w)]
    route_config = {"name": "virtualOutbound", "virtual_hosts": vhosts}
    return {
        "name": OUTBOUND_LISTENER,
        "address": _address(here.address, here.outbound),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{
            "name": "virtualOutbound-http",
            "filters": [_hcm(f"outbound_{here.address}_{here.outbound}", route_config, topology)],
        }],
    }


def _outbound_vhost(topology: Topology, service: Service) -> Json:
    suffix = topology.domain_suffix
    live = [s for s in service.subsets if s.weight > 0]  # Istio drops weight-0 destinations from the route
    action: Json
    if not service.subsets:
        action = {"cluster": outbound_cluster_name(service, suffix)}
    elif len(live) == 1:
        action = {"cluster": outbound_cluster_name(service, suffix, live[0].name)}
    else:
        action = {"weighted_clusters": {"clusters": [
            {"name": outbound_cluster_name(service, suffix, s.name), "weight": s.weight} for s in live]}}
    action["timeout"] = "0s"  # Istio default: no route timeout
    action["max_stream_duration"] = {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}
    return {
        "name": f"{service.fqdn(suffix)}:{service.port}",
        "domains": service_domains(service, suffix),
        "routes": [{"name": "default", "match": {"prefix": "/"}, "route": action}],
    }


def _outbound_clusters(topology: Topology, placement: Placement, service: Service, certs: CertFiles,
                       source_address: str) -> list[Json]:
    subsets: list[str | None] = [None, *(s.name for s in service.subsets)]
    return [_outbound_cluster(topology, placement, service, subset, certs, source_address) for subset in subsets]


def _outbound_cluster(topology: Topology, placement: Placement, service: Service, subset: str | None,
                      certs: CertFiles, source_address: str) -> Json:
    suffix = topology.domain_suffix
    name = outbound_cluster_name(service, suffix, subset or "")
    endpoints = topology.endpoints(service, subset)
    lb_endpoints = []
    for e in endpoints:
        at = placement.of(e.name)
        assert at.inbound is not None  # a selected workload always has an inbound listener
        lb_endpoints.append({
            "endpoint": {"address": _address(at.address, at.inbound)},
            "metadata": {"filter_metadata": {"istio": {"workload": _istio_workload(topology, e)}}},
        })
    sans = sorted({topology.spiffe_id(e) for e in endpoints})
    istio_meta: Json = {
        "services": [{"host": service.fqdn(suffix), "name": service.name, "namespace": service.namespace}],
        "default_original_port": service.port,
    }
    if subset:
        istio_meta["subset"] = subset
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": OUTBOUND_LB,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
        "typed_extension_protocol_options": _http2_options(),
        "transport_socket": {"name": TLS, "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "common_tls_context": _common_tls(certs, sans),
            "sni": outbound_sni(service, suffix, subset or ""),
        }},
        "metadata": {"filter_metadata": {"istio": istio_meta}},
        "upstream_bind_config": source_bind_config(source_address),
    }


def _inbound_listener(topology: Topology, service: Service, here: WorkloadAddresses, certs: CertFiles) -> Json:
    assert here.inbound is not None
    cluster = inbound_cluster_name(service.port)
    route_config = {
        "name": cluster,
        "virtual_hosts": [{
            "name": f"inbound|http|{service.port}",
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {
                "cluster": cluster,
                "timeout": "0s",
                "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
            }}],
        }],
    }
    return {
        "name": INBOUND_LISTENER,
        "address": _address(here.address, here.inbound),
        "traffic_direction": "INBOUND",
        "filter_chains": [{
            "name": cluster,
            "filters": [_hcm(f"inbound_{here.address}_{here.app}", route_config, topology)],
            "transport_socket": {"name": TLS, "typed_config": {
                "@type": DOWNSTREAM_TLS_TYPE,
                "common_tls_context": _common_tls(certs, None),
                "require_client_certificate": True,
            }},
            "transport_socket_connect_timeout": limits.TLS_HANDSHAKE_TIMEOUT,
        }],
    }


def _inbound_cluster(service: Service, here: WorkloadAddresses, domain_suffix: str) -> Json:
    assert here.app is not None
    name = inbound_cluster_name(service.port)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(here.address, here.app)}}]}]},
        "typed_extension_protocol_options": _http2_options(),  # the app speaks h2c
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"host": service.fqdn(domain_suffix), "name": service.name, "namespace": service.namespace}]}}},
    }


# --------------------------------------------------------------------------------------------- pieces


def _hcm(stat_prefix: str, route_config: Json, topology: Topology) -> Json:
    hcm: Json = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "route_config": route_config,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
        "common_http_protocol_options": limits.hcm_connection_options(),
    }
    logs = access_logs(topology.access_log_file, topology.access_log_format)
    if logs:
        hcm["access_log"] = logs
    return {"name": HCM, "typed_config": hcm}


def _common_tls(certs: CertFiles, peer_sans: list[str] | None) -> Json:
    validation: Json = {"trusted_ca": {"filename": str(certs.root_cert)}}
    if peer_sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in peer_sans]
    return {
        "tls_certificates": [{"certificate_chain": {"filename": str(certs.cert_chain)},
                              "private_key": {"filename": str(certs.private_key)}}],
        "validation_context": validation,
        "alpn_protocols": list(ALPN),
    }


def _http2_options() -> Json:
    options = {"@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}
    return {HTTP_OPTIONS: options}


def _address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def _istio_workload(topology: Topology, w: Workload) -> str:
    """Istio's endpoint metadata ``istio.workload``: name;namespace;canonical service;revision;cluster."""
    return ";".join([w.name, w.namespace, w.canonical_service, w.canonical_revision, topology.cluster_id])


# --------------------------------------------------------------------------------------------- checks, files


def validate_bootstrap(bootstrap: Json) -> None:
    """Parse ``bootstrap`` as an ``envoy.config.bootstrap.v3.Bootstrap``; raise :class:`BootstrapError` (with
    the offending field) if Envoy would reject its shape."""
    try:
        # ParseDict pops and re-inserts "@type" keys: give it a copy so the caller's dict keeps its order.
        json_format.ParseDict(copy.deepcopy(bootstrap), bootstrap_pb2.Bootstrap())
    except json_format.ParseError as e:
        raise BootstrapError(str(e)) from e


def to_yaml(bootstrap: Json) -> str:
    return yaml.safe_dump(bootstrap, sort_keys=False, default_flow_style=False)
