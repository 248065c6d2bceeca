"""Istio's plug-in ``cacerts``: an intermediate signs, the chain goes up to the operator's root, bad files fail."""

from __future__ import annotations

import asyncio
import logging
import ssl
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification

from mesh_ctl.ca.authority import (
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    sign_workload_cert,
)
from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.files import cert_pem, key_pem
from mesh_ctl.ca.material import CaConfigError, load_plugin
from mesh_ctl.ca.options import CaOptions
from mesh_ctl.ca.roots import PluginRoots
from mesh_ctl.ca.rotation import RotationError
from mesh_ctl.ca.service import CertificateService
from mesh_ctl.ca.tokens import TokenAuthority
from tests.unit.ca.conftest import CLIENT, NOW, PAYMENT, T0, TD, csr_pem, ec_key, handshake, load_chain, tls_context


def write_cacerts(directory: Path, ca: CertificateAuthority, chain: list[x509.Certificate],
                  roots: list[x509.Certificate], *, key_mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_bytes(cert_pem(ca.cert))
    (directory / "ca-key.pem").write_bytes(key_pem(ca.key))
    (directory / "ca-key.pem").chmod(key_mode)
    (directory / "cert-chain.pem").write_bytes(cert_pem(*chain))
    (directory / "root-cert.pem").write_bytes(cert_pem(*roots))
    return directory


@pytest.fixture(scope="module")
def pki() -> tuple[CertificateAuthority, CertificateAuthority, CertificateAuthority]:
    """An operator's root, a "cluster" intermediate under it, and the CA intermediate under that."""
    root = create_root_ca("corp.example", now=NOW)
    cluster = create_intermediate_ca(root, TD, common_name="cluster CA", path_length=1, now=NOW)
    signing = create_intermediate_ca(cluster, TD, common_name="istiod CA", now=NOW)
    return root, cluster, signing


def test_intermediate_signs_and_the_chain_reaches_the_operators_root(
        pki: tuple[CertificateAuthority, ...], tokens: TokenAuthority, tmp_path: Path) -> None:
    root, cluster, signing = pki
    # Istio's Makefile layout: cert-chain.pem = ca-cert + the intermediates + root
    d = write_cacerts(tmp_path / "cacerts", signing, [signing.cert, cluster.cert, root.cert], [root.cert])
    material = load_plugin(d, now=NOW)
    assert material.signing.ca.cert == signing.cert
    assert material.signing.intermediates == (cluster.cert,) and material.signing.root == root.cert
    service = CertificateService(PluginRoots(material), tokens, TD, clock=lambda: T0)
    key = ec_key()
    pems = service.create_certificate(csr_pem(PAYMENT, key), 3600, tokens.mint("default", "payment", now=T0))
    chain = load_chain(pems)
    assert chain[1:] == [signing.cert, cluster.cert, root.cert]  # leaf, intermediates..., root
    leaf = chain[0]
    assert leaf.issuer == signing.cert.subject
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=1)
    verified = verification.PolicyBuilder().store(verification.Store([root.cert])).time(NOW).build_client_verifier(
    ).verify(leaf, chain[1:-1])
    assert list(verified.chain) == chain  # path: leaf -> istiod CA -> cluster CA -> root
    # the bundle is the operator's root only: an unrelated root does not validate the leaf
    with pytest.raises(verification.VerificationError):
        verification.PolicyBuilder().store(verification.Store([create_root_ca(TD, now=NOW).cert])).time(
            NOW).build_client_verifier().verify(leaf, chain[1:-1])


def test_plugin_chain_in_a_real_tls_handshake(pki: tuple[CertificateAuthority, ...], tokens: TokenAuthority,
                                              tmp_path: Path) -> None:
    """OpenSSL builds the path from what the sidecars send (leaf + intermediates) to the bundle's root."""
    root, cluster, signing = pki
    d = write_cacerts(tmp_path / "cacerts", signing, [signing.cert, cluster.cert], [root.cert])
    service = CertificateService(PluginRoots(load_plugin(d)), tokens, TD)
    bundle = [cert_pem(root.cert).decode()]
    keys = {name: ec_key() for name in ("payment", "client")}
    chains = {name: service.create_certificate(csr_pem(f"spiffe://{TD}/ns/default/sa/{name}", keys[name]), 600,
                                               tokens.mint("default", name)) for name in keys}
    server = tls_context(True, keys["payment"], chains["payment"][:-1], bundle, tmp_path, "s")
    client = tls_context(False, keys["client"], chains["client"][:-1], bundle, tmp_path, "c")
    server_view, client_view = handshake(server, client)
    assert server_view["subjectAltName"] == (("URI", CLIENT),)
    assert client_view["subjectAltName"] == (("URI", PAYMENT),)


def test_cert_chain_optional_when_the_root_signs(tokens: TokenAuthority, tmp_path: Path) -> None:
    root = create_root_ca(TD, now=NOW)
    d = write_cacerts(tmp_path / "c", root, [root.cert], [root.cert])
    (d / "cert-chain.pem").unlink()
    material = load_plugin(d, now=NOW)
    assert material.signing.chain == (root.cert,)
    service = CertificateService(PluginRoots(material), tokens, TD, clock=lambda: T0)
    assert load_chain(service.create_certificate(csr_pem(PAYMENT), 0, tokens.mint("default", "payment", now=T0)))[
        1:] == [root.cert]


def test_root_bundle_with_two_roots_is_the_trust_bundle(pki: tuple[CertificateAuthority, ...], tmp_path: Path) -> None:
    root, cluster, signing = pki
    other = create_root_ca("next.example", now=NOW)
    d = write_cacerts(tmp_path / "c", signing, [signing.cert, cluster.cert], [other.cert, root.cert])
    material = load_plugin(d, now=NOW)
    assert material.roots == (other.cert, root.cert) and material.signing.root == root.cert


def test_plugin_errors_name_the_file(pki: tuple[CertificateAuthority, ...], tmp_path: Path) -> None:
    root, cluster, signing = pki
    good = [signing.cert, cluster.cert, root.cert]

    def expect(d: Path, match: str) -> None:
        with pytest.raises(CaConfigError, match=match):
            load_plugin(d, now=NOW)

    expect(tmp_path / "nope", "not a directory")
    d = write_cacerts(tmp_path / "missing", signing, good, [root.cert])
    (d / "ca-key.pem").unlink()
    expect(d, "missing ca-key.pem")
    d = write_cacerts(tmp_path / "mismatch", signing, good, [root.cert])
    (d / "ca-key.pem").write_bytes(key_pem(cluster.key))
    expect(d, "ca-key.pem does not match")
    d = write_cacerts(tmp_path / "garbage", signing, good, [root.cert])
    (d / "ca-cert.pem").write_text("hello")
    expect(d, "ca-cert.pem: no certificate|ca-cert.pem: not PEM")
    d = write_cacerts(tmp_path / "badkey", signing, good, [root.cert])
    (d / "ca-key.pem").write_text("hello")
    expect(d, "ca-key.pem: not an unencrypted PEM private key")
    leaf_key = ec_key()  # a workload certificate handed over as ca-cert
    leaf = sign_workload_cert(signing, leaf_key.public_key(), PAYMENT, now=NOW)
    d = write_cacerts(tmp_path / "notca", CertificateAuthority(leaf_key, leaf), good, [root.cert])
    expect(d, "not a CA certificate")
    d = write_cacerts(tmp_path / "gap", signing, [signing.cert], [root.cert])  # cluster CA missing
    expect(d, "does not chain to any certificate of .*root-cert.pem.*stuck at 'CN=istiod CA")
    d = write_cacerts(tmp_path / "otherroot", signing, good, [create_root_ca(TD, now=NOW).cert])
    expect(d, "does not chain")
    expired = create_intermediate_ca(cluster, TD, ttl=timedelta(hours=1), now=NOW - timedelta(days=1))
    d = write_cacerts(tmp_path / "expired", expired, [expired.cert, cluster.cert], [root.cert])
    expect(d, "expired at")
    future = create_intermediate_ca(cluster, TD, now=NOW + timedelta(days=1))
    d = write_cacerts(tmp_path / "future", future, [future.cert, cluster.cert], [root.cert])
    expect(d, "not valid before")


def test_readable_key_warns_and_rotation_is_refused(pki: tuple[CertificateAuthority, ...], tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    root, cluster, signing = pki
    d = write_cacerts(tmp_path / "c", signing, [signing.cert, cluster.cert], [root.cert], key_mode=0o644)
    with caplog.at_level(logging.WARNING, logger="mesh_ctl.ca"):
        material = load_plugin(d, now=NOW)
    assert any("should be 0600" in r.getMessage() for r in caplog.records)
    with pytest.raises(RotationError, match="plug-in certificates"):
        PluginRoots(material).rotate(T0, 10)


def test_control_plane_ca_uses_cacerts_and_keeps_the_token_key_0600(
        pki: tuple[CertificateAuthority, ...], tmp_path: Path) -> None:
    root, cluster, signing = pki
    cacerts = write_cacerts(tmp_path / "run" / "cacerts", signing, [signing.cert, cluster.cert], [root.cert])
    options = CaOptions().resolve(tmp_path / "run", tmp_path / "state")
    assert options.cacerts == cacerts  # <run dir>/cacerts is picked up, like istiod's /etc/cacerts
    ca = ControlPlaneCA.open(options, TD)
    assert ca.roots.mode == "plugin"
    assert ca.trust_bundle() == [cert_pem(root.cert).decode()]
    assert stat.S_IMODE((tmp_path / "run" / "certs" / "ca" / "token-key.pem").stat().st_mode) == 0o600
    status = ca.status()
    assert status["mode"] == "plugin" and [r["subject"] for r in status["chain"]] == [
        "CN=istiod CA,O=cluster.local", "CN=cluster CA,O=cluster.local", "O=corp.example"]
    with pytest.raises(RotationError):
        asyncio.run(ca.rotate())  # the control plane is asyncio (grpc.aio); pytest runs trio
    token = ca.mint_token("default", "payment")["token"]
    pems = ca.service.create_certificate(csr_pem(PAYMENT), 60, token)
    assert load_chain(pems)[-1] == root.cert
    with pytest.raises(ssl.SSLError):  # sanity: the helper refuses a server nobody trusts
        other = create_root_ca(TD)
        tls_ctx = tls_context(False, ec_key(), pems[:-1], [cert_pem(other.cert).decode()], tmp_path, "x")
        handshake(tls_context(True, ec_key(), pems[:-1], [cert_pem(root.cert).decode()], tmp_path, "y"), tls_ctx)
