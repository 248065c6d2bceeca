"""VirtualService ``http[].fault`` -> the route's HTTPFault and the fault HTTP filter, as Istio translates them
(``route.TranslateFault``, ``translatePercentToFractionalPercent``, ``buildHTTPConnectionManager``, grpcgen's
``supportedFilters``). The oracle is Envoy's own proto: what the translation emits is unpacked into
``envoy.extensions.filters.http.fault.v3.HTTPFault`` and compared with the message Istio would build."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from mesh_ctl.registry import Registry
from mesh_ctl.resources.virtual_service import GRPC_STATUS_NAMES
from mesh_ctl.translate import LISTENER_TYPE, ROUTE_TYPE, ProxyResources, check_resource
from mesh_ctl.translate.fault import GRPC_STATUS
from tests.unit.translate.conftest import dest, subsets_dr, virtual_service
from tests.unit.translate.helpers import proxyless, sidecar

FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
DR = subsets_dr("v1", "v2")


def _per_route(pr: ProxyResources, route_config: str = "virtualOutbound") -> list[fault_pb2.HTTPFault | None]:
    """Per route of the payment virtual host: its HTTPFault (unpacked), or None without one."""
    rc = pr.of(ROUTE_TYPE)[route_config]
    (vh,) = [v for v in rc.virtual_hosts if v.name.startswith("payment.")]
    out: list[fault_pb2.HTTPFault | None] = []
    for r in vh.routes:
        if FAULT not in r.typed_per_filter_config:
            out.append(None)
            continue
        assert set(r.typed_per_filter_config) == {FAULT}
        anything = r.typed_per_filter_config[FAULT]
        assert anything.type_url == FAULT_TYPE
        fault = fault_pb2.HTTPFault()
        assert anything.Unpack(fault)
        out.append(fault)
    return out


def _expected(doc: dict[str, Any]) -> fault_pb2.HTTPFault:
    return json_format.ParseDict(doc, fault_pb2.HTTPFault())


def _one(registry: Registry, fault: dict[str, Any]) -> fault_pb2.HTTPFault:
    (got,) = _per_route(sidecar(registry, [virtual_service([{"route": [dest("v1")], "fault": fault}]), DR]))
    assert got is not None
    return got


MILLION = "MILLION"
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("grpc abort, the seed's demo",
     {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}},
     {"abort": {"grpc_status": 14, "percentage": {"numerator": 300000, "denominator": MILLION}}}),
    ("http abort", {"abort": {"httpStatus": 503, "percentage": {"value": 0.1}}},
     {"abort": {"http_status": 503, "percentage": {"numerator": 1000, "denominator": MILLION}}}),
    ("fixed delay", {"delay": {"fixedDelay": "200ms", "percentage": {"value": 10}}},
     {"delay": {"fixed_delay": "0.200s", "percentage": {"numerator": 100000, "denominator": MILLION}}}),
    ("delay and abort together",
     {"delay": {"fixedDelay": "1.5s", "percentage": {"value": 100}},
      "abort": {"grpcStatus": "PERMISSION_DENIED", "percentage": {"value": 2.5}}},
     {"delay": {"fixed_delay": "1.5s", "percentage": {"numerator": 1000000, "denominator": MILLION}},
      "abort": {"grpc_status": 7, "percentage": {"numerator": 25000, "denominator": MILLION}}}),
    # uint32(p.Value * 10000) in Go: the float product 5699.999... truncates, as Istio's does.
    ("percentage truncated like Istio's", {"abort": {"httpStatus": 500, "percentage": {"value": 0.57}}},
     {"abort": {"http_status": 500, "percentage": {"numerator": 5699, "denominator": MILLION}}}),
    ("percentage 0", {"abort": {"grpcStatus": "INTERNAL", "percentage": {"value": 0}}},
     {"abort": {"grpc_status": 13, "percentage": {"numerator": 0, "denominator": MILLION}}}),
    # No percentage: a delay falls back to the deprecated integer percent (HUNDRED), 0 when unset: never.
    ("deprecated integer percent", {"delay": {"fixedDelay": "1s", "percent": 25}},
     {"delay": {"fixed_delay": "1s", "percentage": {"numerator": 25, "denominator": "HUNDRED"}}}),
    ("delay without any percentage", {"delay": {"fixedDelay": "1s"}},
     {"delay": {"fixed_delay": "1s", "percentage": {"numerator": 0, "denominator": "HUNDRED"}}}),
    ("percentage wins over percent", {"delay": {"fixedDelay": "1s", "percent": 25, "percentage": {"value": 50}}},
     {"delay": {"fixed_delay": "1s", "percentage": {"numerator": 500000, "denominator": MILLION}}}),
    # An abort without a percentage gets none (Envoy's default 0: never), as Istio leaves it.
    ("abort without percentage", {"abort": {"grpcStatus": "UNAVAILABLE"}}, {"abort": {"grpc_status": 14}}),
    # Istio drops an abort without a status and a delay without fixedDelay; nothing left: an empty HTTPFault.
    ("abort without a status", {"abort": {"percentage": {"value": 50}}}, {}),
    ("delay without fixedDelay", {"delay": {"percentage": {"value": 50}}, "abort": {"httpStatus": 418}},
     {"abort": {"http_status": 418}}),
]


@pytest.mark.parametrize(("fault", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fault_becomes_the_routes_http_fault(registry: Registry, fault: dict[str, Any],
                                             expected: dict[str, Any]) -> None:
    got = _one(registry, fault)
    assert got == _expected(expected)
    if "abort" in expected and "percentage" not in expected["abort"]:
        assert not got.abort.HasField("percentage")


def test_every_grpc_status_name_is_its_code(registry: Registry) -> None:
    assert {s.name: s.value[0] for s in grpc.StatusCode} == GRPC_STATUS
    assert set(GRPC_STATUS) == GRPC_STATUS_NAMES  # what the validator accepts, the translator knows
    for name, code in GRPC_STATUS.items():
        assert _one(registry, {"abort": {"grpcStatus": name, "percentage": {"value": 1}}}).abort.grpc_status == code


def test_only_routes_with_a_fault_get_one_and_every_match_of_such_a_route_does(registry: Registry) -> None:
    canary = {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}},
                                          {"uri": {"prefix": "/payment.PaymentService/Refund"}}],
              "route": [dest("v2")], "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 50}}}}
    split = {"name": "split", "route": [dest("v1", 90), dest("v2", 10)]}
    pr = sidecar(registry, [virtual_service([canary, split]), DR])
    want = _expected({"abort": {"grpc_status": 14, "percentage": {"numerator": 500000, "denominator": MILLION}}})
    assert _per_route(pr) == [want, want, None]
    # Without a VirtualService (Istio's default route) there is no fault either.
    assert _per_route(sidecar(registry, [])) == [None]


def _hcm(pr: ProxyResources, listener: str) -> hcm_pb2.HttpConnectionManager:
    lst = pr.of(LISTENER_TYPE)[listener]
    hcm = hcm_pb2.HttpConnectionManager()
    f = lst.api_listener.api_listener if lst.HasField("api_listener") else lst.filter_chains[0].filters[0].typed_config
    assert f.Unpack(hcm)
    return hcm


def test_the_outbound_connection_manager_has_the_fault_filter_before_the_router(registry: Registry) -> None:
    """Istio appends the fault filter after authn/authz, stats and ALPN and just before the router; minimesh's
    outbound connection manager has none of those, so it is fault then router, whether or not a route uses
    it (an empty HTTPFault injects nothing). Inbound connection managers keep RBAC then router."""
    for resources in ([], [virtual_service([{"route": [dest("v1")], "fault": {"delay": {"fixedDelay": "1s"}}}]), DR]):
        hcm = _hcm(sidecar(registry, resources), "virtualOutbound")
        assert [f.name for f in hcm.http_filters] == [FAULT, "envoy.filters.http.router"]
        assert hcm.http_filters[0].typed_config.type_url == FAULT_TYPE
        assert hcm.http_filters[0].typed_config.value == b""
        assert not hcm.http_filters[0].is_optional  # as Istio: a proxy without the filter must refuse
    inbound = _hcm(sidecar(registry, [], workload="payment-v1"), "virtualInbound")
    assert FAULT not in [f.name for f in inbound.http_filters]
    assert inbound.http_filters[-1].name == "envoy.filters.http.router"


def test_a_proxyless_client_gets_the_same_fault_and_the_filter(registry: Registry) -> None:
    fault = {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}, "delay": {"fixedDelay": "50ms"}}
    pr = proxyless(registry, [virtual_service([{"route": [dest("v1")], "fault": fault}]), DR])
    (got,) = _per_route(pr, "outbound|8080||payment.default.svc.cluster.local")
    assert got == _expected({"abort": {"grpc_status": 14, "percentage": {"numerator": 300000,
                                                                           "denominator": MILLION}},
                             "delay": {"fixed_delay": "0.050s", "percentage": {"numerator": 0}}})
    hcm = _hcm(pr, "payment:8080")
    assert [f.name for f in hcm.http_filters] == [FAULT, "envoy.filters.http.router"]


def test_the_store_check_accepts_faults() -> None:
    check_resource(virtual_service([{"route": [dest("v1")], "fault": {
        "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}},
        "delay": {"fixedDelay": "200ms", "percentage": {"value": 10}}}}]))
