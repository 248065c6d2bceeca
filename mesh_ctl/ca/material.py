"""Plug-in CA material: Istio's ``cacerts`` layout, checked before the control plane serves anything.

    <dir>/ca-cert.pem      the certificate that signs workload certificates (an intermediate, or the root)
    <dir>/ca-key.pem       its private key (should be 0600; a warning otherwise)
    <dir>/root-cert.pem    the trust anchor(s): one root, or several during an operator-driven rotation
    <dir>/cert-chain.pem   ca-cert and the intermediates above it (optionally ending with the root)

Checks, each failing with a :class:`CaConfigError` that names the file: all PEM parse; the key matches
ca-cert; ca-cert is a CA (``BasicConstraints CA:true``, ``keyCertSign`` if key usage is present); every
certificate is valid now; ca-cert chains, signature by signature, through cert-chain.pem to one of the roots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca.authority import CertificateAuthority, fingerprint
from mesh_ctl.ca.signer import SigningAuthority

log = logging.getLogger("mesh_ctl.ca")

CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"
MAX_CHAIN = 8


class CaConfigError(ValueError):
    """The CA material cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class PluginMaterial:
    signing: SigningAuthority
    roots: tuple[x509.Certificate, ...]  # the trust bundle (root-cert.pem)
    directory: Path


def load_certs(data: bytes, origin: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (at least one), or :class:`CaConfigError`."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CaConfigError(f"{origin}: not PEM certificates ({e})") from None
    if not certs:
        raise CaConfigError(f"{origin}: no certificate in it")
    return certs


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ku.key_cert_sign


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):  # issuer name mismatch, unsupported key, bad signature
        return False
    return True


def load_plugin(directory: Path, *, now: datetime | None = None) -> PluginMaterial:
    """Read and check ``directory`` (Istio's ``cacerts``)."""
    now = now or datetime.now(UTC)
    if not directory.is_dir():
        raise CaConfigError(f"{directory}: not a directory (expected Istio's cacerts layout: {CA_CERT}, "
                            f"{CA_KEY}, {ROOT_CERT}, {CERT_CHAIN})")
    missing = [n for n in (CA_CERT, CA_KEY, ROOT_CERT) if not (directory / n).is_file()]
    if missing:
        raise CaConfigError(f"{directory}: missing {', '.join(missing)} (Istio's cacerts layout)")
    ca_cert = load_certs((directory / CA_CERT).read_bytes(), str(directory / CA_CERT))[0]
    roots = tuple(load_certs((directory / ROOT_CERT).read_bytes(), str(directory / ROOT_CERT)))
    chain_path = directory / CERT_CHAIN
    chain = load_certs(chain_path.read_bytes(), str(chain_path)) if chain_path.is_file() else [ca_cert]
    key = _load_key(directory / CA_KEY)
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != ca_cert.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CaConfigError(f"{directory / CA_KEY} does not match the public key of {directory / CA_CERT}")
    if not is_ca(ca_cert):
        raise CaConfigError(f"{directory / CA_CERT} is not a CA certificate (needs BasicConstraints CA:true and "
                            "keyCertSign)")
    for root in roots:
        if not is_ca(root):
            raise CaConfigError(f"{directory / ROOT_CERT}: {root.subject.rfc4514_string()!r} is not a CA certificate")
    intermediates, root = _path_to_root(ca_cert, chain, roots, directory)
    for cert in (ca_cert, *intermediates, root):
        _check_validity(cert, now, directory)
    _check_key_mode(directory / CA_KEY)
    signing = SigningAuthority(CertificateAuthority(key=key, cert=ca_cert), tuple(intermediates), root)
    return PluginMaterial(signing, roots, directory)


def _load_key(path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CaConfigError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CaConfigError(f"{path}: unsupported key type {type(key).__name__} (RSA or ECDSA)")
    return key


def _path_to_root(ca_cert: x509.Certificate, chain: list[x509.Certificate], roots: tuple[x509.Certificate, ...],
                  directory: Path) -> tuple[list[x509.Certificate], x509.Certificate]:
    """The intermediates between ca-cert and a root (from cert-chain.pem), and that root."""
    root_prints = {fingerprint(r) for r in roots}
    rest = [c for c in chain if c != ca_cert and fingerprint(c) not in root_prints]
    intermediates: list[x509.Certificate] = []
    current = ca_cert
    for _ in range(MAX_CHAIN):
        root = next((r for r in roots if issued_by(current, r)), None)
        if root is not None:
            return intermediates, root
        parent = next((c for c in rest if issued_by(current, c)), None)
        if parent is None:
            break
        if not is_ca(parent):
            raise CaConfigError(f"{directory / CERT_CHAIN}: {parent.subject.rfc4514_string()!r} is not a CA")
        intermediates.append(parent)
        rest.remove(parent)
        current = parent
    raise CaConfigError(f"{directory / CA_CERT} does not chain to any certificate of {directory / ROOT_CERT} "
                        f"(through {directory / CERT_CHAIN}); stuck at {current.subject.rfc4514_string()!r}, "
                        f"issued by {current.issuer.rfc4514_string()!r}")


def _check_validity(cert: x509.Certificate, now: datetime, directory: Path) -> None:
    name = cert.subject.rfc4514_string() or "(empty subject)"
    if cert.not_valid_after_utc <= now:
        raise CaConfigError(f"{directory}: {name!r} expired at {cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc > now:
        raise CaConfigError(f"{directory}: {name!r} is not valid before {cert.not_valid_before_utc.isoformat()}")


def _check_key_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o): a CA key should be 0600", path, mode)
