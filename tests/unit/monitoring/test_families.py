"""The control plane's families: istiod's names, types and labels, exposed as istiod does (bare counters),
parsed back by prometheus_client's parser; and what each recording method adds."""

from __future__ import annotations

import re

import pytest

from mesh_ctl.monitoring import ControlPlaneMetrics, render
from mesh_ctl.monitoring import families as families_module
from tests.support.metrics import families, value

ISTIO_FAMILIES = {  # name -> (type, label names), from istio/istio (see the families module's table)
    "pilot_xds": ("gauge", {"version"}),
    "pilot_xds_pushes": ("counter", {"type"}),
    "pilot_xds_push_time": ("histogram", {"type"}),
    "pilot_xds_config_size_bytes": ("histogram", {"type"}),
    "pilot_proxy_convergence_time": ("histogram", set()),
    "pilot_proxy_queue_time": ("histogram", set()),
    "pilot_debounce_time": ("histogram", set()),
    "pilot_push_triggers": ("counter", {"type"}),
    "pilot_services": ("gauge", set()),
    "pilot_virt_services": ("gauge", set()),
    "pilot_xds_send_time": ("histogram", set()),
    "pilot_total_xds_rejects": ("counter", {"type"}),
    "pilot_xds_cds_reject": ("gauge", {"node", "err"}),
    "pilot_xds_eds_reject": ("gauge", {"node", "err"}),
    "pilot_xds_lds_reject": ("gauge", {"node", "err"}),
    "pilot_xds_rds_reject": ("gauge", {"node", "err"}),
    "pilot_xds_expired_nonce": ("counter", {"type"}),
    "pilot_k8s_cfg_events": ("counter", {"type", "event"}),
    "galley_validation_passed": ("counter", {"group", "version", "resource"}),
    "galley_validation_failed": ("counter", {"group", "version", "resource", "reason"}),
    "citadel_server_csr_count": ("counter", set()),
    "citadel_server_authentication_failure_count": ("counter", set()),
    "citadel_server_csr_parsing_err_count": ("counter", set()),
    "citadel_server_id_extraction_err_count": ("counter", set()),
    "citadel_server_csr_sign_err_count": ("counter", {"error"}),
    "citadel_server_success_cert_issuance_count": ("counter", set()),
    "citadel_server_root_cert_expiry_timestamp": ("gauge", set()),
    "citadel_server_root_cert_expiry_seconds": ("gauge", set()),
    "citadel_server_cert_chain_expiry_timestamp": ("gauge", set()),
    "citadel_server_cert_chain_expiry_seconds": ("gauge", set()),
    "istiod_uptime_seconds": ("gauge", set()),
    "pilot_info": ("gauge", {"version"}),
    "istio_build": ("gauge", {"component", "tag"}),
}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exercised(m: ControlPlaneMetrics) -> ControlPlaneMetrics:
    """Every labelled family with one series, so that its labels show."""
    m.proxy_connected("1.0")
    m.pushed("cds", 0.002, 0.001, 300)
    m.rejected("cds", "a.default", 3)
    m.rejected("eds", "a.default", 3)
    m.rejected("lds", "a.default", 3)
    m.rejected("rds", "a.default", 3)
    m.expired_nonce("eds")
    m.triggered("config")
    m.config_changed([("VirtualService", "created")])
    m.validation_passed_for("networking.istio.io", "v1", "virtualservices")
    m.validation_failed_for("networking.istio.io", "v1", "virtualservices", "invalid_resource")
    m.signing_failed("TTL_ERROR")
    m.watch_ca(lambda: 2e9, lambda: 1.9e9)
    return m


def test_every_istio_family_is_exposed_with_its_type_and_labels() -> None:
    m = exercised(ControlPlaneMetrics())
    fams = families(render(m.registry, m.bare_counters))
    for name, (kind, labels) in ISTIO_FAMILIES.items():
        assert name in fams, name
        assert fams[name].type == kind, (name, fams[name].type)
        seen = set().union(*(set(s.labels) - {"le"} for s in fams[name].samples))
        assert seen == labels, (name, seen)
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= set(fams)  # istiod's process_* too


def test_the_module_table_names_every_family_declared() -> None:
    table = set(re.findall(r"^((?:pilot|citadel|galley|istio)\w*)", families_module.__doc__ or "", re.M))
    table = {n for n in table if "{" not in n} | {f"pilot_xds_{t}_reject" for t in ("cds", "eds", "lds", "rds")}
    declared = {f.name for f in ControlPlaneMetrics(process=False).registry.collect()}
    assert declared == set(ISTIO_FAMILIES) == (table - {"pilot_xds_"})


def test_counters_keep_istios_bare_names_and_no_created_series() -> None:
    m = ControlPlaneMetrics()
    m.pushed("eds", 0.01, 0.001, 10)
    text = render(m.registry, m.bare_counters).decode()
    assert '# TYPE pilot_xds_pushes counter\n' in text
    assert 'pilot_xds_pushes{type="eds"} 1.0\n' in text
    assert "pilot_xds_pushes_total" not in text and "_created" not in text
    assert "# TYPE process_cpu_seconds_total counter" in text  # Go's process collector's name, kept


def test_each_control_plane_has_its_own_registry() -> None:
    a, b = ControlPlaneMetrics(process=False), ControlPlaneMetrics(process=False)
    a.pushed("lds", 0.01, 0.01, 1)
    assert value(families(render(a.registry, a.bare_counters)), "pilot_xds_pushes", type="lds") == 1
    assert value(families(render(b.registry, b.bare_counters)), "pilot_xds_pushes", type="lds") is None


def test_pushes_record_count_push_and_send_time_and_size() -> None:
    m = ControlPlaneMetrics(process=False)
    m.pushed("cds", 0.2, 0.05, 5000)
    m.pushed("cds", 2.0, 0.5, 2_000_000)
    m.send_failed("cds")
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "pilot_xds_pushes", type="cds") == 2
    assert value(f, "pilot_xds_pushes", type="cds_senderr") == 1  # Istio's send-error series of the same family
    assert value(f, "pilot_xds_push_time", "_count", type="cds") == 2
    assert value(f, "pilot_xds_push_time", "_sum", type="cds") == pytest.approx(2.2)
    assert value(f, "pilot_xds_push_time", "_bucket", type="cds", le="1.0") == 1  # Istio's buckets
    assert value(f, "pilot_xds_send_time", "_sum") == pytest.approx(0.55)
    assert value(f, "pilot_xds_config_size_bytes", "_bucket", type="cds", le="10000.0") == 1
    assert value(f, "pilot_xds_config_size_bytes", "_bucket", type="cds", le="4e+06") == 2


def test_connected_proxies_by_version_go_up_and_down() -> None:
    m = ControlPlaneMetrics(process=False)
    for v in ("0.1.0", "0.1.0", "1.60.0"):
        m.proxy_connected(v)
    m.proxy_disconnected("0.1.0")
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "pilot_xds", version="0.1.0") == 1 and value(f, "pilot_xds", version="1.60.0") == 1
    assert value(f, "pilot_xds") == 2


def test_nacks_count_by_type_and_by_node_and_go_error_code() -> None:
    m = ControlPlaneMetrics(process=False)
    m.rejected("lds", "client.default", 3)
    m.rejected("lds", "client.default", 3)
    m.rejected("sds", "client.default", 13)  # no per-type gauge for SDS in Istio: the total only
    m.rejected("cds", "payment-v1.default", 42)
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "pilot_total_xds_rejects", type="lds") == 2
    assert value(f, "pilot_total_xds_rejects", type="sds") == 1
    assert value(f, "pilot_xds_lds_reject", node="client.default", err="InvalidArgument") == 2
    assert value(f, "pilot_xds_cds_reject", node="payment-v1.default", err="Code(42)") == 1
    assert value(f, "pilot_xds_eds_reject") is None


def test_config_events_map_the_stores_actions_to_istios_events() -> None:
    m = ControlPlaneMetrics(process=False)
    m.config_changed([("VirtualService", "created"), ("VirtualService", "configured"),
                      ("DestinationRule", "deleted"), ("DestinationRule", "unchanged")])
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "pilot_k8s_cfg_events", type="VirtualService", event="add") == 1
    assert value(f, "pilot_k8s_cfg_events", type="VirtualService", event="update") == 1
    assert value(f, "pilot_k8s_cfg_events", type="DestinationRule", event="delete") == 1
    assert value(f, "pilot_k8s_cfg_events") == 3  # "unchanged" is no event


def test_timings_queue_convergence_debounce_and_triggers() -> None:
    m = ControlPlaneMetrics(process=False)
    m.queued(0.05)
    m.converged(0.3)
    m.converged(4.0)
    m.debounced(0.15)
    m.triggered("config", 3)
    m.triggered("endpoint")
    m.known_config(2, 1)
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "pilot_proxy_queue_time", "_bucket", le="0.1") == 1
    assert value(f, "pilot_proxy_convergence_time", "_count") == 2
    assert value(f, "pilot_proxy_convergence_time", "_bucket", le="0.5") == 1
    assert value(f, "pilot_proxy_convergence_time", "_bucket", le="5.0") == 2
    assert value(f, "pilot_debounce_time", "_sum") == pytest.approx(0.15)
    assert value(f, "pilot_push_triggers", type="config") == 3
    assert value(f, "pilot_push_triggers", type="endpoint") == 1
    assert value(f, "pilot_services") == 2 and value(f, "pilot_virt_services") == 1


def test_ca_counters_and_expiry_gauges_read_when_scraped() -> None:
    clock = Clock(1_000.0)
    m = ControlPlaneMetrics(process=False, clock=clock)
    expiry = {"root": 5_000.0, "chain": 3_000.0}
    m.watch_ca(lambda: expiry["root"], lambda: expiry["chain"])
    for record in (m.csr_received, m.csr_received, m.csr_issued, m.authentication_failed, m.csr_parsing_failed,
                   m.id_extraction_failed):
        record()
    m.signing_failed("TTL_ERROR")
    clock.now = 1_500.0
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "citadel_server_csr_count") == 2
    assert value(f, "citadel_server_success_cert_issuance_count") == 1
    assert value(f, "citadel_server_authentication_failure_count") == 1
    assert value(f, "citadel_server_csr_parsing_err_count") == 1
    assert value(f, "citadel_server_id_extraction_err_count") == 1
    assert value(f, "citadel_server_csr_sign_err_count", error="TTL_ERROR") == 1
    assert value(f, "citadel_server_root_cert_expiry_timestamp") == 5_000
    assert value(f, "citadel_server_root_cert_expiry_seconds") == 3_500
    assert value(f, "citadel_server_cert_chain_expiry_seconds") == 1_500
    expiry["root"] = 9_000.0  # a rotation: the next scrape shows the new root
    assert value(families(render(m.registry, m.bare_counters)), "citadel_server_root_cert_expiry_timestamp") == 9_000


def test_uptime_and_build_info() -> None:
    clock = Clock(100.0)
    m = ControlPlaneMetrics("9.9.9", process=False, clock=clock)
    clock.now = 142.5
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "istiod_uptime_seconds") == 42.5
    assert value(f, "pilot_info", version="9.9.9") == 1
    assert value(f, "istio_build", component="pilot", tag="9.9.9") == 1


def test_label_values_are_escaped() -> None:
    m = ControlPlaneMetrics(process=False)
    m.rejected("cds", 'we"ird\\node\nname', 3)
    text = render(m.registry, m.bare_counters).decode()
    assert r'node="we\"ird\\node\nname"' in text
    assert value(families(text), "pilot_xds_cds_reject", node='we"ird\\node\nname') == 1
