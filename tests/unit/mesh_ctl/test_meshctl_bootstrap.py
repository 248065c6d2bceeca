"""Bootstrap generation: real Envoy v3 Bootstraps (parsed by the protos), Istio names, 50/50, SPIFFE SANs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import json_format

from mesh_ctl.addressing import Placement, plan
from mesh_ctl.bootstrap import (
    BootstrapError,
    build_bootstraps,
    service_domains,
    to_yaml,
    validate_bootstrap,
)
from mesh_ctl.ca.files import CertFiles
from mesh_ctl.topology import Topology, default_topology, topology_from_dict, topology_to_dict

FQDN = "payment.default.svc.cluster.local"
V1, V2, ALL = (f"outbound|8080|v1|{FQDN}", f"outbound|8080|v2|{FQDN}", f"outbound|8080||{FQDN}")


def _certs(t: Topology) -> dict[str, CertFiles]:
    return {
        w.name: CertFiles(
            Path(f"/run/certs/{w.name}/cert-chain.pem"),
            Path(f"/run/certs/{w.name}/key.pem"),
            Path(f"/run/certs/{w.name}/root-cert.pem"),
        )
        for w in t.workloads
    }


def _build(t: Topology | None = None) -> tuple[dict[str, dict[str, Any]], Placement]:
    t = t or default_topology()
    p = plan(t, probe=lambda _: True)
    return build_bootstraps(t, p, _certs(t)), p


def _proto(d: dict[str, Any]) -> bootstrap_pb2.Bootstrap:
    validate_bootstrap(d)  # registers the typed_config messages and checks the shape
    msg = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(copy.deepcopy(d), msg)
    return msg


def _hcm(listener: Any) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def test_every_sidecar_gets_a_bootstrap_that_parses_as_an_envoy_bootstrap() -> None:
    bootstraps, _ = _build()
    assert set(bootstraps) == {"payment-v1", "payment-v2", "client"}
    for d in bootstraps.values():
        _proto(d)
        assert yaml.safe_load(to_yaml(d)) == d  # what is written to disk is the same document


def test_validation_rejects_what_envoy_would_reject() -> None:
    bootstraps, _ = _build()
    bad = copy.deepcopy(bootstraps["client"])
    bad["static_resources"]["clusters"][0]["lb_polcy"] = "ROUND_ROBIN"
    with pytest.raises(BootstrapError, match="lb_polcy"):
        validate_bootstrap(bad)
    bad = copy.deepcopy(bootstraps["client"])
    bad["static_resources"]["listeners"][0]["traffic_direction"] = "SIDEWAYS"
    with pytest.raises(BootstrapError, match="SIDEWAYS"):
        validate_bootstrap(bad)


def test_client_outbound_listener_splits_50_50_with_istio_route_settings() -> None:
    bootstraps, p = _build()
    b = _proto(bootstraps["client"])
    assert b.admin.address.socket_address.address == "127.0.0.12"
    assert b.admin.address.socket_address.port_value == 15000
    [listener] = b.static_resources.listeners
    assert listener.name == "virtualOutbound"
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        "127.0.0.12",
        15001,
    )
    assert listener.traffic_direction == base_pb2.OUTBOUND
    assert not listener.filter_chains[0].HasField("transport_socket")  # the app dials it in plain h2c
    hcm = _hcm(listener)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    [vhost] = hcm.route_config.virtual_hosts
    assert set(vhost.domains) >= {"payment", "payment:8080", "payment.default", f"{FQDN}", f"{FQDN}:8080"}
    [route] = vhost.routes
    assert route.match.prefix == "/"
    split = {c.name: c.weight.value for c in route.route.weighted_clusters.clusters}
    assert split == {V1: 50, V2: 50}
    assert route.route.HasField("timeout") and route.route.timeout.ToTimedelta().total_seconds() == 0
    msd = route.route.max_stream_duration
    assert (
        msd.HasField("grpc_timeout_header_max")
        and msd.grpc_timeout_header_max.ToTimedelta().total_seconds() == 0
    )
    assert p.of("client").outbound == 15001


def test_client_clusters_use_mtls_to_the_payment_sidecars() -> None:
    bootstraps, _ = _build()
    b = _proto(bootstraps["client"])
    clusters = {c.name: c for c in b.static_resources.clusters}
    assert set(clusters) == {ALL, V1, V2}
    endpoints = {
        name: [
            (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
            for loc in c.load_assignment.endpoints
            for e in loc.lb_endpoints
        ]
        for name, c in clusters.items()
    }
    assert endpoints == {
        V1: [("127.0.0.10", 15006)],
        V2: [("127.0.0.11", 15006)],
        ALL: [("127.0.0.10", 15006), ("127.0.0.11", 15006)],
    }
    for name, c in clusters.items():
        assert c.type == c.STATIC
        assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in c.typed_extension_protocol_options
        tls = tls_pb2.UpstreamTlsContext()
        assert c.transport_socket.name == "envoy.transport_sockets.tls"
        assert c.transport_socket.typed_config.Unpack(tls)
        ctx = tls.common_tls_context
        assert list(ctx.alpn_protocols) == ["h2"]
        assert ctx.tls_certificates[0].certificate_chain.filename == "/run/certs/client/cert-chain.pem"
        assert ctx.tls_certificates[0].private_key.filename == "/run/certs/client/key.pem"
        assert ctx.validation_context.trusted_ca.filename == "/run/certs/client/root-cert.pem"
        sans = [(m.san_type, m.matcher.exact) for m in ctx.validation_context.match_typed_subject_alt_names]
        assert sans == [
            (common_pb2.SubjectAltNameMatcher.URI, "spiffe://cluster.local/ns/default/sa/payment")
        ]
        subset = name.split("|")[2]
        assert (
            tls.sni == f"outbound_.8080_.{subset}_.{FQDN}"
        )  # Istio's SNI ("outbound_.8080_._." for no subset)
    v1_meta = json_format.MessageToDict(clusters[V1].load_assignment.endpoints[0].lb_endpoints[0].metadata)
    assert v1_meta == {"filterMetadata": {"istio": {"workload": "payment-v1;default;payment;v1;Kubernetes"}}}


def test_payment_sidecars_require_client_certificates_and_forward_to_their_app() -> None:
    bootstraps, _ = _build()
    for name, address in (("payment-v1", "127.0.0.10"), ("payment-v2", "127.0.0.11")):
        b = _proto(bootstraps[name])
        [listener] = b.static_resources.listeners
        assert listener.name == "virtualInbound" and listener.traffic_direction == base_pb2.INBOUND
        assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
            address,
            15006,
        )
        tls = tls_pb2.DownstreamTlsContext()
        assert listener.filter_chains[0].transport_socket.typed_config.Unpack(tls)
        assert tls.require_client_certificate.value is True
        ctx = tls.common_tls_context
        assert ctx.validation_context.trusted_ca.filename == f"/run/certs/{name}/root-cert.pem"
        assert not ctx.validation_context.match_typed_subject_alt_names  # which peers: authz, not here
        assert list(ctx.alpn_protocols) == ["h2"]
        [route] = _hcm(listener).route_config.virtual_hosts[0].routes
        assert route.route.cluster == "inbound|8080||"
        [cluster] = b.static_resources.clusters
        assert cluster.name == "inbound|8080||" and not cluster.HasField("transport_socket")  # h2c to the app
        sa = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert (sa.address, sa.port_value) == (address, 8080)


def test_node_carries_istio_metadata() -> None:
    bootstraps, _ = _build()
    node = _proto(bootstraps["payment-v2"]).node
    assert node.id == "sidecar~127.0.0.11~payment-v2.default~default.svc.cluster.local"
    assert node.cluster == "payment.default"
    meta = json_format.MessageToDict(node.metadata)
    assert {
        k: meta[k] for k in ("NAME", "NAMESPACE", "WORKLOAD_NAME", "SERVICE_ACCOUNT", "CLUSTER_ID", "MESH_ID")
    } == {
        "NAME": "payment-v2",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "payment-v2",
        "SERVICE_ACCOUNT": "payment",
        "CLUSTER_ID": "Kubernetes",
        "MESH_ID": "cluster.local",
    }
    assert meta["LABELS"] == {
        "app": "payment",
        "version": "v2",
        "service.istio.io/canonical-name": "payment",
        "service.istio.io/canonical-revision": "v2",
    }


def test_weights_follow_the_topology() -> None:
    doc = topology_to_dict(default_topology())
    doc["services"][0]["subsets"][0]["weight"] = 80
    doc["services"][0]["subsets"][1]["weight"] = 20
    b = _proto(_build(topology_from_dict(doc))[0]["client"])
    route = _hcm(b.static_resources.listeners[0]).route_config.virtual_hosts[0].routes[0]
    assert {c.name: c.weight.value for c in route.route.weighted_clusters.clusters} == {V1: 80, V2: 20}
    doc["services"][0]["subsets"][1]["weight"] = 0  # Istio drops weight-0 destinations: one cluster left
    b = _proto(_build(topology_from_dict(doc))[0]["client"])
    route = _hcm(b.static_resources.listeners[0]).route_config.virtual_hosts[0].routes[0]
    assert route.route.cluster == V1 and not route.route.HasField("weighted_clusters")


def test_shared_address_mode_points_at_the_port_blocks() -> None:
    t = default_topology()
    p = plan(t, mode="shared", probe=lambda _: True)
    b = _proto(build_bootstraps(t, p, _certs(t))["client"])
    clusters = {c.name: c for c in b.static_resources.clusters}
    sa = clusters[V2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.1", 15106)


def test_service_domains_are_istios() -> None:
    payment = default_topology().service("payment")
    assert service_domains(payment, "cluster.local") == [
        "payment",
        "payment:8080",
        "payment.default",
        "payment.default:8080",
        "payment.default.svc",
        "payment.default.svc:8080",
        FQDN,
        f"{FQDN}:8080",
    ]


def test_sidecars_get_connection_timeouts_and_limits() -> None:
    """Issue 9.7: explicit values where Istio's defaults keep a silent connection for an hour or more (see
    mesh_ctl.translate.limits); pyproxy reads them back as the limits it enforces."""
    from mesh_ctl.translate import limits
    from pyproxy.config.bootstrap import load_bootstrap

    bootstraps, _ = _build()
    for d in bootstraps.values():
        listeners = d["static_resources"]["listeners"]
        for listener in listeners:
            for chain in listener["filter_chains"]:
                hcm = chain["filters"][0]["typed_config"]
                assert hcm["common_http_protocol_options"]["idle_timeout"] == limits.IDLE_TIMEOUT
                if "transport_socket" in chain:
                    assert chain["transport_socket_connect_timeout"] == limits.TLS_HANDSHAKE_TIMEOUT
        layer = d["layered_runtime"]["layers"][0]["static_layer"]
        assert layer == {f"envoy.resource_limits.listener.{lst['name']}.connection_limit":
                         limits.LISTENER_CONNECTION_LIMIT for lst in listeners}
        monitor = d["overload_manager"]["resource_monitors"][0]
        assert monitor["typed_config"]["max_active_downstream_connections"] == limits.GLOBAL_CONNECTION_LIMIT
    # The ADS bootstrap (its listeners come from the control plane, named as above), read by pyproxy.
    from mesh_ctl.bootstrap import build_ads_bootstrap
    from mesh_ctl.translate.names import INBOUND_LISTENER, OUTBOUND_LISTENER

    t = default_topology()
    ads = build_ads_bootstrap(t, plan(t, probe=lambda _: True), "client", "127.0.0.1:15010")
    snapshot = load_bootstrap(None, yaml.safe_dump(ads))
    assert snapshot.max_downstream_connections == limits.GLOBAL_CONNECTION_LIMIT
    for name in (OUTBOUND_LISTENER, INBOUND_LISTENER):
        assert snapshot.listener_connection_limit(name) == limits.LISTENER_CONNECTION_LIMIT
