"""The mesh owner's credential: one random secret in ``<run dir>/api-token``, mode 0600.

In the spirit of a kubeconfig or Docker's socket: whoever can read the file controls the mesh, and only the
user who started it can. The control plane's management API (:mod:`mesh_ctl.xds.web`) and the sidecars'
mutating admin endpoints (pyproxy ``--admin-token-file``) require it; the CLI and the supervisor send it.
No dependencies: the supervisor makes it before anything starts.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("mesh_ctl.credential")

TOKEN_FILE = "api-token"
TOKEN_BYTES = 32


def ensure_token(path: Path) -> str:
    """The credential in ``path``; made (random, mode 0600, created exclusively) if there is none yet. A file
    that others can read is made private again: the credential is as good as its file's permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s could be read by other users; made it private (0600)", path)
            path.chmod(0o600)
        token = path.read_text().strip()
        if len(token) < 32:
            raise ValueError(f"{path}: the API credential is too short; remove the file to make a new one") from None
        return token
    token = secrets.token_hex(TOKEN_BYTES)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token
