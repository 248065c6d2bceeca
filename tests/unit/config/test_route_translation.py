"""Route tables: Envoy's defaults, precomputed matchers, the domain index, header mutations."""

from __future__ import annotations

from typing import Any

import pytest

from pyproxy.config import model as m
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from tests.unit.config.conftest import ROUTE

Bootstrap = dict[str, Any]


def _route_config(d: Bootstrap) -> dict[str, Any]:
    rc: dict[str, Any] = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]
    return rc


def _translate(d: Bootstrap, material: MaterialStore) -> m.RouteConfiguration:
    snap = parse_bootstrap_dict(d, material=material)
    rc = snap.listeners["0.0.0.0_8811"].filter_chains[0].hcm.route_config
    assert rc is not None
    return rc


def _action(rc: m.RouteConfiguration, vh: int = 0, route: int = 0) -> m.RouteAction:
    action = rc.virtual_hosts[vh].routes[route].action
    assert isinstance(action, m.RouteAction)
    return action


def test_route_defaults(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    route = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]
    route["route"]["retry_policy"] = {"retry_on": "5xx"}
    route["route"]["request_mirror_policies"] = [{"cluster": "backend_grpc_service"}]
    action = _action(_translate(grpc_proxy, material))
    assert action.timeout == 15.0
    assert action.idle_timeout is None and action.max_stream_duration is None
    assert (action.max_grpc_timeout, action.grpc_timeout_offset) == (None, 0.0)
    assert action.retry_policy == m.RetryPolicy(
        retry_on=frozenset({"5xx"}),
        num_retries=1,
        base_interval=0.025,
        max_interval=0.25,
        host_selection_retry_max_attempts=1,
    )
    assert action.mirrors == (m.MirrorPolicy("backend_grpc_service", 1.0),)
    assert action.cluster_not_found_response_code == 503


@pytest.mark.parametrize(("timeout", "expected"), [("0s", None), ("2.5s", 2.5)])
def test_route_timeout(
    grpc_proxy: Bootstrap, material: MaterialStore, timeout: str, expected: float | None
) -> None:
    _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = timeout
    assert _action(_translate(grpc_proxy, material)).timeout == expected


def test_back_off_cap_defaults_to_ten_times_base(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    route = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]["route"]
    route["retry_policy"] = {"retry_back_off": {"base_interval": "0.1s"}}
    policy = _action(_translate(grpc_proxy, material)).retry_policy
    assert policy is not None and (policy.base_interval, policy.max_interval) == (0.1, 1.0)


def test_mirror_fraction_denominators(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    route = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]["route"]
    route["request_mirror_policies"] = [
        {"cluster": "backend_grpc_service", "runtime_fraction": {"default_value": {"numerator": 25}}},
        {
            "cluster": "backend_grpc_service",
            "runtime_fraction": {"default_value": {"numerator": 5, "denominator": "TEN_THOUSAND"}},
        },
        {
            "cluster": "backend_grpc_service",
            "runtime_fraction": {"default_value": {"numerator": 1, "denominator": "MILLION"}},
        },
    ]
    assert [p.fraction for p in _action(_translate(grpc_proxy, material)).mirrors] == [0.25, 0.0005, 0.000001]


def test_case_insensitive_matches_are_stored_lower_case(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    routes = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"]
    routes.insert(
        0,
        {
            "match": {"path": "/Pkg.Svc/Get", "case_sensitive": False},
            "route": {"cluster": "backend_grpc_service"},
        },
    )
    routes.insert(
        0,
        {
            "match": {
                "prefix": "/Pkg.Svc/",
                "headers": [{"name": "X-Flavor", "string_match": {"exact": "Mint", "ignore_case": True}}],
            },
            "route": {"cluster": "backend_grpc_service"},
        },
    )
    rc = _translate(grpc_proxy, material)
    with_header, by_path = rc.virtual_hosts[0].routes[:2]
    assert with_header.match.prefix == "/Pkg.Svc/"  # case-sensitive prefix kept as is
    (hm,) = with_header.match.headers
    assert hm.name == "x-flavor" and hm.string_match == m.StringMatcher("exact", "mint", ignore_case=True)
    assert hm.string_match.matches("MINT")
    assert by_path.match.path == "/pkg.svc/get" and by_path.match.case_sensitive is False


def test_regexes_are_compiled_once_and_match_whole_values(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    routes = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"]
    routes.insert(
        0,
        {
            "match": {
                "safe_regex": {"google_re2": {}, "regex": "/pkg\\.Svc/(Get|List)"},
                "headers": [
                    {"name": "x-user", "safe_regex_match": {"regex": "u[0-9]+"}},
                    {"name": "x-env", "string_match": {"safe_regex": {"regex": "prod|stg"}}},
                ],
            },
            "route": {"cluster": "backend_grpc_service"},
        },
    )
    route = _translate(grpc_proxy, material).virtual_hosts[0].routes[0]
    assert route.match.safe_regex is not None
    assert route.match.safe_regex.fullmatch("/pkg.Svc/List")
    assert route.match.safe_regex.fullmatch("/pkg.Svc/Lister") is None
    user, env = route.match.headers
    assert user.string_match is not None and user.string_match.compiled is not None
    assert user.string_match.matches("u42") and not user.string_match.matches("xu42")
    assert (
        env.string_match is not None
        and env.string_match.matches("stg")
        and not env.string_match.matches("prodx")
    )


@pytest.mark.parametrize(
    ("regex", "reason"),
    [
        ("(a)\\1", "backreferences are not supported by RE2"),
        ("(?P<x>a)(?P=x)", "backreferences are not supported by RE2"),
        ("a(?<=a)", "lookaround assertions are not supported by RE2"),
        ("(?>a+)", "atomic groups are not supported by RE2"),
        ("a{2,3}+", "possessive quantifiers are not supported by RE2"),
        ("a*+", "possessive quantifiers are not supported by RE2"),
    ],
)
def test_python_only_regex_syntax_is_refused(
    grpc_proxy: Bootstrap, material: MaterialStore, regex: str, reason: str
) -> None:
    match = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]["match"]
    del match["prefix"]
    match["safe_regex"] = {"regex": regex}
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_proxy, material=material)
    assert info.value.problems == [Problem(f"{ROUTE}.match.safe_regex.regex", f"{regex!r}: {reason}")]


@pytest.mark.parametrize("regex", ["[(?=]x", "\\(?=", "a{2}", "[a-z]+?", "x{2,}", "[]+]+"])
def test_re2_compatible_regexes_that_look_suspicious_are_accepted(
    grpc_proxy: Bootstrap, material: MaterialStore, regex: str
) -> None:
    match = _route_config(grpc_proxy)["virtual_hosts"][0]["routes"][0]["match"]
    del match["prefix"]
    match["safe_regex"] = {"regex": regex}
    route = _translate(grpc_proxy, material).virtual_hosts[0].routes[0]
    assert route.match.safe_regex is not None and route.match.safe_regex.pattern == regex


def test_domain_index_follows_envoys_search_order(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    rc = _route_config(grpc_proxy)
    cluster = {"route": {"cluster": "backend_grpc_service"}, "match": {"prefix": "/"}}
    rc["virtual_hosts"] = [
        {"name": "exact", "domains": ["API.example.com", "api.example.com:8443"], "routes": [cluster]},
        {"name": "short-suffix", "domains": ["*.com"], "routes": [cluster]},
        {"name": "long-suffix", "domains": ["*.example.com"], "routes": [cluster]},
        {"name": "prefix", "domains": ["api.*", "api.example.*"], "routes": [cluster]},
        {"name": "default", "domains": ["*"], "routes": [cluster]},
    ]
    index = _translate(grpc_proxy, material).domain_index
    assert {k: v.name for k, v in index.exact.items()} == {
        "api.example.com": "exact",
        "api.example.com:8443": "exact",
    }
    assert [(k, v.name) for k, v in index.suffixes] == [
        (".example.com", "long-suffix"),
        (".com", "short-suffix"),
    ]
    assert [(k, v.name) for k, v in index.prefixes] == [("api.example.", "prefix"), ("api.", "prefix")]
    assert index.wildcard is not None and index.wildcard.name == "default"


def test_header_mutations(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    rc = _route_config(grpc_proxy)
    rc["response_headers_to_add"] = [
        {"header": {"key": "X-Mesh", "value": "100%% minimesh"}, "append": False}
    ]
    rc["virtual_hosts"][0]["request_headers_to_add"] = [
        {"header": {"key": "x-a", "value": "1"}},
        {
            "header": {"key": "x-b", "raw_value": "Mg=="},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "keep_empty_value": True,
        },
    ]
    rc["virtual_hosts"][0]["routes"][0]["response_headers_to_remove"] = ["X-Internal"]
    translated = _translate(grpc_proxy, material)
    assert translated.response_headers.add == (m.HeaderValueOption("x-mesh", "100% minimesh", append=False),)
    vh = translated.virtual_hosts[0]
    # Envoy's default append_action is APPEND_IF_EXISTS_OR_ADD.
    assert vh.request_headers.add == (
        m.HeaderValueOption("x-a", "1", append=True),
        m.HeaderValueOption("x-b", "2", append=False, keep_empty_value=True),
    )
    assert vh.routes[0].response_headers.remove == {"x-internal"}


def test_validate_clusters_false_allows_unknown_clusters(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    rc = _route_config(grpc_proxy)
    rc["validate_clusters"] = False
    rc["virtual_hosts"][0]["routes"][0]["route"] = {
        "cluster": "later",
        "cluster_not_found_response_code": "NOT_FOUND",
    }
    action = _action(_translate(grpc_proxy, material))
    assert (action.cluster, action.cluster_not_found_response_code) == ("later", 404)


def test_optional_unsupported_filter_is_skipped_with_a_warning(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    hcm = grpc_proxy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.cors",
            "is_optional": True,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
    )
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    assert [f.name for f in snap.listeners["0.0.0.0_8811"].filter_chains[0].hcm.http_filters] == [
        "envoy.filters.http.router"
    ]
    assert snap.warnings == (
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]: optional "
        "http "
        "filter 'envoy.filters.http.cors' (envoy.extensions.filters.http.cors.v3.Cors) is not supported by "
        "pyproxy: "
        "skipped",
    )


def test_name_only_router_filter(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    hcm = grpc_proxy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [{"name": "envoy.filters.http.router"}]
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    (router,) = snap.listeners["0.0.0.0_8811"].filter_chains[0].hcm.http_filters
    assert router.config == m.RouterConfig()
