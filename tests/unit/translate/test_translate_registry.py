"""The registry: a frozen picture of services, workloads and proxyless clients built from a topology."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.registry import Registry, RegistryError, parse_node_id, sidecar_node_id
from mesh_ctl.topology import Topology, default_topology


def test_services_and_workloads_from_the_topology(registry: Registry) -> None:
    payment = registry.service("payment.default.svc.cluster.local")
    assert payment is not None
    assert (payment.name, payment.namespace, payment.port, dict(payment.selector)) == (
        "payment", "default", 8080, {"app": "payment"})
    assert [(s.name, dict(s.labels), s.weight) for s in payment.subsets] == [
        ("v1", {"version": "v1"}, 50), ("v2", {"version": "v2"}, 50), ("v3", {"version": "v3"}, 0)]
    ledger = registry.service("ledger.billing.svc.cluster.local")
    assert ledger is not None and ledger.namespace == "billing"
    client = registry.workload("client", "default")
    assert client is not None
    assert client.node_id == f"sidecar~{client.address}~client.default~default.svc.cluster.local"
    assert client.spiffe_id == "spiffe://cluster.local/ns/default/sa/client"
    assert client.calls == ("payment.default.svc.cluster.local",)
    assert (client.outbound_port, client.inbound_port, client.app_port) == (15001, None, None)
    assert client.certs is not None and client.certs.cert_chain.name == "cert-chain.pem"
    p1 = registry.workload("payment-v1", "default")
    assert p1 is not None
    assert (p1.outbound_port, p1.inbound_port, p1.app_port, p1.admin_port) == (None, 15006, 8080, 15000)
    assert (p1.canonical_service, p1.canonical_revision) == ("payment", "v1")
    assert len({w.address for w in registry.workloads}) == len(registry.workloads)


def test_endpoints_selection_and_service_accounts(registry: Registry) -> None:
    payment = registry.service("payment.default.svc.cluster.local")
    assert payment is not None
    assert [w.name for w in registry.endpoints(payment)] == ["payment-v1", "payment-v2", "payment-v3"]
    assert [w.name for w in registry.endpoints(payment, {"version": "v2"})] == ["payment-v2"]
    assert registry.endpoints(payment, {"version": "v9"}) == ()
    assert registry.service_accounts(payment) == ("spiffe://cluster.local/ns/default/sa/payment",
                                                  "spiffe://cluster.local/ns/default/sa/payment-canary")
    p2 = registry.workload("payment-v2", "default")
    client = registry.workload("client", "default")
    assert p2 is not None and client is not None
    assert [s.name for s in registry.selected_by(p2)] == ["payment"]
    assert registry.selected_by(client) == ()
    assert registry.workload_by_node_id(p2.node_id) == p2


def test_node_ids() -> None:
    node_id = sidecar_node_id("127.0.0.10", "payment-v1", "default")
    assert node_id == "sidecar~127.0.0.10~payment-v1.default~default.svc.cluster.local"
    parts = parse_node_id(node_id)
    assert parts is not None
    assert (parts.type, parts.address, parts.pod, parts.namespace, parts.dns_domain) == (
        "sidecar", "127.0.0.10", "payment-v1", "default", "default.svc.cluster.local")
    assert parse_node_id("not-istio") is None
    assert parse_node_id("a~b~c") is None


def test_the_registry_is_a_frozen_value(registry: Registry) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.services = ()  # type: ignore[misc]
    payment = registry.services[0]
    with pytest.raises(TypeError):
        payment.selector["app"] = "other"  # type: ignore[index]
    more = registry.with_proxyless("c1", "default", {"LABELS": {"app": "x"}})
    assert registry.proxyless == () and [c.node_id for c in more.proxyless] == ["c1"]
    again = more.with_proxyless("c1", "billing")
    assert [(c.node_id, c.namespace) for c in again.proxyless] == [("c1", "billing")]
    assert again.proxyless_client("c1") is not None and again.proxyless_client("c2") is None


def test_certificate_directory_layout(tmp_path: Path) -> None:
    t = default_topology()
    reg = Registry.from_topology(t, plan(t, probe=lambda _: True), tmp_path)
    w = reg.workload("payment-v2", "default")
    assert w is not None and w.certs is not None
    assert (w.certs.cert_chain, w.certs.private_key, w.certs.root_cert) == (
        tmp_path / "payment-v2" / "cert-chain.pem", tmp_path / "payment-v2" / "key.pem",
        tmp_path / "payment-v2" / "root-cert.pem")
    assert Registry.from_topology(t, plan(t, probe=lambda _: True)).workloads[0].certs is None


def test_shared_address_mode_and_a_placement_that_does_not_fit(rich_topology: Topology) -> None:
    placement = plan(rich_topology, mode="shared")
    reg = Registry.from_topology(rich_topology, placement)
    assert {w.address for w in reg.workloads} == {"127.0.0.1"}
    assert len({w.node_id for w in reg.workloads}) == len(reg.workloads)
    with pytest.raises(RegistryError, match="no address"):
        Registry.from_topology(rich_topology, plan(default_topology(), probe=lambda _: True))
