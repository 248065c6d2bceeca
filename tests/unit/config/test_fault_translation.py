"""HTTPFault (listener filter and typed_per_filter_config) and RBACPerRoute translation: valid configs become the
model Envoy's semantics need; what pyproxy does not do is refused with its field path."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2

from pyproxy.config import model as m
from pyproxy.config import xds_resources as xr
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from pyproxy.config.protojson import parse_message
from pyproxy.config.translate.fault import runtime_entry, simple_atoi
from tests.unit.config.conftest import HCM, ROUTE, VHOST
from tests.unit.config.test_xds_resources import MESSAGES

Bootstrap = dict[str, Any]
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
FAULT_NAME = "envoy.filters.http.fault"
F = f'["{FAULT_NAME}"]'


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def _hcm(d: Bootstrap) -> dict[str, Any]:
    hcm: dict[str, Any] = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _vhost(d: Bootstrap) -> dict[str, Any]:
    vhost: dict[str, Any] = _hcm(d)["route_config"]["virtual_hosts"][0]
    return vhost


def _route(d: Bootstrap) -> dict[str, Any]:
    route: dict[str, Any] = _vhost(d)["routes"][0]
    return route


def _add_fault_filter(d: Bootstrap, **config: Any) -> None:
    _hcm(d)["http_filters"].insert(0, {"name": FAULT_NAME, "typed_config": _typed(FAULT, **config)})


def _snapshot(d: Bootstrap, material: MaterialStore) -> m.Snapshot:
    return parse_bootstrap_dict(d, material=material)


def _hcm_model(snap: m.Snapshot) -> m.HttpConnectionManager:
    return snap.listeners["0.0.0.0_8811"].filter_chains[0].hcm


def _problems(d: Bootstrap, material: MaterialStore) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(d, material=material)
    return [(p.path, p.reason) for p in info.value.problems]


# ------------------------------------------------------------------------------------------- valid configs


def test_listener_fault_filter_with_every_supported_field(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _add_fault_filter(
        grpc_proxy,
        delay={"fixed_delay": "0.2501s", "percentage": {"numerator": 25, "denominator": "TEN_THOUSAND"}},
        abort={"grpc_status": 14, "percentage": {"numerator": 30}},
        upstream_cluster="backend_grpc_service",
        headers=[{"name": "X-Fault", "string_match": {"exact": "yes"}}],
        downstream_nodes=["node-a", "node-b"],
        max_active_faults=7,
        abort_percent_runtime="my.abort",
        disable_downstream_cluster_stats=True,
    )
    filters = _hcm_model(_snapshot(grpc_proxy, material)).http_filters
    assert [f.name for f in filters] == [FAULT_NAME, "envoy.filters.http.router"]
    assert filters[0].type_url == f"type.googleapis.com/{FAULT}"
    assert filters[0].config == m.FaultConfig(
        delay=m.FaultDelay(percentage=m.FractionalPercent(25, 10_000), fixed_delay_ms=250),
        abort=m.FaultAbort(kind="grpc", percentage=m.FractionalPercent(30, 100), grpc_status=14),
        headers=(m.HeaderMatcher(name="x-fault", string_match=m.StringMatcher(kind="exact", value="yes")),),
        downstream_nodes=frozenset({"node-a", "node-b"}),
        upstream_cluster="backend_grpc_service",
        max_active_faults=7,
        abort_percent_runtime="my.abort",
        disable_downstream_cluster_stats=True,
    )


def test_empty_listener_config_is_inert_and_defaults_are_envoys(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _add_fault_filter(grpc_proxy)
    config = _hcm_model(_snapshot(grpc_proxy, material)).http_filters[0].config
    assert isinstance(config, m.FaultConfig) and config.inert
    assert (config.delay_percent_runtime, config.abort_percent_runtime, config.delay_duration_runtime,
            config.abort_http_status_runtime, config.abort_grpc_status_runtime, config.max_active_faults_runtime) == (
        "fault.http.delay.fixed_delay_percent", "fault.http.abort.abort_percent", "fault.http.delay.fixed_duration_ms",
        "fault.http.abort.http_status", "fault.http.abort.grpc_status", "fault.http.max_active_faults")
    assert config.max_active_faults is None and config.runtime == ()


def test_header_controlled_faults_and_unset_percentage(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _add_fault_filter(grpc_proxy, delay={"header_delay": {}}, abort={"header_abort": {}})
    config = _hcm_model(_snapshot(grpc_proxy, material)).http_filters[0].config
    assert config == m.FaultConfig(
        delay=m.FaultDelay(percentage=m.FractionalPercent(0, 100), fixed_delay_ms=None),  # unset: 0 %, never
        abort=m.FaultAbort(kind="header", percentage=m.FractionalPercent(0, 100)),
    )


def test_per_route_and_per_vhost_configs(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _add_fault_filter(grpc_proxy)
    _route(grpc_proxy)["typed_per_filter_config"] = {
        FAULT_NAME: _typed(FAULT, abort={"http_status": 503, "percentage": {"numerator": 100}}),
        "envoy.filters.http.rbac": _typed(RBAC_PER_ROUTE),  # no rbac: the filter is off on this route
    }
    _vhost(grpc_proxy)["typed_per_filter_config"] = {
        FAULT_NAME: _typed(FILTER_CONFIG, config=_typed(FAULT, delay={"fixed_delay": "1s",
                                                                       "percentage": {"numerator": 5}})),
        "envoy.filters.http.rbac": _typed(RBAC_PER_ROUTE, rbac={"rules": {"action": "DENY"}}),
    }
    rc = _hcm_model(_snapshot(grpc_proxy, material)).route_config
    assert rc is not None
    vhost = rc.virtual_hosts[0]
    assert vhost.routes[0].per_filter_config == (
        ("envoy.filters.http.fault", m.FaultConfig(abort=m.FaultAbort(kind="http", http_status=503,
                                                                      percentage=m.FractionalPercent(100, 100)))),
        ("envoy.filters.http.rbac", m.RbacPerRoute(rbac=None)),
    )
    assert vhost.per_filter_config == (
        ("envoy.filters.http.fault", m.FaultConfig(delay=m.FaultDelay(percentage=m.FractionalPercent(5, 100),
                                                                      fixed_delay_ms=1000))),
        ("envoy.filters.http.rbac", m.RbacPerRoute(rbac=m.RbacConfig(rules=m.RbacRules(action="DENY", policies=())))),
    )


def test_filter_config_wrapper_optional_and_empty(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _route(grpc_proxy)["typed_per_filter_config"] = {
        "envoy.filters.http.cors": _typed(FILTER_CONFIG, is_optional=True,
                                          config=_typed("envoy.extensions.filters.http.cors.v3.CorsPolicy")),
        "not-in-the-chain": _typed(FAULT),  # accepted as Envoy accepts it; no filter reads it
    }
    snap = _snapshot(grpc_proxy, material)
    rc = _hcm_model(snap).route_config
    assert rc is not None
    assert rc.virtual_hosts[0].routes[0].per_filter_config == (("not-in-the-chain", m.FaultConfig()),)
    assert snap.warnings == (
        f'{ROUTE}.typed_per_filter_config["envoy.filters.http.cors"].config: optional per-route config '
        "'envoy.extensions.filters.http.cors.v3.CorsPolicy' for filter 'envoy.filters.http.cors' is not supported "
        "by pyproxy: skipped",
    )


def test_runtime_overrides_are_taken_from_the_static_layer(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    grpc_proxy["layered_runtime"]["layers"].append({"name": "faults", "static_layer": {
        "fault": {"http": {
            "abort": {"abort_percent": 0, "http_status": "429"},
            "delay": {"fixed_delay_percent": {"numerator": 5, "denominator": "MILLION"}},
            "client": {"abort": {"abort_percent": 150}},
            "max_active_faults": -1,  # not an unsigned integer: as if unset (Envoy's getInteger)
            "junk": True,
        }},
        "my": {"key": 12},
        "other": {"key": 1},
    }})
    _add_fault_filter(grpc_proxy, abort={"http_status": 503}, delay_duration_runtime="my.key")
    config = _hcm_model(_snapshot(grpc_proxy, material)).http_filters[0].config
    assert isinstance(config, m.FaultConfig)
    assert config.runtime == (
        ("fault.http.abort.abort_percent", 0),
        ("fault.http.abort.http_status", 429),
        ("fault.http.client.abort.abort_percent", 150),
        ("fault.http.delay.fixed_delay_percent", m.FractionalPercent(5, 1_000_000)),
        ("my.key", 12),
    )


def test_xds_route_configuration_reads_the_bootstrap_runtime(material: MaterialStore) -> None:
    data = {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": "c"},
        "typed_per_filter_config": {FAULT_NAME: _typed(FAULT, abort={"grpc_status": 14})}}]}]}
    proto = parse_message(data, MESSAGES[xr.ROUTE]())
    _, model = xr.translate_resource(xr.ROUTE, proto, material=material,
                                     runtime={"fault.http.abort.grpc_status": 8, "unrelated": 1})
    assert isinstance(model, m.RouteConfiguration)
    config = dict(model.virtual_hosts[0].routes[0].per_filter_config)[FAULT_NAME]
    assert isinstance(config, m.FaultConfig) and config.runtime == (("fault.http.abort.grpc_status", 8),)


def test_filter_config_with_an_empty_config_changes_nothing(material: MaterialStore) -> None:
    """Envoy: an empty ``config`` Any (only expressible in binary xDS) marks the filter enabled on the route; pyproxy
    cannot disable filters, so there is nothing to record."""
    data = {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}
    proto: Any = parse_message(data, MESSAGES[xr.ROUTE]())
    wrapper = route_components_pb2.FilterConfig()
    wrapper.config.SetInParent()
    proto.virtual_hosts[0].routes[0].typed_per_filter_config["enabled-here"].Pack(wrapper)
    _, model = xr.translate_resource(xr.ROUTE, proto, material=material)
    assert isinstance(model, m.RouteConfiguration)
    assert model.virtual_hosts[0].routes[0].per_filter_config == ()


@pytest.mark.parametrize(("value", "expected"), [
    (5, 5), (5.0, 5), ("7", 7), (" +7 ", 7), ("-1", None), (-1, None), (2.5, None), (True, None), ("x", None),
    ({"numerator": 3}, m.FractionalPercent(3, 100)),
    ({"numerator": 3.0, "denominator": 2}, m.FractionalPercent(3, 1_000_000)),
    ({"numerator": 3, "denominator": "TEN_THOUSAND"}, m.FractionalPercent(3, 10_000)),
    ({"numerator": 3, "denominator": "BILLION"}, None), ({"numerator": -3}, None), ({"numerator": 1, "x": 2}, None),
    ([1], None),
])
def test_runtime_entry_reads_values_as_envoys_runtime(value: object, expected: object) -> None:
    assert runtime_entry(value) == expected


def test_simple_atoi() -> None:
    assert [simple_atoi(s, 255) for s in ("12", "\t12\n", "+0", "255", "256", "", "1 2", "\uff11", "0x1")] == [
        12, 12, 0, 255, None, None, None, None, None]


# ------------------------------------------------------------------------------------------- refusals


REFUSALS: list[tuple[str, Any, list[tuple[str, str]]]] = [
    (
        "response_rate_limit",
        lambda d: _add_fault_filter(d, response_rate_limit={"fixed_limit": {"limit_kbps": 1}}),
        [(f"{HCM}.http_filters[0].typed_config.response_rate_limit",
          "response rate limiting is not supported by pyproxy's fault filter (delay and abort are)")],
    ),
    (
        "filter_metadata",
        lambda d: _add_fault_filter(d, filter_metadata={"a": 1}),
        [(f"{HCM}.http_filters[0].typed_config.filter_metadata",
          "filter_metadata is not supported: pyproxy has no dynamic metadata")],
    ),
    (
        "http_status below 200 (protoc-gen-validate)",
        lambda d: _add_fault_filter(d, abort={"http_status": 100}),
        [(f"{HCM}.http_filters[0].typed_config.abort.http_status", "must be at least 200")],
    ),
    (
        "http_status 600 (protoc-gen-validate)",
        lambda d: _add_fault_filter(d, abort={"http_status": 600}),
        [(f"{HCM}.http_filters[0].typed_config.abort.http_status", "must be less than 600")],
    ),
    (
        "abort without an error type",
        lambda d: _add_fault_filter(d, abort={"percentage": {"numerator": 1}}),
        [(f"{HCM}.http_filters[0].typed_config.abort", "one of http_status, grpc_status, header_abort is required")],
    ),
    (
        "zero fixed delay",
        lambda d: _add_fault_filter(d, delay={"fixed_delay": "0s"}),
        [(f"{HCM}.http_filters[0].typed_config.delay.fixed_delay", "must be greater than 0s")],
    ),
    (
        "delay without a kind",
        lambda d: _add_fault_filter(d, delay={"percentage": {"numerator": 1}}),
        [(f"{HCM}.http_filters[0].typed_config.delay", "one of fixed_delay, header_delay is required")],
    ),
    (
        "undefined denominator",
        lambda d: _add_fault_filter(d, abort={"http_status": 503, "percentage": {"numerator": 1, "denominator": 7}}),
        [(f"{HCM}.http_filters[0].typed_config.abort.percentage.denominator",
          "7 is not a defined value of DenominatorType")],
    ),
    (
        "fault filter last",
        lambda d: _hcm(d)["http_filters"].append({"name": FAULT_NAME, "typed_config": _typed(FAULT)}),
        [(f"{HCM}.http_filters[0]", "envoy.filters.http.router is a terminal filter and must be the last http filter"),
         (f"{HCM}.http_filters[1]", "the last http filter must be envoy.filters.http.router")],
    ),
    (
        "per-route fault with a bad header matcher",
        lambda d: _route(d).update(typed_per_filter_config={FAULT_NAME: _typed(FAULT, headers=[
            {"name": "x", "range_match": {"start": 1, "end": 2}}])}),
        [(f"{ROUTE}.typed_per_filter_config{F}.headers[0].range_match", "range_match is not supported")],
    ),
    (
        "per-vhost fault refusal has the vhost path",
        lambda d: _vhost(d).update(typed_per_filter_config={FAULT_NAME: _typed(FILTER_CONFIG, config=_typed(
            FAULT, response_rate_limit={"header_limit": {}}))}),
        [(f"{VHOST}.typed_per_filter_config{F}.config.response_rate_limit",
          "response rate limiting is not supported by pyproxy's fault filter (delay and abort are)")],
    ),
    (
        "RBAC (not RBACPerRoute) per route",
        lambda d: _route(d).update(typed_per_filter_config={"rbac": _typed(RBAC)}),
        [(f'{ROUTE}.typed_per_filter_config["rbac"]',
          f"a per-route RBAC config is an {RBAC_PER_ROUTE} (with the RBAC in its rbac field)")],
    ),
    (
        "router per route",
        lambda d: _route(d).update(typed_per_filter_config={"r": _typed(
            "envoy.extensions.filters.http.router.v3.Router")}),
        [(f'{ROUTE}.typed_per_filter_config["r"]', "filter 'r' (envoy.extensions.filters.http.router.v3.Router) "
                                                   "takes no virtual host or route specific configuration")],
    ),
    (
        "FilterConfig without config",
        lambda d: _route(d).update(typed_per_filter_config={"x": _typed(FILTER_CONFIG, is_optional=True)}),
        [(f'{ROUTE}.typed_per_filter_config["x"].config', "is required: empty per-route configuration for filter 'x'")],
    ),
    (
        "FilterConfig disabled",
        lambda d: _route(d).update(typed_per_filter_config={"x": _typed(FILTER_CONFIG, disabled=True)}),
        [(f'{ROUTE}.typed_per_filter_config["x"].disabled',
          "disabling a filter per route is not supported by pyproxy")],
    ),
    (
        "an invalid RBACPerRoute policy",
        lambda d: _route(d).update(typed_per_filter_config={"rbac": _typed(RBAC_PER_ROUTE, rbac={"rules": {
            "policies": {"p": {"permissions": [{"requested_server_name": {"exact": "x"}}],
                               "principals": [{"any": True}]}}}})}),
        [(f'{ROUTE}.typed_per_filter_config["rbac"].rbac.rules.policies[p].permissions[0].requested_server_name',
          "permission 'requested_server_name' is not supported by pyproxy's RBAC filter")],
    ),
    (
        "weighted cluster per-filter config",
        lambda d: _route(d)["route"].update(cluster=None, weighted_clusters={"clusters": [{
            "name": "backend_grpc_service", "weight": 1,
            "typed_per_filter_config": {FAULT_NAME: _typed(FAULT)}}]}),
        [(f"{ROUTE}.route.weighted_clusters.clusters[0].typed_per_filter_config",
          "typed_per_filter_config is supported on virtual hosts and routes only")],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in REFUSALS])
def test_refused_with_path_and_reason(grpc_proxy: Bootstrap, material: MaterialStore, mutate: Any,
                                      expected: list[tuple[str, str]]) -> None:
    mutate(grpc_proxy)
    assert _problems(grpc_proxy, material) == expected
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_proxy, material=material)
    assert info.value.problems == [Problem(p, r) for p, r in expected]
