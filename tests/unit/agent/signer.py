"""A small in-memory CA for the agent's tests: signs CSRs into ``cert_chain`` answers, good or deliberately bad.

It stands in for the CA on the other side of the protocol boundary (``CreateCertificate``); the code under
test (key, CSR, validation, storage, schedule) is the real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_authority(cn: str, parent: Authority | None = None, *, ca: bool = True,
                   now: datetime | None = None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.now().astimezone()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent.cert.subject if parent else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(parent.key if parent else key, hashes.SHA256())
    return Authority(key, cert)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Signer:
    """``sign(csr_pem, ttl)`` -> ``cert_chain`` (leaf, [intermediate], root) as PEM strings."""

    def __init__(self, *, intermediate: bool = False, now: datetime | None = None) -> None:
        self.now = now
        self.root = make_authority("root", now=now)
        self.issuer = make_authority("intermediate", self.root, now=now) if intermediate else self.root

    def chain_tail(self) -> list[str]:
        tail = [pem(self.issuer.cert)] if self.issuer is not self.root else []
        return [*tail, pem(self.root.cert)]

    def leaf(self, public_key: object, sans: list[x509.GeneralName], ttl: float, *, now: datetime | None = None,
             issuer: Authority | None = None, ca: bool = False, backdate: float = 120.0) -> x509.Certificate:
        issuer = issuer or self.issuer
        now = now or self.now or datetime.now().astimezone()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=backdate))
            .not_valid_after(now + timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
        return builder.sign(issuer.key, hashes.SHA256())

    def sign(self, csr_pem: str, ttl: float, *, now: datetime | None = None) -> list[str]:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        return [pem(self.leaf(csr.public_key(), sans, ttl, now=now)), *self.chain_tail()]
