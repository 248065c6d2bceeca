"""pyproxy's ADS decisions (pure): ACK/NACK, subscriptions, consistent snapshots, install failures."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from pyproxy.config import model as m
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.xds.state import CLUSTER, ENDPOINT, LISTENER, ROUTE, XdsState

H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}
ADS = {"ads": {}, "resource_api_version": "V3"}

BOOTSTRAP = {
    "node": {"id": "sidecar~127.0.0.12~client.default~default.svc.cluster.local", "cluster": "client.default"},
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                         "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                          "lds_config": ADS, "cds_config": ADS},
    "static_resources": {"clusters": [{
        "name": "xds-grpc", "type": "STATIC", "typed_extension_protocol_options": H2,
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}]},
}


def cluster(name: str, lb: str = "LEAST_REQUEST") -> cluster_pb2.Cluster:
    return json_format.ParseDict({"name": name, "type": "EDS", "lb_policy": lb,
                                  "eds_cluster_config": {"eds_config": ADS, "service_name": name},
                                  "typed_extension_protocol_options": H2}, cluster_pb2.Cluster())


def cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    return json_format.ParseDict({"cluster_name": name, "endpoints": [{"load_balancing_weight": 1, "lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.10", "port_value": port}}}}]}]},
        endpoint_pb2.ClusterLoadAssignment())


def listener(name: str, route_name: str, port: int = 15001) -> listener_pb2.Listener:
    return json_format.ParseDict({
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                     ".HttpConnectionManager",
            "stat_prefix": "outbound", "rds": {"config_source": ADS, "route_config_name": route_name},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]},
        listener_pb2.Listener())


def routes(name: str, weights: dict[str, int], validate: bool = False) -> route_pb2.RouteConfiguration:
    return json_format.ParseDict({
        "name": name, "validate_clusters": validate,
        "virtual_hosts": [{"name": "payment", "domains": ["payment", "payment:8080"], "routes": [
            {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": c, "weight": w} for c, w in weights.items()]}, "timeout": "0s"}}]}]},
        route_pb2.RouteConfiguration())


def response(type_url: str, version: str, nonce: str, *resources: Any) -> discovery_pb2.DiscoveryResponse:
    resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)
    for r in resources:
        a = any_pb2.Any()
        a.Pack(r)
        resp.resources.append(a)
    return resp


@pytest.fixture
def state() -> XdsState:
    static = parse_bootstrap_dict(BOOTSTRAP)
    assert static.dynamic is not None
    return XdsState(static, base_pb2.Node(id="n1"))


def _by_type(requests: list[discovery_pb2.DiscoveryRequest]) -> dict[str, discovery_pb2.DiscoveryRequest]:
    return {r.type_url: r for r in requests}


def sync(state: XdsState, installed: list[m.Snapshot]) -> None:
    """CDS -> EDS -> LDS -> RDS, the order a control plane pushes in."""
    out = state.handle(response(CLUSTER, "c1", "n1", cluster("v1"), cluster("v2")), install=installed.append)
    assert out.accepted
    eds = _by_type(out.requests)[ENDPOINT]
    assert sorted(eds.resource_names) == ["v1", "v2"]
    assert state.handle(response(ENDPOINT, "e1", "n2", cla("v1", 8080), cla("v2", 8081)),
                        install=installed.append).accepted
    out = state.handle(response(LISTENER, "l1", "n3", listener("out", "8080")), install=installed.append)
    assert out.accepted
    assert list(_by_type(out.requests)[ROUTE].resource_names) == ["8080"]
    assert not state.initial_fetch_done()
    assert state.handle(response(ROUTE, "r1", "n4", routes("8080", {"v1": 50, "v2": 50})),
                        install=installed.append).accepted
    assert state.initial_fetch_done()


def test_initial_requests_are_wildcard_cds_and_lds_with_node(state: XdsState) -> None:
    reqs = state.initial_requests()
    assert [r.type_url for r in reqs] == [CLUSTER, LISTENER]
    assert all(r.node.id == "n1" and not r.resource_names and not r.response_nonce for r in reqs)


def test_full_sync_builds_a_consistent_snapshot(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    snap = installed[-1]
    assert set(snap.listeners) == {"out"}
    assert set(snap.route_configs) == {"8080"}
    assert {"v1", "v2", "xds-grpc"} <= set(snap.clusters)
    la = snap.clusters["v2"].load_assignment
    assert la is not None and la.localities[0].endpoints[0].address.port == 8081
    # Before RDS arrived the listener was not served (it had nothing to route with).
    assert "out" not in installed[-2].listeners


def test_ack_carries_the_new_version_and_nonce(state: XdsState) -> None:
    out = state.handle(response(CLUSTER, "c7", "abc", cluster("v1")))
    ack = _by_type(out.requests)[CLUSTER]
    assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == ("c7", "abc", False)


def test_bad_resource_is_nacked_with_its_path_and_nothing_changes(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    before = installed[-1]
    out = state.handle(response(CLUSTER, "c2", "n5", cluster("v1"), cluster("v2", lb="MAGLEV")),
                       install=installed.append)
    assert not out.accepted
    nack = _by_type(out.requests)[CLUSTER]
    assert nack.version_info == "c1" and nack.response_nonce == "n5"  # previous version, this nonce
    assert 'cluster "v2": lb_policy: MAGLEV is not supported' in nack.error_detail.message
    assert installed[-1] is before
    assert state.types[CLUSTER].version == "c1"


def test_route_to_unknown_cluster_is_nacked_when_validate_clusters(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    out = state.handle(response(ROUTE, "r2", "n6", routes("8080", {"v1": 50, "v9": 50}, validate=True)))
    assert not out.accepted
    assert "route_configuration '8080': references unknown cluster 'v9'" in out.error
    # Envoy's default for RDS (validate_clusters false): accepted; the route answers 503 at request time.
    assert state.handle(response(ROUTE, "r3", "n7", routes("8080", {"v1": 50, "v9": 50}))).accepted


def test_cluster_dropped_before_its_route_is_kept_until_the_route_moves(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    # The control plane pushes CDS (v2 removed) before RDS (v2 no longer used): v2 must keep working.
    assert state.handle(response(CLUSTER, "c2", "n8", cluster("v1")), install=installed.append).accepted
    assert "v2" in installed[-1].clusters
    assert state.handle(response(ROUTE, "r2", "n9", routes("8080", {"v1": 100})),
                        install=installed.append).accepted
    assert "v2" not in installed[-1].clusters


def test_unchanged_resources_keep_their_model_objects(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    first = installed[-1].route_configs["8080"]
    assert state.handle(response(ROUTE, "r2", "n9", routes("8080", {"v1": 50, "v2": 50})),
                        install=installed.append).accepted
    assert installed[-1].route_configs["8080"] is first
    assert state.handle(response(ROUTE, "r3", "n10", routes("8080", {"v1": 90, "v2": 10})),
                        install=installed.append).accepted
    assert installed[-1].route_configs["8080"] is not first
    # A weight change touches routes only: the clusters compare equal (ClusterManager keeps their pools).
    assert installed[-1].clusters["v1"] == installed[-2].clusters["v1"]


def test_install_failure_is_undone_and_nacked(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)

    def failing_install(snapshot: m.Snapshot) -> None:
        raise OSError("listener in2: cannot bind 127.0.0.1:15006: Address already in use")

    out = state.handle(response(LISTENER, "l2", "n11", listener("out", "8080"), listener("in2", "8080", 15006)),
                       install=failing_install)
    assert not out.accepted
    assert "cannot apply: listener in2: cannot bind" in out.error
    assert state.types[LISTENER].version == "l1"
    assert set(state.types[LISTENER].resources) == {"out"}


def test_listener_waits_for_its_new_route_and_keeps_serving_the_old_one(state: XdsState) -> None:
    installed: list[m.Snapshot] = []
    sync(state, installed)
    assert state.handle(response(LISTENER, "l2", "n12", listener("out", "9090")), install=installed.append).accepted
    snap = installed[-1]
    assert snap.listeners["out"].filter_chains[0].hcm.rds_route_config_name == "8080"
    assert "8080" in snap.route_configs
    assert state.handle(response(ROUTE, "r2", "n13", routes("9090", {"v1": 100})),
                        install=installed.append).accepted
    assert installed[-1].listeners["out"].filter_chains[0].hcm.rds_route_config_name == "9090"


def test_unknown_type_is_nacked(state: XdsState) -> None:
    out = state.handle(discovery_pb2.DiscoveryResponse(type_url="type.googleapis.com/x.Y", nonce="z"))
    assert not out.accepted and "unsupported type URL" in out.error
