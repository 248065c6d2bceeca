"""Per-run certificates for the mTLS hop: a CA and two leaf certificates, as a mesh CA would issue them.

Each leaf carries a SPIFFE URI SAN (``spiffe://cluster.local/ns/bench/sa/<name>``, what Istio puts in workload
certificates) and the DNS SAN ``localhost`` (nginx and HAProxy verify the upstream by DNS name). ECDSA P-256
keeps handshakes cheap; with keep-alive they happen once per connection anyway.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
NAMESPACE = "bench"


def spiffe_id(service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class Leaf:
    """One workload identity's files. ``bundle`` is cert + key in one PEM (HAProxy's ``crt`` format)."""

    cert: Path
    key: Path
    bundle: Path
    spiffe_id: str


@dataclass(frozen=True, slots=True)
class CertSet:
    ca: Path
    server: Leaf  # presented by the inbound sidecar (B)
    client: Leaf  # presented by the outbound sidecar (A)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_certs(directory: Path, valid_for: datetime.timedelta = datetime.timedelta(days=1)) -> CertSet:
    """Write ``ca.pem`` and ``{server,client}.{pem,key,bundle.pem}`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "minimesh bench CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = _write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        uri = spiffe_id(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"bench {name}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            # Both usages, as in Istio workload certificates: a sidecar is client and server.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        return Leaf(
            cert=_write(directory / f"{name}.pem", cert_pem),
            key=_write(directory / f"{name}.key", key_pem, private=True),
            bundle=_write(directory / f"{name}.bundle.pem", cert_pem + key_pem, private=True),
            spiffe_id=uri,
        )

    return CertSet(ca=ca_path, server=leaf("server"), client=leaf("client"))
