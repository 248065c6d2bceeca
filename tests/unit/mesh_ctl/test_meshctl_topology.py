"""The topology model: the built-in default, YAML loading with field paths in errors, lookups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.topology import (
    TopologyError,
    default_topology,
    load_topology,
    topology_from_dict,
    topology_to_dict,
)


def _doc() -> dict[str, Any]:
    return topology_to_dict(default_topology())


def test_default_topology_is_payment_v1_v2_and_a_client() -> None:
    t = default_topology()
    payment = t.service("payment")
    assert (payment.namespace, payment.port, payment.selector) == ("default", 8080, {"app": "payment"})
    assert [(s.name, s.labels, s.weight) for s in payment.subsets] == [
        ("v1", {"version": "v1"}, 50),
        ("v2", {"version": "v2"}, 50),
    ]
    assert [w.name for w in t.workloads] == ["payment-v1", "payment-v2", "client"]
    v1, v2, client = t.workloads
    assert v1.labels == {"app": "payment", "version": "v1"} and v1.service_account == "payment"
    assert v2.labels == {"app": "payment", "version": "v2"} and v2.service_account == "payment"
    assert client.labels == {"app": "client"} and client.service_account == "client"
    assert [(c.service, c.rps, c.concurrency) for c in client.calls] == [("payment", 50.0, 4)]


def test_lookups_follow_selectors_and_subsets() -> None:
    t = default_topology()
    payment = t.service("payment")
    assert [w.name for w in t.endpoints(payment)] == ["payment-v1", "payment-v2"]
    assert [w.name for w in t.endpoints(payment, "v2")] == ["payment-v2"]
    assert t.served_by(t.workload("payment-v1")) == payment
    assert t.served_by(t.workload("client")) is None
    assert t.called_services(t.workload("client")) == (payment,)
    assert payment.fqdn(t.domain_suffix) == "payment.default.svc.cluster.local"


def test_identity_and_istio_canonical_names() -> None:
    t = default_topology()
    v1, client = t.workload("payment-v1"), t.workload("client")
    assert t.spiffe_id(v1) == "spiffe://cluster.local/ns/default/sa/payment"
    assert t.spiffe_id(client) == "spiffe://cluster.local/ns/default/sa/client"
    assert (v1.canonical_service, v1.canonical_revision) == ("payment", "v1")
    assert (client.canonical_service, client.canonical_revision) == ("client", "latest")
    assert (t.trust_domain, t.mesh_id, t.cluster_id) == ("cluster.local", "cluster.local", "Kubernetes")


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(_doc()))
    assert load_topology(path) == default_topology()


def test_minimal_file_gets_istio_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "services:\n"
        "  - {name: pay, port: 9090}\n"
        "workloads:\n"
        "  - {name: pay-a, app: payment-server, labels: {app: pay, version: v2}}\n"
        "  - {name: load, app: payment-client, calls: [{service: pay}]}\n"
    )
    t = load_topology(path)
    assert t.service("pay").selector == {"app": "pay"}  # Kubernetes-style default selector
    assert t.workload("pay-a").service_account == "pay-a"  # defaults to the workload name
    assert t.workload("load").calls[0].rps == 50.0
    assert t.workload("pay-a").namespace == "default"


def test_with_load_overrides_only_the_load_client() -> None:
    t = default_topology().with_load(rps=120, concurrency=8)
    assert t.workload("client").calls[0].rps == 120 and t.workload("client").calls[0].concurrency == 8
    assert default_topology().with_load() == default_topology()
    with pytest.raises(TopologyError, match=r"calls\[0\]\.rps"):
        default_topology().with_load(rps=-1)


def _edit(path: str, value: object) -> dict[str, Any]:
    """The default document with the value at ``path`` (dotted, [i] for list items) replaced."""
    doc = _doc()
    node: Any = doc
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("workloads[0].colour", "blue", r"^workloads\[0\]\.colour: unknown field"),
        ("workloads[0].app", "nginx", r"^workloads\[0\]\.app: must be one of"),
        (
            "workloads[2].calls[0].service",
            "billing",
            r"^workloads\[2\]\.calls\[0\]\.service: no service 'billing'",
        ),
        ("workloads[2].calls", [], r"^workloads\[2\]\.calls: a payment-client calls exactly one service"),
        ("workloads[1].name", "payment-v1", r"^workloads: duplicate workload name 'payment-v1'"),
        ("workloads[0].name", "Payment_V1", r"^workloads\[0\]\.name: 'Payment_V1' is not a DNS label"),
        ("services[0].port", 70000, r"^services\[0\]\.port: expected an integer in \[1, 65535\]"),
        ("services[0].subsets[0].weight", -1, r"^services\[0\]\.subsets\[0\]\.weight"),
        (
            "services[0].subsets[1].labels",
            {"version": "v3"},
            r"^services\[0\]\.subsets\[1\]: no workload matches",
        ),
        ("workloads[2].calls[0].rps", 0, r"^workloads\[2\]\.calls\[0\]\.rps"),
        ("workloads", "none", r"^workloads: expected a list"),
        ("accessLogFile", "logs/access.log", r"^accessLogFile: expected an absolute path or \"\" \(off\)"),
        ("accessLogFormat", "%START_TIME% %UPSTREAM_COLOUR%",
         r"^accessLogFormat: unsupported access log command operator %UPSTREAM_COLOUR%"),
        ("accessLogFormat", "", r"^accessLogFormat: expected an Envoy format string"),
        ("workloads[1].errorRate", 1.5, r"^workloads\[1\]\.errorRate: must be a fraction from 0 to 1"),
        ("workloads[1].errorRate", "30%", r"^workloads\[1\]\.errorRate: must be a fraction from 0 to 1"),
        ("workloads[2].errorRate", 0.1, r"^workloads\[2\]\.errorRate: only a payment-server fails calls"),
    ],
)
def test_errors_name_the_field(path: str, value: object, error: str) -> None:
    with pytest.raises(TopologyError, match=error):
        topology_from_dict(_edit(path, value))


def test_weights_must_not_all_be_zero() -> None:
    doc = _edit("services[0].subsets[0].weight", 0)
    doc["services"][0]["subsets"][1]["weight"] = 0
    with pytest.raises(TopologyError, match=r"^services\[0\]\.subsets: the weights sum to 0"):
        topology_from_dict(doc)


def test_a_zero_weight_subset_may_have_no_endpoints() -> None:
    doc = _edit("services[0].subsets[1].labels", {"version": "v3"})
    doc["services"][0]["subsets"][1]["weight"] = 0
    t = topology_from_dict(doc)
    assert t.endpoints(t.service("payment"), "v2") == ()


def test_a_server_must_be_selected_by_a_service() -> None:
    doc = _doc()
    doc["workloads"].append({"name": "stray", "app": "payment-server", "labels": {"app": "other"}})
    with pytest.raises(TopologyError, match=r"^workloads\[3\]: a payment-server must be selected"):
        topology_from_dict(doc)


def test_two_services_may_not_select_one_workload() -> None:
    doc = _doc()
    doc["services"].append({"name": "pay2", "port": 9090, "selector": {"app": "payment"}})
    with pytest.raises(TopologyError, match=r"^workloads\[0\]\.labels: selected by more than one service"):
        topology_from_dict(doc)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("services: [\n")
    with pytest.raises(TopologyError, match=r"bad\.yaml"):
        load_topology(path)
    with pytest.raises(TopologyError, match=r"missing\.yaml"):
        load_topology(tmp_path / "missing.yaml")


def test_access_logs_default_to_istios_demo_profile_and_can_be_turned_off() -> None:
    assert (default_topology().access_log_file, default_topology().access_log_format) == ("/dev/stdout", None)
    off = topology_from_dict(_edit("accessLogFile", ""))
    assert off.access_log_file == ""
    custom = topology_from_dict(_edit("accessLogFormat", "%REQ(:PATH)% %GRPC_STATUS%"))
    assert custom.access_log_format == "%REQ(:PATH)% %GRPC_STATUS%"
    assert topology_from_dict(topology_to_dict(custom)) == custom


def test_a_server_may_fail_a_share_of_its_calls(tmp_path: Path) -> None:
    """``errorRate`` (the payment server's --error-rate), for demos of retries and outlier detection."""
    doc = _edit("workloads[1].errorRate", 0.3)
    t = topology_from_dict(doc)
    assert [w.error_rate for w in t.workloads] == [0.0, 0.3, 0.0]
    assert topology_from_dict(topology_to_dict(t)) == t
    assert "errorRate" not in topology_to_dict(default_topology())["workloads"][0]
