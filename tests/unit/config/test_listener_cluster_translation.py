"""Listener and cluster details: filter chain matching rules, defaults, warnings for what Envoy ignores too,
and a property: any mutation of a valid bootstrap gives a Snapshot or a ConfigError, never a crash."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproxy.config import model as m
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from tests.unit.config.conftest import CLUSTER, load_fixture_dict

Bootstrap = dict[str, Any]
LISTENER = "static_resources.listeners[0]"
INSPECTOR = {"name": "envoy.filters.listener.tls_inspector"}


def _listener(d: Bootstrap) -> dict[str, Any]:
    listener: dict[str, Any] = d["static_resources"]["listeners"][0]
    return listener


def _add_chain(d: Bootstrap, match: dict[str, Any] | None, name: str = "") -> None:
    chain = copy.deepcopy(_listener(d)["filter_chains"][0])
    chain.pop("filter_chain_match", None)
    if match is not None:
        chain["filter_chain_match"] = match
    chain["name"] = name
    _listener(d)["filter_chains"].append(chain)


def _reject(d: Bootstrap, material: MaterialStore) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(d, material=material)
    return info.value.problems


def test_two_chains_with_the_same_match_are_refused(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _add_chain(grpc_proxy, None)
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{LISTENER}.filter_chains[1].filter_chain_match",
            "matches the same connections as filter_chains[0] (multiple filter chains with the same "
            "matching rules)",
        )
    ]


def test_overlapping_server_names_are_refused(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener(grpc_proxy)["listener_filters"] = [INSPECTOR]
    _listener(grpc_proxy)["filter_chains"][0]["filter_chain_match"] = {"server_names": ["a.test", "b.test"]}
    _add_chain(grpc_proxy, {"server_names": ["B.test"]})
    assert [p.path for p in _reject(grpc_proxy, material)] == [
        f"{LISTENER}.filter_chains[1].filter_chain_match"
    ]


def test_disjoint_chains_and_the_inspector(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener(grpc_proxy)["listener_filters"] = [INSPECTOR]
    _listener(grpc_proxy)["filter_chains"][0]["filter_chain_match"] = {
        "transport_protocol": "tls",
        "application_protocols": ["h2"],
        "server_names": ["a.test"],
    }
    _add_chain(grpc_proxy, {"transport_protocol": "raw_buffer", "destination_port": 8811}, name="plain")
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    listener = snap.listeners["0.0.0.0_8811"]
    assert listener.tls_inspector is True
    assert listener.filter_chains[0].match == m.FilterChainMatch("tls", ("h2",), None, ("a.test",))
    assert listener.filter_chains[1].match == m.FilterChainMatch("raw_buffer", destination_port=8811)
    assert listener.filter_chains[1].name == "plain"
    assert snap.warnings == ()


def test_tls_matching_without_inspector_warns(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener(grpc_proxy)["filter_chains"][0]["filter_chain_match"] = {"transport_protocol": "tls"}
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    assert snap.warnings == (
        f"{LISTENER}: filter chains match on TLS properties but there is no "
        f"envoy.filters.listener.tls_inspector "
        "listener filter, so those chains can never match (as in Envoy)",
    )


def test_default_filter_chain_only(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    listener = _listener(grpc_proxy)
    listener["default_filter_chain"] = listener.pop("filter_chains")[0]
    listener["default_filter_chain"]["filter_chain_match"] = {"server_names": ["ignored.test"]}
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    lst = snap.listeners["0.0.0.0_8811"]
    assert lst.filter_chains == ()
    assert lst.default_filter_chain is not None
    assert lst.default_filter_chain.match == m.FilterChainMatch()  # Envoy ignores it on the default chain


def test_listener_needs_a_chain(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener(grpc_proxy)["filter_chains"] = []
    assert _reject(grpc_proxy, material) == [
        Problem(f"{LISTENER}.filter_chains", "a listener needs at least one filter chain")
    ]


def test_listener_defaults(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    lst = parse_bootstrap_dict(grpc_proxy, material=material).listeners["0.0.0.0_8811"]
    assert lst.traffic_direction is m.TrafficDirection.UNSPECIFIED
    assert lst.per_connection_buffer_limit_bytes == 1048576
    assert lst.listener_filters_timeout == 15.0 and lst.continue_on_listener_filters_timeout is False
    assert lst.ipv4_compat is False and lst.tls_inspector is False


def test_cluster_defaults(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    cluster = grpc_proxy["static_resources"]["clusters"][0]
    for key in ("connect_timeout", "lb_policy", "type"):
        cluster.pop(key)
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "address"
    ] = "127.0.0.1"
    c = parse_bootstrap_dict(grpc_proxy, material=material).clusters["backend_grpc_service"]
    assert c.discovery_type == "STATIC" and c.lb_policy is m.LbPolicy.ROUND_ROBIN
    assert c.connect_timeout == 5.0
    assert c.circuit_breakers == c.high_priority_circuit_breakers == m.CircuitBreakers(1024, 1024, 1024, 3)
    assert c.outlier_detection is None and c.healthy_panic_threshold == 50.0
    assert (c.idle_timeout, c.max_requests_per_connection, c.tls) == (3600.0, None, None)
    assert (c.least_request_choice_count, c.active_request_bias) == (2, 1.0)


def test_upstream_bind_config_sets_the_source_address(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    cluster = grpc_proxy["static_resources"]["clusters"][0]
    assert parse_bootstrap_dict(grpc_proxy, material=material).clusters[cluster["name"]].source_address is None
    cluster["upstream_bind_config"] = {"source_address": {"address": "127.0.0.12", "port_value": 0}}
    assert parse_bootstrap_dict(grpc_proxy, material=material).clusters[cluster["name"]].source_address == \
        "127.0.0.12"


def test_least_request_settings_with_another_policy_warn(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    grpc_proxy["static_resources"]["clusters"][0]["least_request_lb_config"] = {"choice_count": 4}
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    assert snap.warnings == (
        f"{CLUSTER}.least_request_lb_config: ignored because lb_policy is ROUND_ROBIN (as in Envoy)",
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"outlier_detection": {"base_ejection_time": "60s", "max_ejection_time": "30s"}},
            [
                (
                    f"{CLUSTER}.outlier_detection.max_ejection_time",
                    "must not be smaller than base_ejection_time (60s)",
                )
            ],
        ),
        (
            {"circuit_breakers": {"thresholds": [{"priority": "HIGH"}, {"priority": "high"}]}},
            [
                (
                    f"{CLUSTER}.circuit_breakers.thresholds[1].priority",
                    "duplicate thresholds for priority HIGH",
                )
            ],
        ),
        (
            {"common_lb_config": {"healthy_panic_threshold": {"value": 150}}},
            [(f"{CLUSTER}.common_lb_config.healthy_panic_threshold.value", "must be at most 100.0")],
        ),
        (
            {
                "max_requests_per_connection": 5,
                "common_http_protocol_options": {"max_requests_per_connection": 6},
            },
            [
                (
                    f'{CLUSTER}.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]',
                    "cannot be combined with the deprecated Cluster fields http2_protocol_options / "
                    "common_http_protocol_options",
                )
            ],
        ),
        (
            {
                "health_checks": [
                    {
                        "timeout": "1s",
                        "interval": "1s",
                        "unhealthy_threshold": 3,
                        "healthy_threshold": 1,
                        "grpc_health_check": {},
                    }
                ]
            },
            [(f"{CLUSTER}.health_checks", "active health checking is not supported")],
        ),
        (
            {"upstream_bind_config": {"source_address": {"address": "127.0.0.12", "port_value": 40000}}},
            [(f"{CLUSTER}.upstream_bind_config.source_address.port_value",
              "a fixed source port is not supported (use 0: one port per connection)")],
        ),
        (
            {"upstream_bind_config": {"source_address": {"address": "client.local", "port_value": 0}}},
            [(f"{CLUSTER}.upstream_bind_config.source_address.address", "'client.local' is not an IP address")],
        ),
        (
            {"upstream_bind_config": {"source_address": {"address": "127.0.0.12", "port_value": 0}, "freebind": True}},
            [(f"{CLUSTER}.upstream_bind_config.freebind", "field not supported by pyproxy")],
        ),
        (
            {"upstream_bind_config": {}},
            [(f"{CLUSTER}.upstream_bind_config.source_address", "is required (pyproxy supports only source_address)")],
        ),
    ],
)
def test_cluster_problems(
    grpc_proxy: Bootstrap, material: MaterialStore, change: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    grpc_proxy["static_resources"]["clusters"][0].update(change)
    assert _reject(grpc_proxy, material) == [Problem(*e) for e in expected]


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2**33),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "0s", "1s", "-1s", "STATIC", "tls", "*", "/", "h2", "127.0.0.1"]),
    st.just([]),
    st.just({}),
    st.just([{}]),
)


def _paths(data: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


_BASES = [load_fixture_dict(n) for n in ("envoy_docs_grpc_proxy.yaml", "deprecated_http2_cluster.yaml")]
_BASE_PATHS = [_paths(b) for b in _BASES]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.integers(0, len(_BASES) - 1), data=st.data())
def test_any_mutation_gives_a_snapshot_or_a_config_error(
    material: MaterialStore, base: int, data: st.DataObject
) -> None:
    doc = copy.deepcopy(_BASES[base])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_BASE_PATHS[base]))
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    try:
        snap = parse_bootstrap_dict(doc, material=material)
    except ConfigError as err:
        assert err.problems and all(isinstance(p, Problem) and p.reason for p in err.problems)
    else:
        assert isinstance(snap, m.Snapshot)


def test_cluster_metadata_does_not_depend_on_map_order(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    """A Struct is a protobuf map: the same metadata may arrive in another key order (another control-plane
    process serializes it differently). The model must be the same, or the xDS update would rebuild the cluster
    and drain its connections for nothing."""
    cluster = grpc_proxy["static_resources"]["clusters"][0]
    keys = ["services", "default_original_port", "subset", "zeta", "alpha"]
    models = []
    for order in (keys, list(reversed(keys))):
        cluster["metadata"] = {"filter_metadata": {"istio": {k: f"value-{k}" for k in order}}}
        models.append(parse_bootstrap_dict(grpc_proxy, material=material).clusters[cluster["name"]])
    assert models[0] == models[1]
    assert [k for k, _ in models[0].metadata] == sorted(f"istio.{k}" for k in keys)
