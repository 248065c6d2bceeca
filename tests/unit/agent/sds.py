"""An Istio-shaped sidecar over ADS whose TLS contexts name the SDS secrets ``default`` and ``ROOTCA``, and the
Secret resources a control plane could push, for the agent's tests of the xDS state and the admin."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.model import Snapshot

H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}
ADS = {"ads": {}, "resource_api_version": "V3"}
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"

BOOTSTRAP: dict[str, Any] = {
    "node": {"id": "sidecar~127.0.0.10~payment-v1.default~default.svc.cluster.local",
             "metadata": {"NAMESPACE": "default", "SERVICE_ACCOUNT": "payment"}},
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                         "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                          "lds_config": ADS, "cds_config": ADS},
    "static_resources": {"clusters": [{
        "name": "xds-grpc", "type": "STATIC", "typed_extension_protocol_options": H2,
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}]},
}

COMMON_TLS = {
    "alpn_protocols": ["h2"],
    "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": ADS}],
    "combined_validation_context": {
        "default_validation_context": {"match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]},
        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": ADS}},
}


def static() -> Snapshot:
    return parse_bootstrap_dict(BOOTSTRAP)


def inbound_listener(port: int = 0) -> listener_pb2.Listener:
    return json_format.ParseDict({
        "name": "virtualInbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "traffic_direction": "INBOUND",
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True, "common_tls_context": COMMON_TLS}},
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": "inbound", "route_config": {"name": "inbound", "virtual_hosts": [{
                    "name": "inbound", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {
                        "status": 200}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]},
        listener_pb2.Listener())


def mtls_cluster(name: str = "outbound|8080||payment.default.svc.cluster.local") -> cluster_pb2.Cluster:
    return json_format.ParseDict({
        "name": name, "type": "STATIC", "typed_extension_protocol_options": H2,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}}}}]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "outbound_.8080_._.payment.default.svc.cluster.local", "common_tls_context": COMMON_TLS}},
    }, cluster_pb2.Cluster())


def root_secret(pem: str, name: str = "ROOTCA") -> secret_pb2.Secret:
    return json_format.ParseDict({"name": name, "validation_context": {"trusted_ca": {"inline_string": pem}}},
                                 secret_pb2.Secret())


def tls_secret(chain_pem: str, key_pem: str, name: str = "default") -> secret_pb2.Secret:
    return json_format.ParseDict({"name": name, "tls_certificate": {
        "certificate_chain": {"inline_string": chain_pem}, "private_key": {"inline_string": key_pem}}},
        secret_pb2.Secret())


def response(type_url: str, version: str, nonce: str, *resources: Any) -> discovery_pb2.DiscoveryResponse:
    resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)
    for r in resources:
        a = any_pb2.Any()
        a.Pack(r)
        resp.resources.append(a)
    return resp
