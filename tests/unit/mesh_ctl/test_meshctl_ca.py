"""The CA: Istio-shaped root and SPIFFE workload certificates, verified by cryptography and by OpenSSL."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh_ctl.ca import (
    CertificateAuthority,
    create_root_ca,
    issue_workload_cert,
    sign_workload_cert,
    spiffe_id,
)
from mesh_ctl.ca.files import CertFiles, load_or_create_root, write_workload_files

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPIFFE_PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
SPIFFE_CLIENT = "spiffe://cluster.local/ns/default/sa/client"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_root_ca("cluster.local", now=NOW)


def test_root_is_istio_shaped(ca: CertificateAuthority) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    assert ca.trust_domain == "cluster.local"
    assert isinstance(ca.key, rsa.RSAPrivateKey) and ca.key.key_size == 2048
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and not ku.digital_signature
    cert.verify_directly_issued_by(cert)  # self-signed


def test_workload_certificate_is_istio_shaped(ca: CertificateAuthority) -> None:
    key, cert = issue_workload_cert(ca, SPIFFE_PAYMENT, now=NOW)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert cert.subject == x509.Name([])  # the identity is the SAN alone
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # required with an empty subject
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_PAYMENT]
    assert san.value.get_values_for_type(x509.DNSName) == []
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - NOW == timedelta(hours=24)
    assert NOW - cert.not_valid_before_utc == timedelta(minutes=2)  # clock-skew grace, as Istio
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.cert)


def test_chain_verifies_for_both_tls_roles(ca: CertificateAuthority) -> None:
    _, cert = issue_workload_cert(ca, SPIFFE_CLIENT, now=NOW)
    store = verification.Store([ca.cert])
    builder = verification.PolicyBuilder().store(store).time(NOW + timedelta(hours=1))
    verified = builder.build_client_verifier().verify(cert, [])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(SPIFFE_CLIENT) in verified.subjects
    other = create_root_ca("cluster.local", now=NOW)
    with pytest.raises(verification.VerificationError):
        verification.PolicyBuilder().store(verification.Store([other.cert])).time(
            NOW
        ).build_client_verifier().verify(cert, [])


def test_signing_a_csr_uses_only_its_key(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/istio-system/sa/istiod")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert = sign_workload_cert(ca, csr, SPIFFE_PAYMENT, timedelta(hours=1), now=NOW)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        SPIFFE_PAYMENT
    ]  # not what it asked for
    assert cert.subject == x509.Name([])
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc - NOW == timedelta(hours=1)


def test_a_csr_with_a_bad_signature_is_refused(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())

    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(ValueError, match="signature"):
        sign_workload_cert(ca, tampered, SPIFFE_PAYMENT, now=NOW)


@pytest.mark.parametrize(
    ("sid", "ttl", "error"),
    [
        ("spiffe://cluster.local/payment", timedelta(hours=1), "SPIFFE ID"),
        ("https://cluster.local/ns/default/sa/payment", timedelta(hours=1), "SPIFFE ID"),
        (SPIFFE_PAYMENT, timedelta(0), "TTL"),
        (SPIFFE_PAYMENT, timedelta(days=91), "TTL"),
    ],
)
def test_rejects_bad_requests(ca: CertificateAuthority, sid: str, ttl: timedelta, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        sign_workload_cert(ca, ca.key.public_key(), sid, ttl, now=NOW)


def test_certificate_never_outlives_its_root() -> None:
    short = create_root_ca("cluster.local", ttl=timedelta(hours=2), now=NOW)
    _, cert = issue_workload_cert(short, SPIFFE_PAYMENT, timedelta(hours=24), now=NOW)
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_spiffe_id() -> None:
    assert spiffe_id("cluster.local", "default", "payment") == SPIFFE_PAYMENT
    with pytest.raises(ValueError):
        spiffe_id("cluster.local", "Default", "payment")


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0)  # the widest: modes must come from the code, not the umask
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_files_have_istio_names_and_safe_modes(tmp_path: Path) -> None:
    ca, created = load_or_create_root(tmp_path / "ca", "cluster.local")
    assert created
    assert _mode(tmp_path / "ca" / "root-key.pem") == 0o600
    assert _mode(tmp_path / "ca" / "root-cert.pem") == 0o644
    files = write_workload_files(tmp_path / "payment-v1", ca, SPIFFE_PAYMENT)
    assert files == CertFiles(
        tmp_path / "payment-v1" / "cert-chain.pem",
        tmp_path / "payment-v1" / "key.pem",
        tmp_path / "payment-v1" / "root-cert.pem",
    )
    assert _mode(files.private_key) == 0o600
    assert _mode(files.cert_chain) == 0o644 and _mode(files.root_cert) == 0o644
    assert files.root_cert.read_bytes() == (tmp_path / "ca" / "root-cert.pem").read_bytes()
    assert not list(tmp_path.rglob(".*.tmp"))


def test_root_is_reused_until_its_grace_period(tmp_path: Path) -> None:
    first, created = load_or_create_root(tmp_path, "cluster.local", now=NOW)
    assert created
    again, created = load_or_create_root(tmp_path, "cluster.local", now=NOW + timedelta(days=365))
    assert not created and again.cert == first.cert
    late, created = load_or_create_root(tmp_path, "cluster.local", now=NOW + timedelta(days=3000))
    assert created and late.cert != first.cert  # under 20% of its life left: a new root
    other, created = load_or_create_root(tmp_path, "example.org", now=NOW + timedelta(days=3000))
    assert created and other.trust_domain == "example.org"


def test_openssl_completes_mutual_tls_with_the_files(tmp_path: Path) -> None:
    """What the sidecars do: both sides present their certificate, verify the peer against the root, h2."""
    ca, _ = load_or_create_root(tmp_path / "ca", "cluster.local")
    server_files = write_workload_files(tmp_path / "payment-v1", ca, SPIFFE_PAYMENT)
    client_files = write_workload_files(tmp_path / "client", ca, SPIFFE_CLIENT)
    server_ctx = _context(ssl.PROTOCOL_TLS_SERVER, server_files)
    client_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, client_files)
    server, client = _handshake(server_ctx, client_ctx)
    assert client.selected_alpn_protocol() == "h2" == server.selected_alpn_protocol()
    assert client.getpeercert()["subjectAltName"] == (("URI", SPIFFE_PAYMENT),)  # type: ignore[index]
    assert server.getpeercert()["subjectAltName"] == (("URI", SPIFFE_CLIENT),)  # type: ignore[index]


def test_openssl_rejects_a_client_from_another_ca(tmp_path: Path) -> None:
    ca, _ = load_or_create_root(tmp_path / "ca", "cluster.local")
    rogue, _ = load_or_create_root(tmp_path / "rogue-ca", "cluster.local")
    server_ctx = _context(ssl.PROTOCOL_TLS_SERVER, write_workload_files(tmp_path / "s", ca, SPIFFE_PAYMENT))
    client_files = write_workload_files(tmp_path / "c", rogue, SPIFFE_CLIENT)
    client_ctx = _context(
        ssl.PROTOCOL_TLS_CLIENT,
        CertFiles(client_files.cert_chain, client_files.private_key, tmp_path / "ca" / "root-cert.pem"),
    )
    with pytest.raises(ssl.SSLError, match="certificate"):
        _handshake(server_ctx, client_ctx)


def _context(protocol: int, files: CertFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.load_cert_chain(files.cert_chain, files.private_key)
    ctx.load_verify_locations(files.root_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # SPIFFE identities are URI SANs; the sidecar matches them itself
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two in-memory endpoints (no sockets, no threads); also exchange one
    byte each way, because TLS 1.3 reports a rejected client certificate only after the handshake."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), done
    client.write(b"x")
    s_in.write(c_out.read())
    assert server.read(1) == b"x"
    server.write(b"y")
    c_in.write(s_out.read())
    assert client.read(1) == b"y"
    return server, client
