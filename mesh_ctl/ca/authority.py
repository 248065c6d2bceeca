"""Root and workload certificates as pure functions of keys, names and times (Istio's shapes, defaults)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSA_KEY_SIZE = 2048  # Istio WORKLOAD_RSA_KEY_SIZE and the self-signed root
ROOT_TTL = timedelta(days=3650)  # Istio self-signed root: 10 years
WORKLOAD_TTL = timedelta(hours=24)  # Istio DEFAULT_WORKLOAD_CERT_TTL / SECRET_TTL
MAX_WORKLOAD_TTL = timedelta(days=90)  # Istio MAX_WORKLOAD_CERT_TTL
CLOCK_SKEW_GRACE = timedelta(minutes=2)  # Istio pki/util ClockSkewGracePeriod: NotBefore = now - 2 min

# spiffe://<trust domain>/ns/<namespace>/sa/<service account> (istio pkg/spiffe).
_SPIFFE_ID = re.compile(r"^spiffe://[a-z0-9.\-_]+/ns/[a-z0-9\-]+/sa/[a-z0-9.\-]+$")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A signing key and its certificate (self-signed root today; an intermediate later)."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def trust_domain(self) -> str:
        orgs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(orgs[0].value) if orgs else ""


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    sid = f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
    if not _SPIFFE_ID.match(sid):
        raise ValueError(f"not a valid Istio SPIFFE ID: {sid!r}")
    return sid


def new_private_key(key_size: int = RSA_KEY_SIZE) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def create_root_ca(
    trust_domain: str = "cluster.local",
    *,
    key: PrivateKey | None = None,
    ttl: timedelta = ROOT_TTL,
    now: datetime | None = None,
) -> CertificateAuthority:
    """A self-signed root like istiod's: subject ``O=<trust domain>``, CA, keyCertSign, valid ``ttl``."""
    key = key or new_private_key()
    now = now or datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW_GRACE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def create_intermediate_ca(
    parent: CertificateAuthority,
    trust_domain: str = "cluster.local",
    *,
    common_name: str = "Intermediate CA",
    path_length: int | None = 0,
    key: PrivateKey | None = None,
    ttl: timedelta = timedelta(days=365),
    now: datetime | None = None,
) -> CertificateAuthority:
    """An intermediate CA signed by ``parent`` (what Istio's plug-in ``cacerts`` usually hold as ca-cert)."""
    key = key or new_private_key()
    now = now or datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    parent_ski = x509.SubjectKeyIdentifier.from_public_key(parent.cert.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW_GRACE)
        .not_valid_after(min(now + ttl, parent.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent_ski), critical=False)
        .sign(parent.key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (what `mesh_ctl ca status` shows)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def sign_workload_cert(
    ca: CertificateAuthority,
    csr_or_public_key: x509.CertificateSigningRequest | PublicKey,
    spiffe_id: str,
    ttl: timedelta = WORKLOAD_TTL,
    *,
    now: datetime | None = None,
    max_ttl: timedelta = MAX_WORKLOAD_TTL,
) -> x509.Certificate:
    """Sign a workload certificate whose only identity is the URI SAN ``spiffe_id``.

    Pure: the caller decides *whether* ``spiffe_id`` may be issued (:mod:`mesh_ctl.ca.service` checks the
    token and the CSR); whatever names a CSR asks for are ignored here, only its key is used, and only if its
    signature verifies. The certificate is valid from ``now - 2 min`` to ``now + ttl``, capped at the CA's
    own expiry. ``ca`` may be a root or an intermediate.
    """
    if isinstance(csr_or_public_key, x509.CertificateSigningRequest):
        if not csr_or_public_key.is_signature_valid:
            raise ValueError("CSR signature does not verify")
        public_key = csr_or_public_key.public_key()
    else:
        public_key = csr_or_public_key
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported key type {type(public_key).__name__} (RSA or ECDSA only)")
    if not _SPIFFE_ID.match(spiffe_id):
        raise ValueError(f"not a valid Istio SPIFFE ID: {spiffe_id!r}")
    if not timedelta(0) < ttl <= max_ttl:
        raise ValueError(f"workload certificate TTL must be in (0, {max_ttl}] (got {ttl})")
    now = now or datetime.now(UTC)
    not_after = min(now + ttl, ca.cert.not_valid_after_utc)
    try:
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:  # a plugged-in CA certificate without one: derive it from the key
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca.cert.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))  # Istio: no subject, the identity is the SAN alone
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW_GRACE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        # RFC 5280 4.2.1.6: with an empty subject the SAN extension MUST be critical.
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                       critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def issue_workload_cert(
    ca: CertificateAuthority, spiffe_id: str, ttl: timedelta = WORKLOAD_TTL, *, now: datetime | None = None,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA 2048 key and its signed certificate (what istio-agent + istiod do, in one step)."""
    key = new_private_key()
    return key, sign_workload_cert(ca, key.public_key(), spiffe_id, ttl, now=now)


def _serial() -> int:
    # 127 random bits: positive and within RFC 5280's 20 octets (Istio uses 128-bit serials).
    return secrets.randbits(127) | 1


def _key_usage(*, cert_sign: bool = False, digital_signature: bool = False,
               key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
