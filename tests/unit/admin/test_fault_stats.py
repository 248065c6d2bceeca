"""The fault filter's counters in /stats and /stats/prometheus, named as Envoy names them (its tag extractors:
``http.<prefix>.fault.[<downstream cluster>.]<name>``), kept across snapshots by connection manager."""

from __future__ import annotations

from pyproxy.admin import dumps
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.proxy.runtime import Runtime
from tests.unit.config.conftest import load_fixture_dict


def test_fault_counters_in_stats_and_prometheus() -> None:
    rt = Runtime(parse_bootstrap_dict(load_fixture_dict("envoy_docs_grpc_proxy.yaml")))
    counters = rt.stats.fault_counters("ingress_http")
    assert rt.stats.fault_counters("ingress_http") is counters  # one set per connection manager
    counters.aborts_injected, counters.delays_injected, counters.faults_overflow = 3, 2, 1
    counters.active_faults = 1
    counters.count_downstream("client", 1)
    counters.count_downstream('od"d', 0)
    text = dumps.stats_text(rt)
    for line in ("http.ingress_http.fault.aborts_injected: 3", "http.ingress_http.fault.delays_injected: 2",
                 "http.ingress_http.fault.faults_overflow: 1", "http.ingress_http.fault.response_rl_injected: 0",
                 "http.ingress_http.fault.active_faults: 1", "http.ingress_http.fault.client.aborts_injected: 1",
                 "http.ingress_http.fault.client.delays_injected: 0"):
        assert line + "\n" in text, line
    assert {"name": "http.ingress_http.fault.aborts_injected", "value": 3} in dumps.stats_json(rt)["stats"]
    prom = dumps.prometheus(rt).splitlines()
    prefix = 'envoy_http_conn_manager_prefix="ingress_http"'
    for line in ("# TYPE envoy_http_fault_aborts_injected counter",
                 f"envoy_http_fault_aborts_injected{{{prefix}}} 3",
                 f'envoy_http_fault_aborts_injected{{{prefix},envoy_fault_downstream_cluster="client"}} 1',
                 f'envoy_http_fault_delays_injected{{{prefix},envoy_fault_downstream_cluster="od\\"d"}} 1',
                 f"envoy_http_fault_delays_injected{{{prefix}}} 2",
                 f"envoy_http_fault_faults_overflow{{{prefix}}} 1",
                 "# TYPE envoy_http_fault_active_faults gauge",
                 f"envoy_http_fault_active_faults{{{prefix}}} 1"):
        assert line in prom, line
