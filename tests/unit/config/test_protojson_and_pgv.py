"""The two generic layers under the translator: JSON-like data -> proto with every problem's path
(:mod:`pyproxy.config.protojson`) and Envoy's protoc-gen-validate rules (:mod:`pyproxy.config.pgv`)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import json_format

from pyproxy.config.errors import ConfigError, Problem, Problems
from pyproxy.config.pgv import validate_message
from pyproxy.config.protojson import _parse_error_problem, parse_message, resolve_type

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def _problems(data: dict[str, Any], message: Any) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_message(data, message)
    return info.value.problems


def test_enum_names_are_case_insensitive_like_envoy() -> None:
    cluster = parse_message(
        {"name": "c", "type": "strict_dns", "lbPolicy": "Least_Request"}, cluster_pb2.Cluster()
    )
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST


def test_input_data_is_not_modified() -> None:
    data = {"name": "c", "type": "strict_dns"}
    parse_message(data, cluster_pb2.Cluster())
    assert data == {"name": "c", "type": "strict_dns"}


def test_field_given_twice_in_both_spellings() -> None:
    assert _problems({"connect_timeout": "1s", "connectTimeout": "2s"}, cluster_pb2.Cluster()) == [
        Problem("connectTimeout", "set twice (also as 'connect_timeout')")
    ]


def test_every_shape_problem_in_one_pass() -> None:
    data = {
        "name": ["not", "a", "string"],
        "per_connection_buffer_limit_bytes": -1,
        "load_assignment": {"endpoints": {"not": "a list"}},
        "metadata": "not a mapping",
        "dns_refresh_rate": "10",
        "circuit_breakers": {"thresholds": [{"max_requests": 1.5}]},
    }
    assert _problems(data, cluster_pb2.Cluster()) == [
        Problem("name", "expected a string, got a list (quote it in YAML)"),
        Problem("per_connection_buffer_limit_bytes", "-1 is out of range [0, 4294967295]"),
        Problem("load_assignment.endpoints", "expected a list, got a mapping"),
        Problem("metadata", "expected a mapping (Metadata), got the string 'not a mapping'"),
        Problem("dns_refresh_rate", "expected a duration like \"1.5s\", got the string '10'"),
        Problem("circuit_breakers.thresholds[0].max_requests", "expected an integer, got the number 1.5"),
    ]


def test_any_without_type() -> None:
    data = {
        "static_resources": {
            "listeners": [{"filter_chains": [{"filters": [{"name": "x", "typed_config": {}}]}]}]
        }
    }
    assert _problems(data, bootstrap_pb2.Bootstrap()) == [
        Problem("static_resources.listeners[0].filter_chains[0].filters[0].typed_config", 'missing "@type"')
    ]


def test_unsupported_extensions_still_parse_so_typos_in_them_are_found() -> None:
    assert resolve_type("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault") is not None
    data = {
        "static_resources": {
            "listeners": [
                {
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "x",
                                    "typed_config": {
                                        "@type": TCP_PROXY,
                                        "stat_prefx": "t",
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    }
    (problem,) = _problems(data, bootstrap_pb2.Bootstrap())
    assert problem.path == "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx"
    assert problem.reason.endswith("(did you mean 'stat_prefix'?)")


def test_type_urls_outside_envoy_are_not_imported() -> None:
    assert resolve_type("type.googleapis.com/os.system") is None
    assert resolve_type("type.googleapis.com/envoy.no.such.v3.Thing") is None


def test_map_values_are_checked_with_their_key_in_the_path() -> None:
    data = {"name": "c", "typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/no.Such"}}}
    assert _problems(data, cluster_pb2.Cluster()) == [
        Problem('typed_extension_protocol_options["k"].@type', "unknown type 'no.Such'")
    ]


def _pgv(message: Any) -> list[Problem]:
    problems = Problems()
    validate_message(message, "", problems)
    return list(problems)


def test_pgv_required_fields_oneofs_and_bounds() -> None:
    route = route_components_pb2.Route()
    assert _pgv(route) == [
        Problem(
            "", "one of route, redirect, direct_response, filter_action, non_forwarding_action is required"
        ),
        Problem("match", "is required"),
    ]
    assert _pgv(route_components_pb2.WeightedCluster()) == [Problem("clusters", "must not be empty")]


def test_pgv_repeated_items_and_wrappers() -> None:
    cluster = cluster_pb2.Cluster(name="c")
    cluster.connect_timeout.seconds = 0
    cluster.least_request_lb_config.choice_count.value = 1
    assert _pgv(cluster) == [
        Problem("connect_timeout", "must be greater than 0s"),
        Problem("least_request_lb_config.choice_count", "must be at least 2"),
    ]


def test_pgv_header_names() -> None:
    # HeaderMatcher.name uses the non-strict HTTP_HEADER_NAME rule: no NUL, CR or LF.
    assert _pgv(route_components_pb2.HeaderMatcher(name="x-ok", present_match=True)) == []
    matcher = route_components_pb2.HeaderMatcher(name="bad\nheader", present_match=True)
    assert _pgv(matcher) == [Problem("name", "'bad\\nheader' is not a valid HTTP header name")]
    assert _pgv(route_components_pb2.HeaderMatcher(present_match=True)) == [
        Problem("name", "must not be empty")
    ]


def test_parse_dict_errors_keep_their_path() -> None:
    # Passes the shape check (a well-formed duration) but protobuf itself refuses it.
    assert _problems({"connect_timeout": "999999999999999s"}, cluster_pb2.Cluster()) == [
        Problem(
            "connect_timeout",
            "Couldn't parse duration: 999999999999999s : Duration is not valid: Seconds 999999999999999 "
            "must be in range [-315576000000, 315576000000]",
        )
    ]


def test_parse_dict_error_without_a_path_uses_the_field_chain() -> None:
    err = json_format.ParseError(
        "Failed to parse load_assignment field: Failed to parse endpoints field: bad value."
    )
    assert _parse_error_problem(err, "Cluster") == ("load_assignment.endpoints", "bad value")
