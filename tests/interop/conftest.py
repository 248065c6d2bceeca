"""Fixtures and markers of the interop tests: one certificate set per session."""

from __future__ import annotations

import pytest

from tests.interop.certs import CertPaths, make_certs

# Generated code: test_pb2*.py are named like test modules but hold none.
collect_ignore = ["proto"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop_control: interop case run directly client -> server, no proxy. If it fails, the interop "
        "client/server or the harness is broken, not the proxy.",
    )
    config.addinivalue_line(
        "markers",
        "interop_proxy: interop case run through the sidecar pair (INTEROP_TARGET, default pyproxy)",
    )


@pytest.fixture(scope="session")
def interop_certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """A fresh CA, sidecar A's client identity and sidecar B's server identity (SPIFFE URI SANs)."""
    return make_certs(tmp_path_factory.mktemp("interop-certs"))
