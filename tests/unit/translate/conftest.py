"""Fixtures for the translation tests: meshes placed on loopback with real certificate files (the
sidecar's TLS settings name them, and pyproxy's translator loads them), and builders for Istio resources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.ca.files import CertFiles, load_or_create_root, write_workload_files
from mesh_ctl.registry import Registry
from mesh_ctl.topology import Topology, default_topology, topology_from_dict
from pyproxy.config.material import MaterialStore

FQDN = "payment.default.svc.cluster.local"
AUDIT = "audit.default.svc.cluster.local"
V1, V2, ALL = f"outbound|8080|v1|{FQDN}", f"outbound|8080|v2|{FQDN}", f"outbound|8080||{FQDN}"

# payment v1/v2 (+ a canary v3 with weight 0 in the topology), an audit service (a mirror target), and a
# client calling payment; a ledger service in another namespace.
RICH = {
    "services": [
        {"name": "payment", "port": 8080, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}, "weight": 50},
            {"name": "v2", "labels": {"version": "v2"}, "weight": 50},
            {"name": "v3", "labels": {"version": "v3"}, "weight": 0},
        ]},
        {"name": "audit", "port": 9090},
        {"name": "ledger", "namespace": "billing", "port": 7070},
    ],
    "workloads": [
        {"name": "payment-v1", "app": "payment-server", "serviceAccount": "payment",
         "labels": {"app": "payment", "version": "v1"}},
        {"name": "payment-v2", "app": "payment-server", "serviceAccount": "payment",
         "labels": {"app": "payment", "version": "v2"}},
        {"name": "payment-v3", "app": "payment-server", "serviceAccount": "payment-canary",
         "labels": {"app": "payment", "version": "v3"}},
        {"name": "audit-1", "app": "payment-server", "serviceAccount": "audit", "labels": {"app": "audit"}},
        {"name": "ledger-1", "namespace": "billing", "app": "payment-server", "serviceAccount": "ledger",
         "labels": {"app": "ledger"}},
        {"name": "client", "app": "payment-client", "serviceAccount": "client",
         "labels": {"app": "client", "version": "v1"}, "calls": [{"service": "payment"}]},
    ],
}


def _certs(t: Topology, directory: Path) -> dict[str, CertFiles]:
    ca, _ = load_or_create_root(directory / "ca", t.trust_domain)
    return {w.name: write_workload_files(directory / w.name, ca, t.spiffe_id(w)) for w in t.workloads}


@pytest.fixture(scope="session")
def rich_topology() -> Topology:
    return topology_from_dict(RICH)


@pytest.fixture(scope="session")
def mesh_certs(tmp_path_factory: pytest.TempPathFactory, rich_topology: Topology) -> dict[str, CertFiles]:
    """Certificates for every workload of both topologies (same names), written once per session."""
    return _certs(rich_topology, tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def registry(rich_topology: Topology, mesh_certs: dict[str, CertFiles]) -> Registry:
    return Registry.from_topology(rich_topology, plan(rich_topology, probe=lambda _: True), mesh_certs)


@pytest.fixture(scope="session")
def default_registry(mesh_certs: dict[str, CertFiles]) -> Registry:
    t = default_topology()
    return Registry.from_topology(t, plan(t, probe=lambda _: True), mesh_certs)


@pytest.fixture
def material(tmp_path: Path) -> MaterialStore:
    directory = tmp_path / "material"
    directory.mkdir(mode=0o700)
    return MaterialStore(str(directory))


# --------------------------------------------------------------------------------------------- builders


def virtual_service(http: list[dict[str, Any]], hosts: list[str] | None = None, name: str = "payment",
                    namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": hosts or ["payment"], "http": http, **spec}}


def destination_rule(spec: dict[str, Any], name: str = "payment", namespace: str = "default",
                     host: str = "payment") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"host": host, **spec}}


def subsets_dr(*names: str, **spec: Any) -> dict[str, Any]:
    return destination_rule({"subsets": [{"name": n, "labels": {"version": n}} for n in names], **spec})


def dest(subset: str = "", weight: int | None = None, host: str = "payment", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host, **({"subset": subset} if subset else {})}, **extra}
    if weight is not None:
        d["weight"] = weight
    return d


@pytest.fixture
def client_id(registry: Registry) -> str:
    w = registry.workload("client", "default")
    assert w is not None
    return w.node_id


Builder = Callable[..., dict[str, Any]]
