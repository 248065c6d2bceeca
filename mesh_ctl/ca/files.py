"""Certificates and keys on disk: PEM, keys 0600 from the moment they exist, atomic replace.

Layout under a certificate directory (Istio's file names for the workload files)::

    ca/root-cert.pem   ca/root-key.pem (0600)
    <workload>/cert-chain.pem   <workload>/key.pem (0600)   <workload>/root-cert.pem
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca.authority import (
    WORKLOAD_TTL,
    CertificateAuthority,
    PrivateKey,
    create_root_ca,
    issue_workload_cert,
)

KEY_MODE = 0o600
CERT_MODE = 0o644
ROOT_GRACE = 0.2  # Istio: rotate the self-signed root when less than 20% of its lifetime is left


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The three files a sidecar needs: its chain, its key and the trust bundle."""

    cert_chain: Path
    private_key: Path
    root_cert: Path


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically; the file never exists with wider permissions than ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; make it exact
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_or_create_root(directory: Path, trust_domain: str, *, now: datetime | None = None,
                        ) -> tuple[CertificateAuthority, bool]:
    """The root in ``directory`` if it exists, is for ``trust_domain`` and has over 20% of its life left;
    else a new one, written there. Returns ``(ca, created)``."""
    now = now or datetime.now(UTC)
    cert_path, key_path = directory / "root-cert.pem", directory / "root-key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError):
            pass  # unreadable: replace it below
        else:
            if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                ca = CertificateAuthority(key=key, cert=cert)
                lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
                left = cert.not_valid_after_utc - now
                if ca.trust_domain == trust_domain and left > lifetime * ROOT_GRACE:
                    return ca, False
    ca = create_root_ca(trust_domain, now=now)
    write_file(key_path, key_pem(ca.key), KEY_MODE)
    write_file(cert_path, cert_pem(ca.cert), CERT_MODE)
    return ca, True


def write_workload_files(directory: Path, ca: CertificateAuthority, spiffe_id: str,
                         ttl: timedelta = WORKLOAD_TTL, *, now: datetime | None = None) -> CertFiles:
    """Issue a key + certificate for ``spiffe_id`` and write them with the trust bundle into ``directory``."""
    key, cert = issue_workload_cert(ca, spiffe_id, ttl, now=now)
    files = CertFiles(directory / "cert-chain.pem", directory / "key.pem", directory / "root-cert.pem")
    write_file(files.private_key, key_pem(key), KEY_MODE)
    write_file(files.cert_chain, cert_pem(cert), CERT_MODE)
    write_file(files.root_cert, cert_pem(ca.cert), CERT_MODE)
    return files
