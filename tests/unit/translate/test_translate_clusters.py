"""DestinationRule + registry -> clusters and load assignments, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_ctl.registry import Registry
from mesh_ctl.translate import translate_for_proxy
from tests.unit.translate.conftest import ALL, FQDN, V1, V2, destination_rule, subsets_dr
from tests.unit.translate.helpers import as_dict, assignments, clusters, sidecar

UNLIMITED = 4294967295
V3 = f"outbound|8080|v3|{FQDN}"
SANS = [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/payment"}},
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/payment-canary"}}]


def _cluster(registry: Registry, *resources: dict[str, Any], name: str = ALL) -> dict[str, Any]:
    return clusters(sidecar(registry, list(resources)))[name]


def test_default_clusters_are_istio_shaped(registry: Registry) -> None:
    cs = clusters(sidecar(registry, []))
    assert set(cs) == {ALL, V1, V2, V3}  # the topology's subsets: the implicit DestinationRule
    c = cs[V1]
    assert c["type"] == "EDS"
    assert c["eds_cluster_config"] == {"service_name": V1, "eds_config": {
        "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}
    assert c["lb_policy"] == "LEAST_REQUEST"  # Istio's default
    assert c["connect_timeout"] == "10s"
    assert c["circuit_breakers"] == {"thresholds": [{
        "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": UNLIMITED,
        "max_retries": UNLIMITED, "track_remaining": True}]}
    assert c["typed_extension_protocol_options"] == {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    assert "outlier_detection" not in c
    tls = c["transport_socket"]["typed_config"]
    assert tls["sni"] == f"outbound_.8080_.v1_.{FQDN}"
    ctx = tls["common_tls_context"]
    # Istio's SDS references: the key and chain from the sidecar's agent, the roots from the control plane.
    sds = {"ads": {}, "resource_api_version": "V3"}
    assert ctx["tls_certificate_sds_secret_configs"] == [{"name": "default", "sds_config": sds}]
    assert ctx["combined_validation_context"] == {
        # Istio's SAN list is per service: every service account behind payment.
        "default_validation_context": {"match_typed_subject_alt_names": SANS},
        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds}}
    assert "tls_certificates" not in ctx and "validation_context" not in ctx
    assert ctx["alpn_protocols"] == ["istio-peer-exchange", "istio", "h2"]  # Istio's ALPNInMeshH2WithMxc
    assert c["metadata"]["filter_metadata"]["istio"] == {
        "services": [{"host": FQDN, "name": "payment", "namespace": "default"}],
        "default_original_port": 8080.0, "subset": "v1"}


def test_files_mode_names_the_workload_certificate_files(registry: Registry) -> None:
    client = registry.workload("client", "default")
    assert client is not None and client.certs is not None
    c = clusters(translate_for_proxy(registry, [], client.node_id, tls="files"))[V1]
    ctx = c["transport_socket"]["typed_config"]["common_tls_context"]
    assert ctx["tls_certificates"] == [{"certificate_chain": {"filename": str(client.certs.cert_chain)},
                                        "private_key": {"filename": str(client.certs.private_key)}}]
    assert ctx["validation_context"] == {"trusted_ca": {"filename": str(client.certs.root_cert)},
                                         "match_typed_subject_alt_names": SANS}
    assert "tls_certificate_sds_secret_configs" not in ctx and "combined_validation_context" not in ctx


def test_destination_rule_subsets_replace_the_topology_subsets(registry: Registry) -> None:
    cs = clusters(sidecar(registry, [subsets_dr("v1", "v2")]))
    assert set(cs) == {ALL, V1, V2}
    assert cs[V1]["metadata"]["filter_metadata"]["istio"]["config"] == (
        "/apis/networking.istio.io/v1/namespaces/default/destination-rule/payment")


@pytest.mark.parametrize(("simple", "expected"), [
    ("ROUND_ROBIN", "ROUND_ROBIN"), ("RANDOM", "RANDOM"), ("LEAST_CONN", "LEAST_REQUEST"),
    ("LEAST_REQUEST", "LEAST_REQUEST"), ("UNSPECIFIED", "LEAST_REQUEST")])
def test_load_balancer(registry: Registry, simple: str, expected: str) -> None:
    dr = subsets_dr("v1", trafficPolicy={"loadBalancer": {"simple": simple}})
    # ROUND_ROBIN is protobuf's zero value: MessageToDict leaves it out.
    assert _cluster(registry, dr).get("lb_policy", "ROUND_ROBIN") == expected


def test_connection_pool_becomes_circuit_breakers_and_http_options(registry: Registry) -> None:
    dr = destination_rule({"trafficPolicy": {"connectionPool": {
        "tcp": {"maxConnections": 10, "connectTimeout": "250ms"},
        "http": {"http2MaxRequests": 100, "http1MaxPendingRequests": 5, "maxRetries": 3,
                 "maxRequestsPerConnection": 50, "idleTimeout": "30s", "maxConcurrentStreams": 64}}}})
    c = _cluster(registry, dr)
    assert c["connect_timeout"] == "0.250s"
    assert c["circuit_breakers"] == {"thresholds": [{"max_connections": 10, "max_pending_requests": 5,
                                                     "max_requests": 100, "max_retries": 3, "track_remaining": True}]}
    options = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["explicit_http_config"] == {"http2_protocol_options": {"max_concurrent_streams": 64}}
    assert options["common_http_protocol_options"] == {"idle_timeout": "30s", "max_requests_per_connection": 50}


def test_outlier_detection_mapping(registry: Registry) -> None:
    dr = destination_rule({"trafficPolicy": {"outlierDetection": {
        "consecutive5xxErrors": 3, "consecutiveGatewayErrors": 0, "interval": "5s", "baseEjectionTime": "1m",
        "maxEjectionPercent": 50, "minHealthPercent": 20}}})
    c = _cluster(registry, dr)
    assert c["outlier_detection"] == {
        "consecutive_5xx": 3, "enforcing_consecutive_5xx": 100,
        "consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0,
        "interval": "5s", "base_ejection_time": "60s", "max_ejection_percent": 50, "enforcing_success_rate": 0}
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 20.0}}
    # Istio writes the panic threshold (0 by default) whenever outlierDetection is set.
    c = _cluster(registry, destination_rule({"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 7}}}))
    assert c["common_lb_config"] == {"healthy_panic_threshold": {}}  # value 0.0 is the zero value
    assert c["outlier_detection"] == {"consecutive_5xx": 7, "enforcing_consecutive_5xx": 100,
                                      "enforcing_success_rate": 0}
    c = _cluster(registry, destination_rule({"trafficPolicy": {"outlierDetection": {
        "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 2}}}))
    assert c["outlier_detection"] == {"enforcing_success_rate": 0, "split_external_local_origin_errors": True,
                                      "consecutive_local_origin_failure": 2,
                                      "enforcing_consecutive_local_origin_failure": 100,
                                      "enforcing_local_origin_success_rate": 0}


def test_subset_policy_overrides_part_by_part_and_port_level_replaces(registry: Registry) -> None:
    dr = destination_rule({
        "trafficPolicy": {
            "loadBalancer": {"simple": "RANDOM"},
            "connectionPool": {"tcp": {"maxConnections": 7}},
            "portLevelSettings": [{"port": {"number": 9999}, "loadBalancer": {"simple": "ROUND_ROBIN"}}],
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 8080}, "outlierDetection": {"consecutive5xxErrors": 1}}]}},
        ],
    })
    cs = clusters(sidecar(registry, [dr]))
    assert cs[ALL]["lb_policy"] == "RANDOM"  # the 9999 port-level entry is for another port
    assert cs[V1].get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert cs[V1]["circuit_breakers"]["thresholds"][0]["max_connections"] == 7  # inherited
    # A subset's port-level entry replaces everything: defaults for what it does not say.
    assert cs[V2]["lb_policy"] == "LEAST_REQUEST"
    assert cs[V2]["circuit_breakers"]["thresholds"][0]["max_connections"] == UNLIMITED
    assert cs[V2]["outlier_detection"]["consecutive_5xx"] == 1


def test_port_level_settings_for_the_service_port_replace_the_policy(registry: Registry) -> None:
    dr = destination_rule({"trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"},
        "outlierDetection": {"consecutive5xxErrors": 9},
        "portLevelSettings": [{"port": {"number": 8080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]}})
    c = _cluster(registry, dr)
    assert c.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert "outlier_detection" not in c


def test_tls_disable_means_plaintext(registry: Registry) -> None:
    c = _cluster(registry, destination_rule({"trafficPolicy": {"tls": {"mode": "DISABLE"}}}))
    assert "transport_socket" not in c
    c = _cluster(registry, destination_rule({"trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}))
    assert c["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def test_destination_rule_lookup_namespaces_export_and_selectors(registry: Registry) -> None:
    rr = {"trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}
    # Not exported to the client's namespace.
    hidden = destination_rule({**rr, "exportTo": ["billing"]})
    assert _cluster(registry, hidden)["lb_policy"] == "LEAST_REQUEST"
    # A rule in an unrelated namespace is not on the lookup path (client ns, service ns, istio-system).
    elsewhere = destination_rule(rr, namespace="billing", host=FQDN)
    assert _cluster(registry, elsewhere)["lb_policy"] == "LEAST_REQUEST"
    root = destination_rule(rr, namespace="istio-system", host=FQDN)
    assert _cluster(registry, root)["lb_policy"] == "RANDOM"
    # workloadSelector: only for the proxies it selects.
    other = destination_rule({**rr, "workloadSelector": {"matchLabels": {"app": "someone-else"}}})
    assert _cluster(registry, other)["lb_policy"] == "LEAST_REQUEST"
    mine = destination_rule({**rr, "workloadSelector": {"matchLabels": {"app": "client"}}})
    assert _cluster(registry, mine)["lb_policy"] == "RANDOM"
    # Wildcard hosts apply; an exact host beats them.
    wildcard = destination_rule(rr, host="*.default.svc.cluster.local", name="all")
    exact = destination_rule({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}})
    assert _cluster(registry, wildcard)["lb_policy"] == "RANDOM"
    assert _cluster(registry, wildcard, exact).get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"


def test_load_assignments(registry: Registry) -> None:
    las = assignments(sidecar(registry, [subsets_dr("v1", "v2", "nobody")]))
    p1, p2, p3 = (registry.workload(n, "default") for n in ("payment-v1", "payment-v2", "payment-v3"))
    assert p1 and p2 and p3
    (locality,) = las[V1]["endpoints"]
    assert locality["load_balancing_weight"] == 1
    (ep,) = locality["lb_endpoints"]
    assert ep["endpoint"]["address"] == {"socket_address": {"address": p1.address, "port_value": p1.inbound_port}}
    assert ep["metadata"] == {"filter_metadata": {"istio": {
        "workload": "payment-v1;default;payment;v1;Kubernetes"}}}
    assert ep["load_balancing_weight"] == 1
    (all_locality,) = las[ALL]["endpoints"]
    assert all_locality["load_balancing_weight"] == 3
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in all_locality["lb_endpoints"]] == [
        p1.address, p2.address, p3.address]
    # A subset nothing matches: no locality at all (never one with weight 0).
    assert las[f"outbound|8080|nobody|{FQDN}"] == {"cluster_name": f"outbound|8080|nobody|{FQDN}"}


def test_a_workload_that_is_not_ready_leaves_eds(registry: Registry) -> None:
    """Istio leaves endpoints that are not ready out of EDS (the supervisor reports a dead app so)."""
    p1, p2 = (registry.workload(n, "default") for n in ("payment-v1", "payment-v2"))
    assert p1 and p2
    not_ready = registry.with_ready("payment-v2", "default", False)
    assert not not_ready.is_ready(p2) and not_ready.is_ready(p1)
    assert not_ready.with_ready("payment-v1", "default", True) is not_ready  # no change, same registry
    las = assignments(sidecar(not_ready, [subsets_dr("v1", "v2")]))
    assert las[V2] == {"cluster_name": V2}
    (locality,) = las[ALL]["endpoints"]
    assert p2.address not in [e["endpoint"]["address"]["socket_address"]["address"] for e in locality["lb_endpoints"]]
    assert las[V1]["endpoints"]
    back = assignments(sidecar(not_ready.with_ready("payment-v2", "default", True), [subsets_dr("v1", "v2")]))
    assert back[V2]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] == \
        p2.address


def test_inbound_listener_and_cluster(registry: Registry) -> None:
    pr = sidecar(registry, [destination_rule({"trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 9}}}})],
                 workload="payment-v1")
    w = registry.workload("payment-v1", "default")
    assert w is not None and w.certs is not None
    (listener,) = pr.of("type.googleapis.com/envoy.config.listener.v3.Listener").values()
    lst = as_dict(listener)
    assert lst["name"] == "virtualInbound" and lst["traffic_direction"] == "INBOUND"
    assert lst["address"] == {"socket_address": {"address": w.address, "port_value": w.inbound_port}}
    # No PeerAuthentication: PERMISSIVE (mTLS chain + plaintext chain; tests/unit/translate/test_translate_mtls.py).
    chain, plaintext = lst["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    assert plaintext["filters"] == chain["filters"]
    hcm = chain["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route["route"]["cluster"] == "inbound|8080||"
    assert route["route"]["retry_policy"] == {"retry_on": "reset-before-request", "num_retries": 2}
    (cluster,) = clusters(pr).values()
    assert cluster["name"] == "inbound|8080||" and cluster["type"] == "STATIC"
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": w.address, "port_value": w.app_port}}
    # A DestinationRule's connection pool applies to the inbound cluster too (Istio).
    assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] == 9
    assert pr.of("type.googleapis.com/envoy.config.route.v3.RouteConfiguration") == {}
