"""What minimesh cannot do is refused with the field path (for the store), never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_ctl.registry import Registry
from mesh_ctl.translate import CLUSTER_TYPE, TranslationError, UnknownProxyError, check_resource, translate_for_proxy
from tests.unit.translate.conftest import dest, destination_rule, subsets_dr, virtual_service

ROUTE: dict[str, Any] = {"route": [dest("v1")]}


def _vs_http(**fields: Any) -> dict[str, Any]:
    return virtual_service([{**ROUTE, **fields}])


UNSUPPORTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("http2 error abort", _vs_http(fault={"abort": {"http2Error": "REFUSED_STREAM"}}),
     "spec.http[0].fault.abort.http2Error", "HTTP/2 error"),
    ("exponential delay", _vs_http(fault={"delay": {"exponentialDelay": "1s"}}),
     "spec.http[0].fault.delay.exponentialDelay", "exponential"),
    ("unknown grpc status", _vs_http(fault={"abort": {"grpcStatus": "14"}}),
     "spec.http[0].fault.abort.grpcStatus", "unknown gRPC status"),
    ("redirect", virtual_service([{"redirect": {"uri": "/x"}}]), "spec.http[0].redirect", "redirect"),
    ("cors", _vs_http(corsPolicy={"allowOrigins": [{"exact": "x"}]}), "spec.http[0].corsPolicy", "CORS"),
    ("delegate", virtual_service([{"delegate": {"name": "other"}}]), "spec.http[0].delegate", "delegate"),
    ("query", _vs_http(match=[{"queryParams": {"a": {"exact": "b"}}}]), "spec.http[0].match[0].queryParams",
     "query"),
    ("regex rewrite", _vs_http(rewrite={"uriRegexRewrite": {"match": "a", "rewrite": "b"}}),
     "spec.http[0].rewrite.uriRegexRewrite", "regex rewrites"),
    ("jwt claims", _vs_http(match=[{"headers": {"@request.auth.claims.group": {"exact": "a"}}}]),
     "spec.http[0].match[0].headers.@request.auth.claims.group", "JWT"),
    ("lookahead", _vs_http(match=[{"uri": {"regex": "/a(?=b)"}}]), "spec.http[0].match[0].uri.regex",
     "lookaround"),
    ("formatter", _vs_http(headers={"request": {"set": {"x-id": "%REQ(x-request-id)%"}}}),
     "spec.http[0].headers.request.set.x-id", "formatter"),
    ("remote localities", _vs_http(retries={"attempts": 2, "retryRemoteLocalities": True}),
     "spec.http[0].retries.retryRemoteLocalities", "localities"),
    ("unknown retry condition", _vs_http(retries={"attempts": 2, "retryOn": "sometimes"}),
     "spec.http[0].retries.retryOn", "sometimes"),
    ("tcp routes", virtual_service([ROUTE], tcp=[{"route": [dest("v1")]}]), "spec.tcp", "TCP"),
    ("unknown field", _vs_http(sparkles=True), "spec.http[0].sparkles", "not supported"),
    ("consistent hash", destination_rule({"trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x-user"}}}}), "spec.trafficPolicy.loadBalancer.consistentHash", "consistent-hash"),
    ("passthrough", destination_rule({"trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}),
     "spec.trafficPolicy.loadBalancer.simple", "PASSTHROUGH"),
    ("locality lb", destination_rule({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
        "distribute": [{"from": "a", "to": {"b": 100}}]}}}}),
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", "locality"),
    ("warmup", destination_rule({"trafficPolicy": {"loadBalancer": {"warmupDurationSecs": "10s"}}}),
     "spec.trafficPolicy.loadBalancer.warmupDurationSecs", "slow start"),
    ("keepalive", destination_rule({"trafficPolicy": {"connectionPool": {"tcp": {"tcpKeepalive": {
        "time": "10s"}}}}}), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive", "keepalive"),
    ("tls simple", destination_rule({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}}),
     "spec.trafficPolicy.tls.mode", "SIMPLE"),
    ("tunnel", destination_rule({"trafficPolicy": {"tunnel": {"targetHost": "x", "targetPort": 1}}}),
     "spec.trafficPolicy.tunnel", "tunnel"),
    ("subset port level", destination_rule({"subsets": [{"name": "v1", "labels": {"version": "v1"},
                                                         "trafficPolicy": {"portLevelSettings": [
                                                             {"port": {"number": 1}, "loadBalancer": {
                                                                 "consistentHash": {"useSourceIp": True}}}]}}]}),
     "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash", "consistent-hash"),
    ("deprecated outlier field", destination_rule({"trafficPolicy": {"outlierDetection": {"consecutiveErrors": 5}}}),
     "spec.trafficPolicy.outlierDetection.consecutiveErrors", "deprecated"),
]


@pytest.mark.parametrize(("resource", "path", "words"), [u[1:] for u in UNSUPPORTED], ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_fields_are_refused_with_their_path(resource: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(TranslationError) as info:
        check_resource(resource)
    assert info.value.path == path
    assert words.lower() in info.value.reason.lower()
    assert info.value.resource == f"{resource['kind']} default/payment"
    assert str(info.value).startswith(f"{resource['kind']} default/payment: {path}: ")


def test_translation_raises_the_same_error(registry: Registry) -> None:
    client = registry.workload("client", "default")
    assert client is not None
    bad = _vs_http(corsPolicy={"allowOrigins": [{"exact": "x"}]})
    with pytest.raises(TranslationError, match=r"spec\.http\[0\]\.corsPolicy"):
        translate_for_proxy(registry, [bad, subsets_dr("v1")], client.node_id)


def test_check_looks_past_selection_and_catch_all(registry: Registry) -> None:
    """A route another proxy would get (other sourceLabels, after a catch-all, another port) is checked too."""
    cases: list[list[dict[str, Any]]] = [
        [ROUTE, {**ROUTE, "corsPolicy": {}}],
        [{**ROUTE, "match": [{"port": 1234}], "fault": {"abort": {"http2Error": "CANCEL"}}}],
        [{**ROUTE, "match": [{"sourceLabels": {"app": "x"}}], "corsPolicy": {}}],
    ]
    for http in cases:
        with pytest.raises(TranslationError):
            check_resource(virtual_service(http))


@pytest.mark.parametrize("resource", [
    virtual_service([{"name": "ok", "match": [{"uri": {"prefix": "/"}, "headers": {"x": {"regex": "a|b"}}}],
                      "route": [dest("v1", 90), dest("v2", 10)], "timeout": "2s",
                      "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "unavailable,503"},
                      "mirror": {"host": "audit"}, "mirrorPercentage": {"value": 5},
                      "headers": {"response": {"add": {"x-mesh": "minimesh 100%%"}}}}]),
    destination_rule({"trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": False}},
        "connectionPool": {"tcp": {"maxConnections": 1}, "http": {"h2UpgradePolicy": "UPGRADE"}},
        "outlierDetection": {"consecutive5xxErrors": 1}, "tls": {"mode": "ISTIO_MUTUAL"}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}),
])
def test_supported_resources_pass(resource: dict[str, Any]) -> None:
    check_resource(resource)


@pytest.mark.parametrize(("resource", "words"), [
    ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "x"}, "spec": {}},
     "not supported"),
    ({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication", "metadata": {"name": "x"},
      "spec": {}}, "not supported"),
    ({"apiVersion": "v1", "kind": "VirtualService", "metadata": {"name": "x"}, "spec": {}}, "Istio API group"),
    ({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"}}, "required"),
])
def test_other_kinds_are_refused(resource: dict[str, Any], words: str) -> None:
    with pytest.raises(TranslationError, match=words):
        check_resource(resource)


def test_unknown_nodes(registry: Registry) -> None:
    with pytest.raises(UnknownProxyError):
        translate_for_proxy(registry, [], "sidecar~127.9.9.9~nobody.default~default.svc.cluster.local")
    with pytest.raises(UnknownProxyError):
        translate_for_proxy(registry, [], {"id": "grpc-client", "metadata": {"GENERATOR": "grpc"}})
    # An id that is not Istio-shaped but names the pod/namespace via its metadata-free form is unknown too.
    with pytest.raises(UnknownProxyError):
        translate_for_proxy(registry, [], "just-a-name")


def test_sidecar_without_certificates_needs_sds(registry: Registry) -> None:
    """With SDS (the default) the control plane needs no certificate files; with tls=files it does."""
    from dataclasses import replace

    stripped = replace(registry, workloads=tuple(replace(w, certs=None) for w in registry.workloads))
    client = stripped.workload("client", "default")
    assert client is not None
    assert translate_for_proxy(stripped, [], client.node_id).of(CLUSTER_TYPE)
    with pytest.raises(TranslationError, match="certificate"):
        translate_for_proxy(stripped, [], client.node_id, tls="files")
    with pytest.raises(ValueError, match="tls must be one of"):
        translate_for_proxy(registry, [], client.node_id, tls="vault")  # type: ignore[arg-type]
