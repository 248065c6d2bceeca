"""The agent's private directory: where the key and certificates live for ``ssl.SSLContext.load_cert_chain``.

Python's ``ssl`` module loads keys from files only, so the key is written, but only here: a directory of
this process (mode 0700, on the tmpfs ``/dev/shm`` when there is one, so the key never reaches a disk), files
created 0600 with ``O_EXCL``. Every issuance gets new file names (``<n>-key.pem``, ``<n>-cert-chain.pem``,
``<n>-root-cert.pem``): a snapshot names exactly the files it was built from, and files are never rewritten
under a reader. Files of earlier issuances are removed once the installed snapshot no longer names them
(:meth:`SecretDirectory.prune`), and the directory with everything in it when the agent stops.

Resource handling: :class:`SecretDirectory` owns the directory; :meth:`close` removes it (also at interpreter
exit, in case the agent's task never got to run its ``finally``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from pyproxy.config import model as m

DIR_MODE = 0o700
FILE_MODE = 0o600
_SHM = "/dev/shm"


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    key: str
    cert_chain: str
    root_cert: str

    @property
    def paths(self) -> tuple[str, str, str]:
        return (self.key, self.cert_chain, self.root_cert)


def default_parent() -> str | None:
    """``/dev/shm`` when it is a writable directory (tmpfs on Linux), else the system's temp directory."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


class SecretDirectory:
    def __init__(self, parent: str | None = None) -> None:
        parent = parent if parent is not None else default_parent()
        self.path = os.path.abspath(tempfile.mkdtemp(prefix="pyproxy-agent-", dir=parent))
        os.chmod(self.path, DIR_MODE)
        self.current: IssuedFiles | None = None
        self._count = 0
        self._closed = False
        atexit.register(self.close)

    def write(self, key_pem: bytes, chain_pem: bytes, root_pem: bytes) -> IssuedFiles:
        """Write one issuance under new names; does not change :attr:`current` (see :meth:`commit`)."""
        if self._closed:
            raise RuntimeError("the secret directory is closed")
        self._count += 1
        n = self._count
        files = IssuedFiles(key=os.path.join(self.path, f"{n}-key.pem"),
                            cert_chain=os.path.join(self.path, f"{n}-cert-chain.pem"),
                            root_cert=os.path.join(self.path, f"{n}-root-cert.pem"))
        try:
            for path, data in zip(files.paths, (key_pem, chain_pem, root_pem), strict=True):
                _write_private(path, data)
        except BaseException:
            self.discard(files)
            raise
        return files

    def commit(self, files: IssuedFiles) -> None:
        """``files`` are now the ones in use (published and installed)."""
        self.current = files

    def discard(self, files: IssuedFiles) -> None:
        """Remove an issuance that was never installed."""
        for path in files.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def prune(self, in_use: Iterable[str]) -> list[str]:
        """Remove every file that is neither current nor named by ``in_use`` (the installed snapshot's
        files); returns the removed paths."""
        keep = {os.path.abspath(p) for p in in_use}
        if self.current is not None:
            keep.update(self.current.paths)
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.path):
                if entry.path not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    removed.append(entry.path)
        return removed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.current = None
        shutil.rmtree(self.path, ignore_errors=True)
        atexit.unregister(self.close)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # exact, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def files_in_use(snapshot: m.Snapshot) -> set[str]:
    """Every certificate, key and CA file the TLS contexts of ``snapshot`` name."""
    out: set[str] = set()
    contexts: list[m.TlsContext | None] = [c.tls for c in snapshot.clusters.values()]
    for listener in snapshot.listeners.values():
        contexts.extend(chain.tls for chain in listener.filter_chains)
        if listener.default_filter_chain is not None:
            contexts.append(listener.default_filter_chain.tls)
    for tls in contexts:
        if tls is None:
            continue
        for cert in tls.certificates:
            out.update(p for p in (cert.cert_chain_file, cert.private_key_file) if p)
        if tls.validation is not None and tls.validation.trusted_ca_file:
            out.add(tls.validation.trusted_ca_file)
    return {os.path.abspath(p) for p in out}
