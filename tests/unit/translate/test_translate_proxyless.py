"""Proxyless gRPC clients: only what grpcio accepts (REFERENCE.md section 7, Istio's grpcgen)."""

from __future__ import annotations

import json

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mesh_ctl.registry import Registry
from mesh_ctl.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    grpc_xds_bootstrap,
    identify,
    translate_for_proxy,
)
from tests.unit.translate.conftest import FQDN, V1, dest, destination_rule, subsets_dr, virtual_service
from tests.unit.translate.helpers import as_dict, assignments, clusters, proxyless, routes

ROUTE_NAME = f"outbound|8080||{FQDN}"


def test_listeners_are_api_listeners_for_every_name_a_client_may_dial(registry: Registry) -> None:
    pr = proxyless(registry, [])
    names = set(pr.of(LISTENER_TYPE))
    assert {FQDN, f"{FQDN}:8080", "payment:8080", "payment.default:8080", "payment.default.svc:8080",
            "audit:9090", "ledger.billing:7070", "ledger.billing.svc.cluster.local:7070"} <= names
    assert "ledger:7070" not in names  # short names only within the client's namespace
    for name, listener in pr.of(LISTENER_TYPE).items():
        assert listener.HasField("api_listener") and not listener.filter_chains
        hcm = hcm_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(hcm), name
        assert hcm.rds.config_source.HasField("ads")
        assert hcm.rds.config_source.resource_api_version == 2  # V3
        assert hcm.rds.route_config_name in pr.of(ROUTE_TYPE)
        # Istio's grpcgen ``supportedFilters``: the fault filter (grpcio implements it, gRFC A33), the router.
        assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
        assert hcm.http_filters[0].typed_config.type_url.endswith("envoy.extensions.filters.http.fault.v3.HTTPFault")
        assert hcm.http_filters[0].typed_config.value == b""  # empty: routes configure it
        assert hcm.http_filters[1].typed_config.type_url.endswith("envoy.extensions.filters.http.router.v3.Router")


def test_routes_have_the_same_weighted_routing(registry: Registry) -> None:
    vs = virtual_service([{"name": "split", "route": [dest("v1", 80), dest("v2", 20)], "timeout": "2s"}])
    pr = proxyless(registry, [vs, subsets_dr("v1", "v2")])
    (route,) = routes(pr, route_config_name=ROUTE_NAME)
    assert route["route"]["weighted_clusters"]["clusters"] == [{"name": V1, "weight": 80},
                                                               {"name": f"outbound|8080|v2|{FQDN}", "weight": 20}]
    assert "total_weight" not in route["route"]["weighted_clusters"]  # grpcio ignores it
    assert route["route"]["max_stream_duration"] == {"max_stream_duration": "2s"}  # what grpcio reads
    vh = as_dict(pr.of(ROUTE_TYPE)[ROUTE_NAME])["virtual_hosts"][0]
    assert f"{FQDN}:8080" in vh["domains"] and "payment:8080" in vh["domains"] and FQDN in vh["domains"]


def test_clusters_are_round_robin_eds_without_tls(registry: Registry) -> None:
    dr = destination_rule({"trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                                             "connectionPool": {"tcp": {"maxConnections": 1}},
                                             "tls": {"mode": "ISTIO_MUTUAL"}},
                           "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})
    pr = proxyless(registry, [dr])
    for name, c in clusters(pr).items():
        assert c["type"] == "EDS", name
        assert c["eds_cluster_config"] == {"service_name": name, "eds_config": {"ads": {},
                                                                                "resource_api_version": "V3"}}
        assert c.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"  # never LEAST_REQUEST: grpcio rejects it
        assert set(c) == {"name", "type", "eds_cluster_config"}  # nothing grpcio might trip on
    assert any("ROUND_ROBIN" in w for w in pr.warnings)
    assert any("plaintext" in w for w in pr.warnings)
    assert all(c.lb_policy == 0 for c in pr.of(CLUSTER_TYPE).values())


def test_endpoints_are_the_apps_with_weighted_localities(registry: Registry) -> None:
    las = assignments(proxyless(registry, [subsets_dr("v1", "nobody")]))
    p1 = registry.workload("payment-v1", "default")
    assert p1 is not None
    (locality,) = las[V1]["endpoints"]
    assert locality["load_balancing_weight"] == 1  # grpcio drops localities without a weight
    assert locality["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": p1.address, "port_value": p1.app_port}
    for name, la in las.items():
        for loc in la.get("endpoints", []):
            assert loc["load_balancing_weight"] > 0, name
    assert "endpoints" not in las[f"outbound|8080|nobody|{FQDN}"]
    assert set(las) == {f"outbound|8080||{FQDN}", V1, f"outbound|8080|nobody|{FQDN}",
                        "outbound|9090||audit.default.svc.cluster.local",
                        "outbound|7070||ledger.billing.svc.cluster.local"}


def test_nodes_are_told_apart_and_registered_clients_keep_their_namespace(registry: Registry) -> None:
    assert identify(registry, {"id": "x", "metadata": {"GENERATOR": "grpc", "NAMESPACE": "billing"}}).kind == \
        "proxyless"
    client = registry.workload("client", "default")
    assert client is not None
    assert identify(registry, client.node_id).kind == "sidecar"
    # An Istio-shaped id gives the namespace when the metadata has none.
    istio_id = "sidecar~127.0.0.99~app-1.billing~billing.svc.cluster.local"
    assert identify(registry, {"id": istio_id, "metadata": {"GENERATOR": "grpc"}}).namespace == "billing"
    reg = registry.with_proxyless("my-client", "billing", {"LABELS": {"app": "reporting"}})
    who = identify(reg, "my-client")
    assert (who.kind, who.namespace, dict(who.labels)) == ("proxyless", "billing", {"app": "reporting"})
    pr = translate_for_proxy(reg, [], "my-client")
    assert "ledger:7070" in pr.of(LISTENER_TYPE) and "payment:8080" not in pr.of(LISTENER_TYPE)
    assert reg.without_proxyless("my-client").proxyless == ()


def test_grpc_xds_bootstrap() -> None:
    doc = grpc_xds_bootstrap("127.0.0.1:15010", "sidecar~127.0.0.20~c.default~default.svc.cluster.local", "default")
    assert doc == {
        "xds_servers": [{"server_uri": "127.0.0.1:15010", "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": "sidecar~127.0.0.20~c.default~default.svc.cluster.local",
                 "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}},
    }
    assert json.loads(json.dumps(doc)) == doc
