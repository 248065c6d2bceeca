"""The agent's cryptography as pure functions: the key, the CSR, and the checks on what the CA sent back.

Istio's shapes: RSA 2048 by default (``WORKLOAD_RSA_KEY_SIZE``), ECDSA P-256 when asked
(``ECC_SIGNATURE_ALGORITHM=ECDSA``); the CSR names the workload by its SPIFFE ID alone (one URI SAN, marked
critical because the subject is empty). The CA's answer is ``cert_chain = [leaf, intermediates..., root]``;
it is used only if every check in :func:`validate_chain` passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyproxy.agent.options import KeyAlgorithm

WORKLOAD_SECRET = "default"  # istio-agent's SDS name for the workload's key + chain
ROOT_SECRET = "ROOTCA"  # ... and for the trust bundle
RSA_KEY_SIZE = 2048
CLOCK_SKEW = timedelta(minutes=5)  # a not-before this far in the future is still accepted

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CertificateRejected(Exception):
    """The CA's answer cannot be used (the message says which check failed)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A checked answer: ``chain`` is the leaf and any intermediates (what the proxy presents), ``root`` the
    certificate the chain ends at (the trust bundle when the control plane pushes none)."""

    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate
    spiffe_id: str

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def serial(self) -> str:
        return serial_hex(self.leaf)

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc


def new_key(algorithm: KeyAlgorithm = "rsa") -> PrivateKey:
    if algorithm == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)


def make_csr(key: PrivateKey, spiffe_id: str) -> bytes:
    """A PEM CSR with an empty subject and the single URI SAN ``spiffe_id``, signed with SHA-256."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def validate_chain(cert_chain: list[str], key: PrivateKey, spiffe_id: str, now: datetime) -> Issued:
    """Check the CA's ``cert_chain`` (PEM strings, leaf first, root last) for our key and identity.

    Checks: every element parses; there is a leaf and a root; the leaf's public key is ``key``'s; the leaf's
    only SAN is the URI ``spiffe_id`` and it is not a CA; each certificate is signed by the next one, which
    is a CA; the root is self-signed; all are valid at ``now`` (a not-before up to 5 minutes ahead is
    tolerated as clock skew). Raises :class:`CertificateRejected`.
    """
    certs: list[x509.Certificate] = []
    for i, pem in enumerate(cert_chain):
        try:
            parsed = x509.load_pem_x509_certificates(pem.encode())
        except ValueError as e:
            raise CertificateRejected(f"cert_chain[{i}] is not a PEM certificate: {e}") from None
        certs.extend(parsed)
    if len(certs) < 2:
        raise CertificateRejected(f"cert_chain has {len(certs)} certificate(s); expected the leaf and its root")
    leaf, root = certs[0], certs[-1]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise CertificateRejected("the certificate is not for our key (its public key differs from the CSR's)")
    sans = _sans(leaf)
    if sans != [("URI", spiffe_id)]:
        got = ", ".join(f"{kind}:{value}" for kind, value in sans) or "none"
        raise CertificateRejected(f"the certificate names {got}; expected exactly URI:{spiffe_id}")
    if _is_ca(leaf):
        raise CertificateRejected("the leaf certificate is a CA certificate")
    for i, cert in enumerate(certs):
        what = "leaf" if i == 0 else ("root" if i == len(certs) - 1 else f"intermediate {i}")
        if cert.not_valid_after_utc <= now:
            raise CertificateRejected(f"the {what} certificate expired at {cert.not_valid_after_utc.isoformat()}")
        if cert.not_valid_before_utc > now + CLOCK_SKEW:
            raise CertificateRejected(f"the {what} certificate is not valid before "
                                      f"{cert.not_valid_before_utc.isoformat()}")
        if i > 0 and not _is_ca(cert):
            raise CertificateRejected(f"the {what} certificate is not a CA (basicConstraints)")
        issuer = certs[i + 1] if i + 1 < len(certs) else cert
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, InvalidSignature, TypeError) as e:
            by = "itself (the root must be self-signed)" if issuer is cert else "the next certificate in the chain"
            raise CertificateRejected(f"the {what} certificate is not signed by {by}: {e or 'bad signature'}") \
                from None
    return Issued(chain=tuple(certs[:-1]), root=root, spiffe_id=spiffe_id)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certs_pem(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def serial_hex(cert: x509.Certificate) -> str:
    """Lower-case hex, two digits per byte (Envoy's ``serial_number``)."""
    text = format(cert.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def uri_sans(cert: x509.Certificate) -> list[str]:
    return [value for kind, value in _sans(cert) if kind == "URI"]


def _sans(cert: x509.Certificate) -> list[tuple[str, str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[tuple[str, str]] = []
    for name in ext:
        if isinstance(name, x509.UniformResourceIdentifier):
            out.append(("URI", name.value))
        elif isinstance(name, x509.DNSName):
            out.append(("DNS", name.value))
        elif isinstance(name, x509.IPAddress):
            out.append(("IP", str(name.value)))
        else:
            out.append((type(name).__name__, str(getattr(name, "value", name))))
    return out


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
