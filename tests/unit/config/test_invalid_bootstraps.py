"""Unsupported or invalid input is rejected with the exact field path and reason, never ignored.

Each case mutates the Envoy-docs gRPC proxy bootstrap (valid as is) and expects exactly the listed
problems: no fewer (nothing silently accepted) and no more (no noise around the real problem).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from pyproxy.config.translate.cluster_options import NEEDS_HTTP2
from tests.unit.config.conftest import CLUSTER, ENDPOINT, HCM, HPO_KEY, ROUTE, VHOST

Bootstrap = dict[str, Any]


def _hcm(d: Bootstrap) -> dict[str, Any]:
    config: dict[str, Any] = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    return config


def _route(d: Bootstrap) -> dict[str, Any]:
    route: dict[str, Any] = _hcm(d)["route_config"]["virtual_hosts"][0]["routes"][0]
    return route


def _cluster(d: Bootstrap) -> dict[str, Any]:
    cluster: dict[str, Any] = d["static_resources"]["clusters"][0]
    return cluster


def _endpoint(d: Bootstrap) -> dict[str, Any]:
    ep: dict[str, Any] = _cluster(d)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return ep


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def _set_regex(d: Bootstrap, regex: str) -> None:
    match = _route(d)["match"]
    del match["prefix"]
    match["safe_regex"] = {"regex": regex}


def _replace_h2(d: Bootstrap, config: dict[str, Any]) -> None:
    _cluster(d)["typed_extension_protocol_options"][HPO_KEY] = _typed(HPO_KEY, **config)


def _second_cluster(d: Bootstrap) -> dict[str, Any]:
    clone = copy.deepcopy(_cluster(d))
    d["static_resources"]["clusters"].append(clone)
    return clone


def _second_listener(d: Bootstrap, name: str) -> dict[str, Any]:
    clone: dict[str, Any] = copy.deepcopy(d["static_resources"]["listeners"][0])
    clone["name"] = name
    d["static_resources"]["listeners"].append(clone)
    return clone


FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = "envoy.extensions.filters.http.cors.v3.CorsPolicy"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
PORT = f"{ENDPOINT}.address.socket_address.port_value"

CASES: list[tuple[str, Callable[[Bootstrap], object], list[tuple[str, str]]]] = [
    (
        "typo in a field name",
        lambda d: _cluster(d).update(conect_timeout="1s"),
        [
            (
                f"{CLUSTER}.conect_timeout",
                "unknown field: envoy.config.cluster.v3.Cluster has no field 'conect_timeout' "
                "(did you mean 'connect_timeout'?)",
            )
        ],
    ),
    (
        "port is not a number",
        lambda d: _endpoint(d)["address"]["socket_address"].update(port_value="http"),
        [(PORT, "expected an integer, got the string 'http'")],
    ),
    (
        "port out of range (protoc-gen-validate rule)",
        lambda d: _endpoint(d)["address"]["socket_address"].update(port_value=70000),
        [(PORT, "must be at most 65535")],
    ),
    (
        "unsupported load balancer",
        lambda d: _cluster(d).update(lb_policy="MAGLEV"),
        [(f"{CLUSTER}.lb_policy", "MAGLEV is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)")],
    ),
    (
        "EDS cluster",
        lambda d: _cluster(d).update(type="EDS"),
        [
            (
                f"{CLUSTER}.type",
                "EDS needs dynamic_resources.ads_config; use STATIC, STRICT_DNS or LOGICAL_DNS with a "
                "load_assignment",
            )
        ],
    ),
    (
        "cluster without HTTP/2",
        lambda d: _cluster(d).pop("typed_extension_protocol_options"),
        [(CLUSTER, f"cluster 'backend_grpc_service': {NEEDS_HTTP2}")],
    ),
    (
        "explicit HTTP/1 upstream",
        lambda d: _replace_h2(d, {"explicit_http_config": {"http_protocol_options": {}}}),
        [
            (
                f'{CLUSTER}.typed_extension_protocol_options["{HPO_KEY}"].explicit_http_config.http_protocol_options',
                "HTTP/1 upstreams are not supported: pyproxy speaks HTTP/2 upstream (use "
                "http2_protocol_options)",
            )
        ],
    ),
    (
        "auto_config without TLS",
        lambda d: _replace_h2(d, {"auto_config": {"http2_protocol_options": {}}}),
        [
            (
                f'{CLUSTER}.typed_extension_protocol_options["{HPO_KEY}"].auto_config',
                "auto_config picks the protocol by ALPN and needs a TLS transport_socket",
            )
        ],
    ),
    (
        "both deprecated and typed protocol options",
        lambda d: _cluster(d).update(http2_protocol_options={}),
        [
            (
                f'{CLUSTER}.typed_extension_protocol_options["{HPO_KEY}"]',
                "cannot be combined with the deprecated Cluster fields http2_protocol_options / "
                "common_http_protocol_options",
            )
        ],
    ),
    (
        "routes from RDS",
        lambda d: (
            _hcm(d).pop("route_config"),
            _hcm(d).update(rds={"route_config_name": "r", "config_source": {"ads": {}}}),
        ),
        [
            (
                f"{HCM}.rds",
                "rds needs dynamic_resources.ads_config (routes come over ADS); or use an inline route_config",
            )
        ],
    ),
    (
        "HCM without routes",
        lambda d: _hcm(d).pop("route_config"),
        [(HCM, "one of rds, route_config, scoped_routes is required")],
    ),
    (
        "xDS without an ADS stream",
        lambda d: d.update(dynamic_resources={"lds_config": {"ads": {}}}),
        [
            (
                "dynamic_resources.ads_config",
                "is required: pyproxy takes xDS over one ADS stream "
                "(api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: ...}}])",
            )
        ],
    ),
    (
        "unsupported http filter",
        lambda d: _hcm(d)["http_filters"].insert(
            0, {"name": "envoy.filters.http.cors", "typed_config": _typed(CORS)}
        ),
        [
            (
                f"{HCM}.http_filters[0]",
                f"http filter 'envoy.filters.http.cors' ({CORS}) is not supported by pyproxy "
                "(supported: envoy.filters.http.fault, envoy.filters.http.rbac, envoy.filters.http.router)",
            )
        ],
    ),
    (
        "unknown typed_config type",
        lambda d: _hcm(d)["http_filters"].insert(0, {"name": "x", "typed_config": _typed("acme.v1.Filter")}),
        [(f"{HCM}.http_filters[0].typed_config.@type", "unknown type 'acme.v1.Filter'")],
    ),
    (
        "Envoy v2 type",
        lambda d: _hcm(d).update(
            {
                "@type": "type.googleapis.com/envoy.config.filter.network."
                "http_connection_manager.v2.HttpConnectionManager"
            }
        ),
        [
            (
                f"{HCM}.@type",
                "'envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager' is an "
                "Envoy v2 API type; Envoy dropped v2: use the v3 type",
            )
        ],
    ),
    (
        "route to an unknown cluster",
        lambda d: _route(d)["route"].update(cluster="nope"),
        [(f"{ROUTE}.route.cluster", "unknown cluster 'nope'")],
    ),
    (
        "mirror to an unknown cluster",
        lambda d: _route(d)["route"].update(request_mirror_policies=[{"cluster": "shadow"}]),
        [(f"{ROUTE}.route.request_mirror_policies[0].cluster", "unknown cluster 'shadow'")],
    ),
    (
        "RE2 has no lookaround",
        lambda d: _set_regex(d, "/pkg[.]Svc/(?!Admin).*"),
        [
            (
                f"{ROUTE}.match.safe_regex.regex",
                "'/pkg[.]Svc/(?!Admin).*': lookaround assertions are not supported by RE2",
            )
        ],
    ),
    (
        "regex Python cannot compile",
        lambda d: _set_regex(d, r"/\p{Greek}+"),
        [
            (
                f"{ROUTE}.match.safe_regex.regex",
                "'/\\\\p{Greek}+' cannot be compiled by Python's re: bad escape \\p at position 1",
            )
        ],
    ),
    (
        "HTTP/1 downstream codec",
        lambda d: _hcm(d).update(codec_type="HTTP1"),
        [
            (
                f"{HCM}.codec_type",
                "HTTP1 is not supported (supported: AUTO, HTTP2): pyproxy serves HTTP/2 (gRPC) only",
            )
        ],
    ),
    (
        "websocket upgrades",
        lambda d: _hcm(d).update(upgrade_configs=[{"upgrade_type": "websocket"}]),
        [(f"{HCM}.upgrade_configs", "upgrades (websocket, CONNECT) are not supported: pyproxy proxies gRPC")],
    ),
    (
        "weights that add up to 0",
        lambda d: _route(d).update(
            route={"weighted_clusters": {"clusters": [{"name": "backend_grpc_service", "weight": 0}]}}
        ),
        [(f"{ROUTE}.route.weighted_clusters.clusters", "the sum of the weights must be greater than 0")],
    ),
    (
        "total_weight that does not match",
        lambda d: _route(d).update(
            route={
                "weighted_clusters": {
                    "total_weight": 100,
                    "clusters": [{"name": "backend_grpc_service", "weight": 60}],
                }
            }
        ),
        [(f"{ROUTE}.route.weighted_clusters.total_weight", "is 100 but the weights add up to 60")],
    ),
    (
        "unknown retry condition",
        lambda d: _route(d)["route"].update(retry_policy={"retry_on": "unavailable,sometimes"}),
        [
            (
                f"{ROUTE}.route.retry_policy.retry_on",
                "unknown retry condition 'sometimes' (known: 5xx, cancelled, connect-failure, "
                "deadline-exceeded, "
                "envoy-ratelimited, gateway-error, http3-post-connect-failure, internal, refused-stream, "
                "reset, "
                "reset-before-request, resource-exhausted, retriable-4xx, retriable-headers, "
                "retriable-status-codes, "
                "unavailable)",
            )
        ],
    ),
    (
        "back-off cap below its base",
        lambda d: _route(d)["route"].update(
            retry_policy={
                "retry_on": "5xx",
                "retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"},
            }
        ),
        [
            (
                f"{ROUTE}.route.retry_policy.retry_back_off.max_interval",
                "must be greater than or equal to base_interval",
            )
        ],
    ),
    (
        "unsupported retry host predicate",
        lambda d: _route(d)["route"].update(
            retry_policy={"retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}
        ),
        [
            (
                f"{ROUTE}.route.retry_policy.retry_host_predicate[0].name",
                "retry host predicate 'envoy.retry_host_predicates.omit_canary_hosts' is not supported "
                "(supported: envoy.retry_host_predicates.previous_hosts)",
            )
        ],
    ),
    (
        "header value with a formatter command",
        lambda d: _route(d).update(
            request_headers_to_add=[{"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}}]
        ),
        [
            (
                f"{ROUTE}.request_headers_to_add[0].header.value",
                "formatter command %DOWNSTREAM_REMOTE_ADDRESS% is not supported by pyproxy (only literal "
                "values; "
                "write %% for a literal %)",
            )
        ],
    ),
    (
        "pseudo-header mutation",
        lambda d: _route(d).update(request_headers_to_add=[{"header": {"key": ":path", "value": "/x"}}]),
        [
            (
                f"{ROUTE}.request_headers_to_add[0].header.key",
                "':path': pseudo-headers (':...') and host cannot be modified by header mutations",
            )
        ],
    ),
    (
        "unsupported append action",
        lambda d: _route(d).update(
            response_headers_to_add=[
                {"header": {"key": "x-a", "value": "1"}, "append_action": "ADD_IF_ABSENT"}
            ]
        ),
        [
            (
                f"{ROUTE}.response_headers_to_add[0].append_action",
                "ADD_IF_ABSENT is not supported (supported: APPEND_IF_EXISTS_OR_ADD, "
                "OVERWRITE_IF_EXISTS_OR_ADD)",
            )
        ],
    ),
    (
        "unknown enum value",
        lambda d: _cluster(d).update(dns_lookup_family="V9_ONLY"),
        [
            (
                f"{CLUSTER}.dns_lookup_family",
                "unknown value 'V9_ONLY' (expected one of AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED, ALL)",
            )
        ],
    ),
    (
        "a number where a string belongs",
        lambda d: _cluster(d).update(alt_stat_name=8080),
        [(f"{CLUSTER}.alt_stat_name", "expected a string, got the number 8080 (quote it in YAML)")],
    ),
    (
        "a duration without unit",
        lambda d: _cluster(d).update(connect_timeout=5),
        [(f"{CLUSTER}.connect_timeout", 'expected a duration like "1.5s", got the number 5')],
    ),
    (
        "a negative connect timeout",
        lambda d: _cluster(d).update(connect_timeout="-1s"),
        [(f"{CLUSTER}.connect_timeout", "must be greater than 0s")],
    ),
    (
        "a string where a boolean belongs",
        lambda d: _cluster(d).update(respect_dns_ttl="sure"),
        [(f"{CLUSTER}.respect_dns_ttl", "expected true or false, got the string 'sure'")],
    ),
    (
        "non-empty stats_config",
        lambda d: d.update(stats_config={"use_all_default_tags": False}),
        [("stats_config", "stats_config is not supported (only an empty stats_config is accepted)")],
    ),
    (
        "stats sinks",
        lambda d: d.update(stats_sinks=[{"name": "envoy.stat_sinks.statsd"}]),
        [("stats_sinks", "stats sinks are not supported (scrape /stats/prometheus instead)")],
    ),
    (
        "runtime from RTDS",
        lambda d: d.update(layered_runtime={"layers": [{"name": "rtds", "rtds_layer": {"name": "rt"}}]}),
        [("layered_runtime.layers[0].rtds_layer", "runtime discovery (RTDS) is not supported (use static_layer)")],
    ),
    (
        "two path specifiers",
        lambda d: _route(d)["match"].update(path="/x"),
        [
            (
                f"{ROUTE}.match.path",
                "only one of prefix, path, safe_regex, connect_matcher, path_separated_prefix, "
                "path_match_policy may be set (already set: prefix)",
            )
        ],
    ),
    (
        "no http filters",
        lambda d: _hcm(d).update(http_filters=[]),
        [(f"{HCM}.http_filters", "must not be empty: end the list with envoy.filters.http.router")],
    ),
    (
        "router not last",
        lambda d: _hcm(d)["http_filters"].append(
            {"name": "cors", "is_optional": True, "typed_config": _typed(CORS)}
        ),
        [
            (
                f"{HCM}.http_filters[0]",
                "envoy.filters.http.router is a terminal filter and must be the last http filter",
            )
        ],
    ),
    (
        "two catch-all virtual hosts",
        lambda d: _hcm(d)["route_config"]["virtual_hosts"].append(
            {"name": "other", "domains": ["*"], "routes": []}
        ),
        [
            (
                f"{HCM}.route_config.virtual_hosts[1].domains[0]",
                "only one virtual host may use the wildcard domain '*' (route 'local_route')",
            )
        ],
    ),
    (
        "a domain in two virtual hosts",
        lambda d: (
            _hcm(d)["route_config"]["virtual_hosts"][0].update(domains=["a.example", "*"]),
            _hcm(d)["route_config"]["virtual_hosts"].append({"name": "b", "domains": ["A.example"]}),
        ),
        [
            (
                f"{HCM}.route_config.virtual_hosts[1].domains[0]",
                "duplicate domain 'A.example': domains must be unique in route 'local_route'",
            )
        ],
    ),
    (
        "listener on a host name",
        lambda d: d["static_resources"]["listeners"][0]["address"]["socket_address"].update(
            address="localhost"
        ),
        [
            (
                "static_resources.listeners[0].address.socket_address.address",
                "'localhost' is not an IP address (listener addresses must be IP literals)",
            )
        ],
    ),
    (
        "STATIC cluster with a host name",
        lambda d: _cluster(d).update(type="STATIC"),
        [
            (
                f"{ENDPOINT}.address.socket_address.address",
                "'kv-backend-service' is not an IP address (STATIC cluster endpoint addresses must be IP "
                "literals)",
            )
        ],
    ),
    (
        "LOGICAL_DNS cluster with two endpoints",
        lambda d: (
            _cluster(d).update(type="LOGICAL_DNS"),
            _cluster(d)["load_assignment"]["endpoints"].append(
                copy.deepcopy(_cluster(d)["load_assignment"]["endpoints"][0])
            ),
        ),
        [
            (
                f"{CLUSTER}.load_assignment.endpoints",
                "a LOGICAL_DNS cluster needs exactly one endpoint (has 2)",
            )
        ],
    ),
    (
        "endpoint weight 0",
        lambda d: _cluster(d)["load_assignment"]["endpoints"][0]["lb_endpoints"][0].update(
            load_balancing_weight=0
        ),
        [
            (
                f"{CLUSTER}.load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight",
                "must be at least 1",
            )
        ],
    ),
    (
        "duplicate cluster name",
        _second_cluster,
        [
            (
                "static_resources.clusters[1].name",
                f"duplicate cluster name 'backend_grpc_service' (also {CLUSTER})",
            )
        ],
    ),
    (
        "two listeners on one address",
        lambda d: _second_listener(d, "again"),
        [
            (
                "static_resources.listeners[1].address",
                "0.0.0.0:8811 is already used by static_resources.listeners[0]",
            )
        ],
    ),
    (
        "a listener on the admin address",
        lambda d: d["admin"]["address"]["socket_address"].update(port_value=8811),
        [("static_resources.listeners[0].address", "0.0.0.0:8811 is already used by admin.address")],
    ),
    (
        "unsupported network filter",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"].insert(
            0,
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": _typed(
                    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix="t", cluster="c"
                ),
            },
        ),
        [
            (
                "static_resources.listeners[0].filter_chains[0].filters[0]",
                "network filter 'envoy.filters.network.tcp_proxy' "
                "(envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy) "
                "is not supported by pyproxy (supported: envoy.filters.network.http_connection_manager)",
            ),
            (
                "static_resources.listeners[0].filter_chains[0].filters[1]",
                "envoy.filters.network.http_connection_manager is a terminal filter: a filter chain holds "
                "exactly one "
                "network filter",
            ),
        ],
    ),
    (
        "original-destination listener",
        lambda d: d["static_resources"]["listeners"][0].update(use_original_dst=True),
        [
            (
                "static_resources.listeners[0].use_original_dst",
                "original-destination listeners (iptables REDIRECT) are not supported yet",
            )
        ],
    ),
    (
        "per-route filter config of a type pyproxy does not have",
        lambda d: _route(d).update(typed_per_filter_config={"envoy.filters.http.cors": _typed(CORS_POLICY)}),
        [
            (
                f'{ROUTE}.typed_per_filter_config["envoy.filters.http.cors"]',
                f"per-route config '{CORS_POLICY}' for filter 'envoy.filters.http.cors' is not supported by "
                f"pyproxy (supported: {FAULT}, envoy.extensions.filters.http.rbac.v3.RBACPerRoute; wrap it in "
                "envoy.config.route.v3.FilterConfig with is_optional: true to skip it)",
            )
        ],
    ),
    (
        "per-filter config on a route configuration",
        lambda d: _hcm(d)["route_config"].update(typed_per_filter_config={"envoy.filters.http.fault": _typed(FAULT)}),
        [
            (
                f"{HCM}.route_config.typed_per_filter_config",
                "typed_per_filter_config is supported on virtual hosts and routes only",
            )
        ],
    ),
    (
        "a field pyproxy does not implement",
        lambda d: _hcm(d).update(normalize_path=True),
        [(f"{HCM}.normalize_path", "field not supported by pyproxy")],
    ),
    (
        "a nested field pyproxy does not implement",
        lambda d: _route(d)["route"].update(hash_policy=[{"header": {"header_name": "x-user"}}]),
        [(f"{ROUTE}.route.hash_policy", "hash_policy is not supported (no ring-hash/maglev load balancer)")],
    ),
    (
        "vhost-level header mutation of host",
        lambda d: _hcm(d)["route_config"]["virtual_hosts"][0].update(request_headers_to_remove=["Host"]),
        [
            (
                f"{VHOST}.request_headers_to_remove[0]",
                "'host': pseudo-headers (':...') and host cannot be modified by header mutations",
            )
        ],
    ),
    (
        "router filter option pyproxy lacks",
        lambda d: _hcm(d)["http_filters"][0].update(
            typed_config=_typed(ROUTER, respect_expected_rq_timeout=True)
        ),
        [
            (
                f"{HCM}.http_filters[0].typed_config.respect_expected_rq_timeout",
                "field not supported by pyproxy",
            )
        ],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_rejected_with_path_and_reason(
    grpc_proxy: Bootstrap,
    material: MaterialStore,
    mutate: Callable[[Bootstrap], object],
    expected: list[tuple[str, str]],
) -> None:
    mutate(grpc_proxy)
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_proxy, material=material)
    assert info.value.problems == [Problem(path, reason) for path, reason in expected]
    assert str(info.value) == "\n".join(f"{path}: {reason}" for path, reason in expected)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25


def test_the_unmodified_base_is_valid(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    assert list(snap.clusters) == ["backend_grpc_service"]


def test_many_problems_are_reported_in_one_pass(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _cluster(grpc_proxy).update(lb_policy="RING_HASH", connect_timeout="0s")
    _route(grpc_proxy)["route"]["cluster"] = "missing"
    _hcm(grpc_proxy).update(codec_type="HTTP1", tracing={})
    d = grpc_proxy
    d["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "not-an-ip"
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(d, material=material)
    paths = {p.path for p in info.value.problems}
    assert paths == {
        f"{CLUSTER}.connect_timeout",
        f"{CLUSTER}.lb_policy",
        f"{HCM}.tracing",
        f"{HCM}.codec_type",
        f"{ROUTE}.route.cluster",
        "static_resources.listeners[0].address.socket_address.address",
    }


def test_many_shape_problems_are_reported_before_parsing(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    _cluster(grpc_proxy).update(bogus=1, lb_policy="NOPE", connect_timeout="soon")
    _route(grpc_proxy)["match"]["prefixx"] = "/"
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_proxy, material=material)
    assert {p.path for p in info.value.problems} == {
        f"{ROUTE}.match.prefixx",
        f"{CLUSTER}.lb_policy",
        f"{CLUSTER}.connect_timeout",
        f"{CLUSTER}.bogus",
    }
