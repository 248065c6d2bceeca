"""The admin's /certs (Envoy's shape, plus root fingerprints and SDS names) for the agent's secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from envoy.config.core.v3 import base_pb2

from pyproxy.admin import dumps
from pyproxy.admin.server import AdminServer
from pyproxy.agent import pki
from pyproxy.config import model as m
from pyproxy.xds.state import XdsState
from tests.unit.agent import sds
from tests.unit.agent.signer import Signer

SPIFFE = "spiffe://cluster.local/ns/default/sa/payment"


def test_certs_shows_serial_identity_expiry_and_roots(tmp_path: Path) -> None:
    signer = Signer(intermediate=True)
    key = pki.new_key("ecdsa")
    now = datetime.now(UTC)
    issued = pki.validate_chain(signer.sign(pki.make_csr(key, SPIFFE).decode(), 3 * 86400 + 600), key, SPIFFE, now)
    chain, root = tmp_path / "chain.pem", tmp_path / "root.pem"
    chain.write_bytes(pki.certs_pem(issued.chain))
    new_root = Signer().root.cert
    root.write_bytes(pki.certs_pem([issued.root, new_root]))  # a bundle during a root rotation
    state = XdsState(sds.static(), base_pb2.Node(id="n"), local_only=frozenset({"default"}))
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster(), sds.mtls_cluster("another")))
    state.handle(sds.response(sds.LISTENER, "l1", "2", sds.inbound_listener()))
    snap = state.install_local_secrets([m.TlsSecret("default", str(chain), str(tmp_path / "key.pem")),
                                        m.ValidationSecret("ROOTCA", str(root))], lambda s: None)
    runtime = cast(Any, SimpleNamespace(snapshot=snap))

    out = dumps.certs(runtime)
    [entry] = out["certificates"]  # two clusters and a listener share the files: listed once
    leaf = entry["cert_chain"][0]
    assert leaf == {
        "path": str(chain),
        "serial_number": issued.serial,
        "subject_alt_names": [{"uri": SPIFFE}],
        "days_until_expiration": "3",
        "valid_from": issued.leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expiration_time": issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert entry["cert_chain"][1]["serial_number"] == pki.serial_hex(signer.issuer.cert)
    assert [c["serial_number"] for c in entry["ca_cert"]] == [pki.serial_hex(issued.root), pki.serial_hex(new_root)]
    assert entry["root_fingerprints_sha256"] == [issued.root.fingerprint(hashes.SHA256()).hex(),
                                                 new_root.fingerprint(hashes.SHA256()).hex()]
    assert entry["secret_names"] == ["ROOTCA", "default"]

    # Served by the admin as JSON.
    admin = AdminServer(runtime, 0.0, lambda: None)
    status, ctype, body = admin.dispatch("GET", "/certs")
    assert (status, ctype) == (200, "application/json") and json.loads(body) == out
    assert "/certs" in admin.dispatch("GET", "/help")[2].decode()


def test_certs_is_empty_without_tls_and_survives_missing_files(tmp_path: Path) -> None:
    runtime = cast(Any, SimpleNamespace(snapshot=sds.static()))
    assert dumps.certs(runtime) == {"certificates": []}
    state = XdsState(sds.static(), base_pb2.Node(id="n"))
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()))
    snap = state.install_local_secrets([m.TlsSecret("default", str(tmp_path / "gone.pem"), "k"),
                                        m.ValidationSecret("ROOTCA", str(tmp_path / "gone-root.pem"))],
                                       lambda s: None)
    [entry] = dumps.certs(cast(Any, SimpleNamespace(snapshot=snap)))["certificates"]
    assert entry["cert_chain"] == [] and entry["ca_cert"] == [] and entry["root_fingerprints_sha256"] == []
