"""The admin API's /clusters (text and JSON) and the circuit-breaker / outlier stats, as plain functions of a
runtime whose hosts are put in known states (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from pyproxy.admin import dumps
from pyproxy.config.bootstrap import load_bootstrap
from pyproxy.proxy.runtime import Runtime
from pyproxy.upstream import breakers
from pyproxy.upstream.cluster import ClusterState

H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


def _cluster(name: str, ports: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "typed_extension_protocol_options": H2,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                for p in ports]}]}, **extra}


BOOTSTRAP = {"static_resources": {"clusters": [
    _cluster("plain", [9001]),
    _cluster("guarded", [9002, 9003], circuit_breakers={"thresholds": [
        {"max_requests": 2, "max_retries": 1, "track_remaining": True},
        {"priority": "HIGH", "max_requests": 7}]},
        outlier_detection={"consecutive_5xx": 2, "interval": "10s", "base_ejection_time": "30s",
                           "max_ejection_percent": 100}),
]}}
CLOCK = (1000.0, 1_767_225_600.0)  # (trio's clock, the wall clock: 2026-01-01T00:00:00Z)


@pytest.fixture
async def runtime(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Runtime]:
    rt = Runtime(load_bootstrap(None, json.dumps(BOOTSTRAP)), seed=1)
    rt.clusters.update(rt.snapshot.clusters)
    yield rt
    for state in rt.clusters.clusters.values():
        state.drain()


def _guarded(rt: Runtime) -> ClusterState:
    state = rt.clusters.get("guarded")
    assert state is not None
    return state


async def test_json_is_envoys_shape_with_pyproxys_extensions(runtime: Runtime) -> None:
    guarded = _guarded(runtime)
    bad, good = guarded.hosts
    bad.rq_total, bad.rq_error, bad.active_requests, good.rq_total, good.rq_success = 3, 2, 1, 5, 5
    assert guarded.outlier is not None
    guarded.outlier.report(bad, 503)
    guarded.outlier.report(bad, 503)  # the second consecutive 5xx: ejected for 30 s
    guarded.stats.upstream_rq_active = 2
    clock = (trio.current_time() + 10.0, CLOCK[1])  # 10 s later: 20 s left
    [g, p] = dumps.clusters_json(runtime, clock)["cluster_statuses"]
    assert (g["name"], p["name"]) == ("guarded", "plain")
    assert "added_via_api" not in g  # from the bootstrap
    assert g["circuit_breakers"] == {"thresholds": [
        {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 2, "max_retries": 1},
        {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 7,
         "max_retries": 3}]}
    h_bad, h_good = g["host_statuses"]
    assert h_bad["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 9002}}
    # SimpleMetric in proto3 JSON: uint64 as strings, 0 and the COUNTER type left out.
    assert h_bad["stats"] == [
        {"name": "cx_connect_fail"}, {"name": "cx_total"}, {"value": "2", "name": "rq_error"}, {"name": "rq_success"},
        {"value": "3", "name": "rq_total"}, {"type": "GAUGE", "name": "cx_active"},
        {"type": "GAUGE", "value": "1", "name": "rq_active"}]
    assert h_bad["health_status"] == {"failed_outlier_check": True, "eds_health_status": "HEALTHY"}
    assert h_good["health_status"] == {"eds_health_status": "HEALTHY"}
    assert (h_bad["weight"], h_bad["locality"]) == (1, {})
    assert h_bad["outlier_detection"] == {
        "ejected": True, "times_ejected": 1, "consecutive_5xx": 0, "consecutive_gateway_failure": 0,
        "consecutive_local_origin_failure": 0, "ejection_reason": "consecutive_5xx",
        "ejected_until": "2026-01-01T00:00:20.000Z", "ejection_time_left_s": 20.0}
    assert h_good["outlier_detection"]["ejected"] is False and "ejected_until" not in h_good["outlier_detection"]
    assert g["circuit_breaker_state"]["rq"] == {"current": 2, "max": 2, "remaining": 0, "open": True}
    assert g["circuit_breaker_state"]["retries"] == {"current": 0, "max": 1, "remaining": 1, "open": False}
    assert "outlier_detection" not in p["host_statuses"][0]  # no detector on that cluster
    text = dumps.clusters_text(runtime, clock)
    assert "guarded::127.0.0.1:9002::health_flags::/failed_outlier_check\n" in text
    assert "guarded::127.0.0.1:9003::health_flags::healthy\n" in text
    assert "guarded::127.0.0.1:9002::outlier_ejection_reason::consecutive_5xx\n" in text
    assert "guarded::127.0.0.1:9002::outlier_ejected_until::2026-01-01T00:00:20.000Z\n" in text
    assert "guarded::default_priority::max_requests::2\nguarded::default_priority::max_retries::1\n" in text
    assert "guarded::high_priority::max_requests::7\n" in text
    assert "guarded::added_via_api::false\n" in text
    assert "guarded::outlier::success_rate_average::-1\n" in text
    host_lines = [line.split("::")[2] for line in text.splitlines() if line.startswith("plain::127.0.0.1:9001::")]
    assert host_lines[:8] == ["cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error", "rq_success",
                              "rq_total", "hostname"]  # Envoy: the stats sorted by name, then the rest


async def test_circuit_breaker_gauges_from_the_live_counters(runtime: Runtime) -> None:
    guarded = _guarded(runtime)
    gauges = dict(breakers.gauges(guarded))
    assert list(gauges)[:9] == ["default.cx_open", "default.cx_pool_open", "default.rq_pending_open",
                                "default.rq_open", "default.rq_retry_open", "default.remaining_cx",
                                "default.remaining_pending", "default.remaining_rq", "default.remaining_retries"]
    assert gauges["default.rq_open"] == 0 and gauges["default.remaining_rq"] == 2
    guarded.stats.upstream_rq_active = 2
    guarded.retries_active = 1
    gauges = dict(breakers.gauges(guarded))
    assert (gauges["default.rq_open"], gauges["default.remaining_rq"]) == (1, 0)
    assert (gauges["default.rq_retry_open"], gauges["default.remaining_retries"]) == (1, 0)
    assert gauges["high.rq_open"] == 0 and "high.remaining_rq" not in gauges  # HIGH: no track_remaining
    # Without track_remaining (Envoy's default) only the *_open gauges exist.
    assert [k for k, _ in breakers.gauges(runtime.clusters.clusters["plain"])] == [
        f"{p}.{g}" for p in ("default", "high")
        for g in ("cx_open", "cx_pool_open", "rq_pending_open", "rq_open", "rq_retry_open")]
    stats = dict(dumps.counters(runtime))
    assert stats["cluster.guarded.circuit_breakers.default.rq_open"] == 1
    assert stats["cluster.guarded.outlier_detection.ejections_active"] == 0
    assert "cluster.plain.outlier_detection.ejections_active" not in stats
    prometheus = dumps.prometheus(runtime)
    assert "# TYPE envoy_cluster_circuit_breakers_default_rq_open gauge" in prometheus
    assert 'envoy_cluster_circuit_breakers_default_rq_open{envoy_cluster_name="guarded"} 1' in prometheus
    assert 'envoy_cluster_circuit_breakers_default_remaining_rq{envoy_cluster_name="guarded"} 0' in prometheus
    assert "# TYPE envoy_cluster_outlier_detection_ejections_active gauge" in prometheus
    assert "# TYPE envoy_cluster_outlier_detection_ejections_enforced_total counter" in prometheus


async def test_server_info_shows_the_seed(runtime: Runtime) -> None:
    assert dumps.server_info(runtime, 1.0)["seed"] == 1


def test_rfc3339_with_milliseconds() -> None:
    ts = datetime(2026, 1, 1, 0, 0, 20, 123000, tzinfo=UTC).timestamp()
    assert dumps._rfc3339_ms(ts) == "2026-01-01T00:00:20.123Z"
