"""VirtualService -> routes, as pure functions: Istio resources in, RouteConfiguration protos out."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_ctl.registry import Registry
from tests.unit.translate.conftest import ALL, AUDIT, FQDN, V1, V2, dest, subsets_dr, virtual_service
from tests.unit.translate.helpers import routes, sidecar, vhost

DR = subsets_dr("v1", "v2", "v3")
CONFIG = "/apis/networking.istio.io/v1/namespaces/default/virtual-service/payment"


def _routes(registry: Registry, http: list[dict[str, Any]], *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return routes(sidecar(registry, [virtual_service(http), DR, *extra]))


def test_virtual_host_has_istio_name_and_domain_variants(registry: Registry) -> None:
    vh = vhost(sidecar(registry, []))
    assert vh["name"] == f"{FQDN}:8080"
    assert set(vh["domains"]) == {
        "payment", "payment:8080", "payment.default", "payment.default:8080", "payment.default.svc",
        "payment.default.svc:8080", FQDN, f"{FQDN}:8080"}
    assert vh["include_request_attempt_count"] is True


def test_no_virtual_service_gives_the_topology_split_with_istio_defaults(registry: Registry) -> None:
    (route,) = routes(sidecar(registry, []))
    assert route["name"] == "default"
    assert route["match"] == {"prefix": "/"}
    action = route["route"]
    # The topology's weights (v3 has weight 0: dropped, as Istio drops weight-0 destinations).
    assert action["weighted_clusters"] == {"clusters": [{"name": V1, "weight": 50}, {"name": V2, "weight": 50}]}
    assert "total_weight" not in action["weighted_clusters"]
    assert action["timeout"] == "0s"
    assert action["max_stream_duration"] == {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}
    assert action["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": "5",
        "retriable_status_codes": [503],
    }


def test_destination_rule_without_the_topology_subsets_routes_to_the_whole_service(registry: Registry) -> None:
    (route,) = routes(sidecar(registry, [subsets_dr("blue", "green")]))
    assert route["route"]["cluster"] == ALL


def test_weights_single_destination_and_zero_weights(registry: Registry) -> None:
    r = _routes(registry, [{"name": "split", "route": [dest("v1", 80), dest("v2", 20), dest("v3", 0)]}])
    assert r[0]["name"] == "split"
    assert r[0]["route"]["weighted_clusters"]["clusters"] == [{"name": V1, "weight": 80}, {"name": V2, "weight": 20}]
    (single,) = _routes(registry, [{"route": [dest("v2")]}])
    assert single["route"]["cluster"] == V2 and "weighted_clusters" not in single["route"]


def test_matches(registry: Registry) -> None:
    http = [
        {"name": "exact", "match": [{"uri": {"exact": "/payment.PaymentService/Refund"}}], "route": [dest("v2")]},
        {"name": "prefix", "match": [{"uri": {"prefix": "/payment.PaymentService/"}, "ignoreUriCase": True}],
         "route": [dest("v1")]},
        {"name": "regex", "match": [{"uri": {"regex": "/payment\\.PaymentService/(Get|List).*"}}],
         "route": [dest("v1")]},
        {"name": "hdr", "match": [{"headers": {
            "x-canary": {"exact": "true"}, "x-user": {"prefix": "test-"}, "x-tenant": {"regex": "t[0-9]+"},
            "x-trace": {}}}], "route": [dest("v3")]},
        {"name": "without", "match": [{"withoutHeaders": {"x-debug": {}, "x-env": {"exact": "prod"}}}],
         "route": [dest("v2")]},
        {"name": "authority", "match": [{"authority": {"exact": "payment.default:8080"}, "method": {"exact": "POST"}}],
         "route": [dest("v1")]},
    ]
    r = {route["name"]: route["match"] for route in _routes(registry, http)}
    assert r["exact"] == {"path": "/payment.PaymentService/Refund", "case_sensitive": True}
    assert r["prefix"] == {"prefix": "/payment.PaymentService/", "case_sensitive": False}
    assert r["regex"] == {"safe_regex": {"regex": "/payment\\.PaymentService/(Get|List).*"}, "case_sensitive": True}
    assert r["hdr"]["headers"] == [  # sorted by name, as Istio sorts them
        {"name": "x-canary", "string_match": {"exact": "true"}},
        {"name": "x-tenant", "string_match": {"safe_regex": {"regex": "t[0-9]+"}}},
        {"name": "x-trace", "present_match": True},
        {"name": "x-user", "string_match": {"prefix": "test-"}},
    ]
    assert r["without"]["headers"] == [
        {"name": "x-debug", "present_match": True, "invert_match": True},
        {"name": "x-env", "string_match": {"exact": "prod"}, "invert_match": True,
         "treat_missing_header_as_empty": True},
    ]
    assert r["authority"]["headers"] == [
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": ":authority", "string_match": {"exact": "payment.default:8080"}},
    ]


def test_match_blocks_are_ored_in_order_and_named(registry: Registry) -> None:
    http = [{"name": "canary", "match": [{"name": "a", "headers": {"x-a": {"exact": "1"}}},
                                         {"name": "b", "headers": {"x-b": {"exact": "1"}}}],
             "route": [dest("v3")]},
            {"name": "rest", "route": [dest("v1")]}]
    assert [r["name"] for r in _routes(registry, http)] == ["canary.a", "canary.b", "rest"]


def test_routes_after_a_catch_all_are_dropped(registry: Registry) -> None:
    http: list[dict[str, Any]] = [
        {"name": "all", "match": [{"uri": {"prefix": "/"}}, {"headers": {"x": {"exact": "1"}}}],
             "route": [dest("v1")]},
            {"name": "never", "route": [dest("v2")]}]
    assert [r["name"] for r in _routes(registry, http)] == ["all"]
    http = [{"name": "all", "route": [dest("v1")]}, {"name": "never", "route": [dest("v2")]}]
    assert [r["name"] for r in _routes(registry, http)] == ["all"]


def test_match_port_and_source_selection(registry: Registry) -> None:
    http = [
        {"name": "other-port", "match": [{"port": 9999}], "route": [dest("v3")]},
        {"name": "for-v2-callers", "match": [{"sourceLabels": {"version": "v2"}}], "route": [dest("v3")]},
        {"name": "other-ns", "match": [{"sourceNamespace": "billing"}], "route": [dest("v3")]},
        {"name": "gateway-only", "match": [{"gateways": ["my-gateway"]}], "route": [dest("v3")]},
        {"name": "for-v1-callers", "match": [{"sourceLabels": {"app": "client", "version": "v1"}, "port": 8080,
                                              "sourceNamespace": "default", "gateways": ["mesh"]}],
         "route": [dest("v1")]},
    ]
    assert [r["name"] for r in _routes(registry, http)] == ["for-v1-callers"]


def test_all_routes_selected_away_falls_back_to_the_default_route(registry: Registry) -> None:
    r = _routes(registry, [{"match": [{"sourceLabels": {"app": "nobody"}}], "route": [dest("v3")]}])
    assert [x["name"] for x in r] == ["default"]


def test_virtual_service_for_gateways_only_does_not_apply_to_sidecars(registry: Registry) -> None:
    vs = virtual_service([{"name": "gw", "route": [dest("v3")]}], gateways=["ingress"])
    assert [x["name"] for x in routes(sidecar(registry, [vs, DR]))] == ["default"]


def test_timeouts(registry: Registry) -> None:
    (r,) = _routes(registry, [{"route": [dest("v1")], "timeout": "1.5s"}])
    assert r["route"]["timeout"] == "1.500s"
    assert r["route"]["max_stream_duration"] == {"max_stream_duration": "0s", "grpc_timeout_header_max": "1.500s"}
    (r,) = _routes(registry, [{"route": [dest("v1")], "timeout": "250ms"}])
    assert r["route"]["timeout"] == "0.250s"
    (r,) = _routes(registry, [{"route": [dest("v1")]}])
    assert r["route"]["timeout"] == "0s"
    assert r["route"]["max_stream_duration"]["grpc_timeout_header_max"] == "0s"


DEFAULT_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


@pytest.mark.parametrize(("retries", "expected"), [
    (None, {"retry_on": DEFAULT_ON, "num_retries": 2, "retriable_status_codes": [503], "hosts": True}),
    ({"attempts": 0}, None),
    ({"attempts": 3}, {"retry_on": DEFAULT_ON, "num_retries": 3, "retriable_status_codes": [503], "hosts": True}),
    ({"attempts": 4, "retryOn": "unavailable,cancelled"},
     {"retry_on": "unavailable,cancelled", "num_retries": 4, "hosts": True}),
    ({"attempts": 2, "retryOn": "503,reset"},
     {"retry_on": "reset,retriable-status-codes", "num_retries": 2, "retriable_status_codes": [503],
      "hosts": True}),
    ({"attempts": 2, "retryOn": "502,503", "perTryTimeout": "2s", "retryIgnorePreviousHosts": False,
      "backoff": "50ms"},
     {"retry_on": "retriable-status-codes", "num_retries": 2, "retriable_status_codes": [502, 503],
      "per_try_timeout": "2s", "retry_back_off": {"base_interval": "0.050s"}, "hosts": False}),
])
def test_retries_follow_istio(registry: Registry, retries: dict[str, Any] | None,
                              expected: dict[str, Any] | None) -> None:
    http: dict[str, Any] = {"route": [dest("v1")]}
    if retries is not None:
        http["retries"] = retries
    (r,) = _routes(registry, [http])
    policy = r["route"].get("retry_policy")
    if expected is None:
        assert policy is None
        return
    assert policy is not None
    want = dict(expected)
    hosts = want.pop("hosts")
    assert ("retry_host_predicate" in policy) is hosts
    policy.pop("retry_host_predicate", None)
    assert policy == {**want, "host_selection_retry_max_attempts": "5"}


def test_mirrors(registry: Registry) -> None:
    http = [{"name": "m", "route": [dest("v1")], "mirror": {"host": "payment", "subset": "v2"},
             "mirrorPercentage": {"value": 12.5},
             "mirrors": [{"destination": {"host": "audit"}},
                         {"destination": {"host": "audit"}, "percentage": {"value": 0}}]}]
    (r,) = _routes(registry, http)
    assert r["route"]["request_mirror_policies"] == [
        {"cluster": V2, "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
         "trace_sampled": False},
        {"cluster": f"outbound|9090||{AUDIT}", "runtime_fraction": {"default_value": {"numerator": 100}},
         "trace_sampled": False},
    ]
    (r,) = _routes(registry, [{"route": [dest("v1")], "mirror": {"host": "payment", "subset": "v2"},
                               "mirrorPercentage": {"value": 0}}])
    assert "request_mirror_policies" not in r["route"]


def test_mirror_target_gets_clusters_and_endpoints(registry: Registry) -> None:
    pr = sidecar(registry, [virtual_service([{"route": [dest("v1")], "mirror": {"host": "audit"}}]), DR])
    assert f"outbound|9090||{AUDIT}" in pr.of("type.googleapis.com/envoy.config.cluster.v3.Cluster")
    assert AUDIT in pr.services
    assert pr.warnings == ()


def test_header_operations(registry: Registry) -> None:
    http = [{"route": [dest("v1", headers={"request": {"set": {"x-dest": "v1"}}})],
             "headers": {"request": {"set": {"x-b": "2", "x-a": "1", ":authority": "payment-v1.internal"},
                                     "add": {"x-c": "3"}, "remove": ["x-drop", ":path"]},
                         "response": {"set": {"x-served-by-mesh": "yes"}, "remove": ["x-internal"]}}}]
    (r,) = _routes(registry, http)
    assert r["request_headers_to_add"] == [
        {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-b", "value": "2"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-c", "value": "3"}},  # APPEND_IF_EXISTS_OR_ADD is the default (0)
        {"header": {"key": "x-dest", "value": "v1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
    ]
    assert r["request_headers_to_remove"] == ["x-drop"]
    assert r["response_headers_to_add"] == [
        {"header": {"key": "x-served-by-mesh", "value": "yes"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert r["response_headers_to_remove"] == ["x-internal"]
    assert r["route"]["host_rewrite_literal"] == "payment-v1.internal"


def test_weighted_destination_headers_go_on_the_cluster_weight(registry: Registry) -> None:
    http = [{"route": [dest("v1", 90, headers={"response": {"add": {"x-subset": "v1"}}}),
                       dest("v2", 10, headers={"response": {"add": {"x-subset": "v2"}}})]}]
    (r,) = _routes(registry, http)
    first = r["route"]["weighted_clusters"]["clusters"][0]
    assert first["response_headers_to_add"] == [{"header": {"key": "x-subset", "value": "v1"}}]


def test_rewrite_direct_response_metadata_and_decorator(registry: Registry) -> None:
    http: list[dict[str, Any]] = [
        {"name": "rw", "match": [{"uri": {"prefix": "/old."}}], "rewrite": {"uri": "/payment.", "authority": "payment"},
         "route": [dest("v1")]},
            {"name": "gone", "match": [{"uri": {"exact": "/payment.PaymentService/Legacy"}}],
             "directResponse": {"status": 503, "body": {"string": "retired"}}},
            {"name": "rest", "route": [dest("v1", 50), dest("v2", 50)], "timeout": "1s"}]
    rw, gone, rest = _routes(registry, http)
    assert rw["route"]["prefix_rewrite"] == "/payment." and rw["route"]["host_rewrite_literal"] == "payment"
    assert gone["direct_response"] == {"status": 503, "body": {"inline_string": "retired"}}
    assert "route" not in gone
    assert rw["metadata"] == {"filter_metadata": {"istio": {"config": CONFIG}}}
    assert rw["decorator"] == {"operation": f"{FQDN}:8080/old.*"}
    assert rest["decorator"] == {"operation": "payment:8080/*"}  # several clusters: the VS name


def test_destination_port_and_short_names_resolve_in_the_virtual_service_namespace(registry: Registry) -> None:
    http = [{"route": [{"destination": {"host": "ledger.billing.svc.cluster.local", "port": {"number": 7070}}}],
             "mirror": {"host": "audit"}}]
    (r,) = _routes(registry, http)
    assert r["route"]["cluster"] == "outbound|7070||ledger.billing.svc.cluster.local"
    assert r["route"]["request_mirror_policies"][0]["cluster"] == f"outbound|9090||{AUDIT}"


def test_a_route_to_an_undefined_subset_is_kept_with_a_warning(registry: Registry) -> None:
    pr = sidecar(registry, [virtual_service([{"route": [dest("v9")]}]), DR])
    (r,) = routes(pr)
    assert r["route"]["cluster"] == f"outbound|8080|v9|{FQDN}"
    assert any("v9" in w for w in pr.warnings)


def test_grpc_trailers_annotation_sets_the_routes_minimesh_metadata(registry: Registry) -> None:
    vs = virtual_service([{"name": "a", "route": [dest("v1")]}, {"name": "b", "route": [dest("v2")]}])
    vs["metadata"]["annotations"] = {"minimesh.io/grpc-status-in-trailers": "retry, Outlier"}
    for route in routes(sidecar(registry, [vs, DR])):
        if route["name"] in ("a", "b"):
            assert route["metadata"]["filter_metadata"]["minimesh"] == {
                "retry_on_trailers": True, "outlier_on_trailers": True}
    vs["metadata"]["annotations"] = {"minimesh.io/grpc-status-in-trailers": "retry"}
    (a, *_) = routes(sidecar(registry, [vs, DR]))
    assert a["metadata"]["filter_metadata"]["minimesh"] == {"retry_on_trailers": True}
    # Without the annotation: Envoy's behaviour, no minimesh metadata at all.
    del vs["metadata"]["annotations"]
    (a, *_) = routes(sidecar(registry, [vs, DR]))
    assert "minimesh" not in a["metadata"]["filter_metadata"]


def test_a_bad_grpc_trailers_annotation_is_refused_with_its_path(registry: Registry) -> None:
    from mesh_ctl.translate import TranslationError, check_resource

    vs = virtual_service([{"route": [dest("v1")]}])
    vs["metadata"]["annotations"] = {"minimesh.io/grpc-status-in-trailers": "retry,always"}
    with pytest.raises(TranslationError) as e:
        check_resource(vs)
    assert e.value.path == "metadata.annotations[minimesh.io/grpc-status-in-trailers]"
    assert "retry, outlier" in e.value.reason
