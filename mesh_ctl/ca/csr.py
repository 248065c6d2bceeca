"""What a workload's CSR asks for, checked before anything is signed (pure).

A CSR is accepted when it is one PEM ``CERTIFICATE REQUEST`` whose self-signature verifies, whose key is
RSA (2048..8192 bits) or ECDSA P-256/P-384, and whose only requested name is a single URI SAN of Istio's
SPIFFE form ``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` in *our* trust domain. Refused: no SAN, two SANs,
any DNS/IP/e-mail/other SAN, another trust domain, and any CA extension (``BasicConstraints CA:true``,
``keyCertSign``/``cRLSign`` key usage, name constraints). The subject and other extensions are ignored, as
Istio does: the certificate gets an empty subject and the CA's own extensions (:mod:`authority`).
Whether the caller may have that SPIFFE ID is the service's question (:mod:`service`), not this module's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca.authority import PublicKey
from mesh_ctl.ca.tokens import Identity

MAX_CSR_BYTES = 64 * 1024
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
EC_CURVES = (ec.SECP256R1, ec.SECP384R1)
_SPIFFE = re.compile(r"^spiffe://([a-z0-9.\-_]+)/ns/([^/]+)/sa/([^/]+)$")


class CsrError(ValueError):
    """The CSR cannot be signed; the message says why."""


@dataclass(frozen=True, slots=True)
class CsrRequest:
    """A checked CSR: the key to certify and the identity it asks for."""

    public_key: PublicKey
    spiffe_id: str
    identity: Identity


def parse_spiffe_id(uri: str, trust_domain: str) -> Identity:
    """The namespace/service account of an Istio SPIFFE ID in ``trust_domain``, or :class:`CsrError`."""
    m = _SPIFFE.match(uri)
    if m is None:
        raise CsrError(f"URI SAN {uri[:200]!r} is not a SPIFFE ID of the form spiffe://<trust domain>/ns/<ns>/sa/<sa>")
    if m.group(1) != trust_domain:
        raise CsrError(f"URI SAN {uri!r} is in trust domain {m.group(1)!r}, not this mesh's {trust_domain!r}")
    try:
        return Identity(m.group(2), m.group(3))
    except ValueError as e:
        raise CsrError(f"URI SAN {uri!r}: {e}") from None


def parse_csr(pem: str | bytes, trust_domain: str) -> CsrRequest:
    """Check a PEM CSR as described above; the accepted request, or :class:`CsrError`."""
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
    if not data.strip():
        raise CsrError("no CSR in the request")
    if len(data) > MAX_CSR_BYTES:
        raise CsrError(f"CSR larger than {MAX_CSR_BYTES} bytes")
    if data.count(b"-----BEGIN ") != 1:
        raise CsrError("expected exactly one PEM block (CERTIFICATE REQUEST)")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as e:  # InvalidVersion (version other than v1) is no ValueError
        raise CsrError(f"not a PEM certificate request: {e}") from None
    try:
        signature_ok = csr.is_signature_valid
    except Exception as e:  # unsupported signature algorithms raise from the backend
        raise CsrError(f"CSR signature cannot be checked: {e}") from None
    if not signature_ok:
        raise CsrError("CSR signature does not verify (the requester does not hold the key)")
    public_key = _check_key(csr)
    uri = _requested_uri(csr)
    return CsrRequest(public_key, uri, parse_spiffe_id(uri, trust_domain))


def _check_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise CsrError(f"RSA key of {key.key_size} bits (allowed: {RSA_MIN_BITS}..{RSA_MAX_BITS})")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, EC_CURVES):
            raise CsrError(f"ECDSA curve {key.curve.name} (allowed: P-256, P-384)")
        return key
    raise CsrError(f"unsupported key type {type(key).__name__} (RSA or ECDSA only)")


def _requested_uri(csr: x509.CertificateSigningRequest) -> str:
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension) as e:
        raise CsrError(f"CSR extensions cannot be parsed: {e}") from None
    names: list[x509.GeneralName] | None = None
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            names = list(value)
        elif isinstance(value, x509.BasicConstraints) and value.ca:
            raise CsrError("CSR asks for a CA certificate (BasicConstraints CA:true); workloads get leaf certificates")
        elif isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise CsrError("CSR asks for certificate/CRL signing key usage; workloads get leaf certificates")
        elif isinstance(value, x509.NameConstraints):
            raise CsrError("CSR asks for name constraints, a CA extension")
    if not names:
        raise CsrError("CSR has no subjectAltName: it must ask for exactly one URI SAN, the SPIFFE ID")
    others = [n for n in names if not isinstance(n, x509.UniformResourceIdentifier)]
    if others:
        kinds = sorted({type(n).__name__ for n in others})
        raise CsrError(f"CSR asks for {', '.join(kinds)} SAN(s): the only identity allowed is one SPIFFE URI SAN")
    if len(names) != 1:
        raise CsrError(f"CSR asks for {len(names)} URI SANs: exactly one (the SPIFFE ID) is allowed")
    return str(names[0].value)
