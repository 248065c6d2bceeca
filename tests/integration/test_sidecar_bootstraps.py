"""The sidecar pair's bootstraps are ordinary Envoy v3 configuration: they parse strictly into
``envoy.config.bootstrap.v3.Bootstrap`` (unknown fields rejected, ``typed_config`` resolved by type URL) and
``pyproxy --mode validate`` accepts them; a placeholder left without a value is an error, never an empty
string."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401 - registers the @type
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - registers the @type
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from tests.support.certs import TestCA
from tests.support.mesh import BOOTSTRAPS, CLIENT_SPIFFE_ID, SERVER_SPIFFE_ID, TRUST_DOMAIN, render
from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.timeout(60)

VALUES: dict[str, object] = {
    "HOST": "127.0.0.1", "ADMIN_PORT": 15000, "LISTEN_PORT": 15001, "SERVER_SIDECAR_PORT": 15006,
    "UNREACHABLE_PORT": 15999, "APP_PORT": 50051, "SERVER_SPIFFE_ID": SERVER_SPIFFE_ID,
    "TRUST_DOMAIN_PREFIX": TRUST_DOMAIN, "IDLE_TIMEOUT": "3600s",
}


@pytest.mark.parametrize("template", ["client_sidecar.yaml", "server_sidecar.yaml"])
def test_bootstrap_is_an_envoy_bootstrap(template: str, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "certs")
    ca.issue("payment", SERVER_SPIFFE_ID)
    ca.issue("payment-client", CLIENT_SPIFFE_ID)
    rendered = render(BOOTSTRAPS / template, {**VALUES, "CERTS": ca.directory}, tmp_path)
    bootstrap = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(yaml.safe_load(rendered.read_text()), bootstrap)
    (listener,) = bootstrap.static_resources.listeners
    assert listener.traffic_direction == (1 if template.startswith("server") else 2)  # INBOUND / OUTBOUND
    checked = subprocess.run([sys.executable, "-m", "pyproxy", "--mode", "validate", "-c", str(rendered)],
                             capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_placeholder_without_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="CERTS"):
        render(BOOTSTRAPS / "client_sidecar.yaml", VALUES, tmp_path)
