"""Workload identities for `mesh_ctl up` with a control plane: one bootstrap token per workload.

Istio gives each pod a service-account token (a Kubernetes projected token, refreshed by the kubelet); the
pod's istio-agent presents it with a CSR to istiod's CA. Here the supervisor plays the kubelet: once the
control plane is ready it asks the CA for a token per workload (``POST /v1/ca/tokens``, what `mesh_ctl ca
mint-token` calls) and writes it to ``<run dir>/tokens/<workload>.jwt`` (directory 0700, file 0600, replaced
atomically), which the sidecar's identity agent reads for every certificate request (``pyproxy
--ca-address --token-path``). Tokens live :data:`TOKEN_TTL_S`; the supervisor mints new ones after half of
that (:data:`TOKEN_REFRESH_S`), long before a certificate renewal (every 12 h) could meet an expired token.

The workload's key never leaves its sidecar; nothing here sees a certificate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mesh_ctl.topology import Workload

TOKEN_TTL_S = 24 * 3600  # the CA's default token lifetime, asked for explicitly
TOKEN_REFRESH_S = TOKEN_TTL_S / 2
DIR_MODE = 0o700
FILE_MODE = 0o600


def token_path(tokens_dir: Path, workload: str) -> Path:
    return tokens_dir / f"{workload}.jwt"


def mint_tokens(api: str, workloads: Sequence[Workload], tokens_dir: Path, api_token_file: Path,
                timeout: float = 10.0) -> list[Path]:
    """Mint a token for each workload's identity (namespace + service account) from the control plane at
    ``api`` (with the owner's credential in ``api_token_file``) and write it; returns the files. Raises
    :class:`mesh_ctl.client.ControlPlaneError`."""
    from mesh_ctl.client import Client, Endpoint  # not at import time: specs (and `status`) stay light

    client = Client(Endpoint(api, "mesh_ctl up", token_file=api_token_file), timeout=timeout)
    tokens_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(tokens_dir, DIR_MODE)
    written = []
    for w in workloads:
        answer = client.call("POST", "/v1/ca/tokens", {"namespace": w.namespace, "service_account": w.service_account,
                                                       "ttl_s": TOKEN_TTL_S})
        path = token_path(tokens_dir, w.name)
        _write_private(path, str(answer["token"]))
        written.append(path)
    return written


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``text``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
