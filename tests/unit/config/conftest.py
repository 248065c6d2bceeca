"""Fixtures for the bootstrap translator tests: a test PKI and bootstrap files rendered into tmp_path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyproxy.config.material import MaterialStore
from tests.unit.config.pki import TestCA

BOOTSTRAPS = Path(__file__).parent / "bootstraps"

# Field paths into the envoy_docs_grpc_proxy.yaml fixture (used by the invalid-input table).
HCM = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
VHOST = f"{HCM}.route_config.virtual_hosts[0]"
ROUTE = f"{VHOST}.routes[0]"
CLUSTER = "static_resources.clusters[0]"
ENDPOINT = f"{CLUSTER}.load_assignment.endpoints[0].lb_endpoints[0].endpoint"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@pytest.fixture
def pki(tmp_path: Path) -> TestCA:
    """A root CA plus the leaf certificates the fixtures refer to, in tmp_path/certs."""
    ca = TestCA(tmp_path / "certs")
    ca.issue("client", uris=("spiffe://cluster.local/ns/default/sa/client",))
    ca.issue("payment", uris=("spiffe://cluster.local/ns/default/sa/payment",))
    ca.issue("interop-server", dns=("*.test.google.fr",))
    return ca


@pytest.fixture
def render(tmp_path: Path, pki: TestCA) -> Callable[[str], Path]:
    """Write bootstraps/<name> into tmp_path with ${CERTS} pointing at the test PKI; return its path."""

    def _render(name: str) -> Path:
        text = (BOOTSTRAPS / name).read_text().replace("${CERTS}", str(pki.directory))
        out = tmp_path / name
        out.write_text(text)
        return out

    return _render


@pytest.fixture
def material(tmp_path: Path) -> MaterialStore:
    directory = tmp_path / "material"
    directory.mkdir(mode=0o700)
    return MaterialStore(str(directory))


def load_fixture_dict(name: str) -> dict[str, Any]:
    data = yaml.safe_load((BOOTSTRAPS / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def grpc_proxy() -> dict[str, Any]:
    """A fresh copy of the Envoy-docs gRPC proxy bootstrap as a dict, to mutate."""
    return copy.deepcopy(load_fixture_dict("envoy_docs_grpc_proxy.yaml"))
