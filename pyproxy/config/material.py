"""TLS material: inline PEM written to private files, and PEM checks with ``cryptography``.

The model holds only file paths (the TLS layer loads them with ``ssl.SSLContext.load_cert_chain``), so
``inline_string``/``inline_bytes``/``environment_variable`` certificates and keys are written to a
process-private directory (mode 0700, files 0600), named by content hash so re-translating the same
config writes nothing new. The directory is removed when the process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class MaterialStore:
    """Content-addressed private files for inline TLS material."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._owned = False
        # xDS resources are translated in a worker thread while the event loop may install local secrets.
        self._lock = threading.Lock()

    @property
    def directory(self) -> str:
        with self._lock:
            if self._directory is None:
                self._directory = tempfile.mkdtemp(prefix="pyproxy-tls-")  # mode 0700
                self._owned = True
                atexit.register(self.cleanup)
            return self._directory

    def write(self, data: bytes, kind: str) -> str:
        """Store ``data`` (kind: "cert", "key", "ca") and return its path; the file is mode 0600."""
        digest = hashlib.sha256(data).hexdigest()[:32]
        path = os.path.join(self.directory, f"{kind}-{digest}.pem")
        if os.path.exists(path):
            return path
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def cleanup(self) -> None:
        if self._owned and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            self._owned = False


_default_store: MaterialStore | None = None


def default_store() -> MaterialStore:
    global _default_store
    if _default_store is None:
        _default_store = MaterialStore()
    return _default_store


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM certificates in ``data``; ValueError with a readable reason if there are none or one is bad."""
    if b"-----BEGIN" not in data:
        raise ValueError("no PEM data found (expected -----BEGIN CERTIFICATE-----)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise ValueError(f"not a valid PEM certificate: {err}") from None
    if not certs:
        raise ValueError("no certificate found")
    return certs


def load_private_key(data: bytes) -> PrivateKeyTypes:
    if b"-----BEGIN" not in data:
        raise ValueError("no PEM data found (expected -----BEGIN PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted (password-protected keys are not supported)") from None
    except Exception as err:  # cryptography raises ValueError or UnsupportedAlgorithm
        raise ValueError(f"not a valid PEM private key: {err}") from None


def key_matches_certificate(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    with contextlib.suppress(Exception):
        return bool(key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki))
    return False


@functools.lru_cache(maxsize=64)
def check_key_pair(chain: bytes, key: bytes) -> tuple[str | None, str | None, bool]:
    """(problem with the chain, problem with the key, whether the key matches the first certificate) for PEM
    data. Cached by content: loading an RSA key costs ~35 ms (OpenSSL checks it), and the same pair comes back
    in every xDS push and in every cluster that uses it."""
    chain_problem = key_problem = None
    try:
        certs = load_certificates(chain)
    except ValueError as err:
        chain_problem = str(err)
    try:
        private_key = load_private_key(key)
    except ValueError as err:
        key_problem = str(err)
    if chain_problem is not None or key_problem is not None:
        return chain_problem, key_problem, False
    return None, None, key_matches_certificate(private_key, certs[0])


@functools.lru_cache(maxsize=64)
def check_certificates(data: bytes) -> str | None:
    """The problem with PEM certificates ``data`` (None if there are some and all parse); cached by content."""
    try:
        load_certificates(data)
    except ValueError as err:
        return str(err)
    return None
