"""The topologies measured, as chains of :class:`~bench.proxies.base.Hop` from the client to the server.

- ``direct``:           client -> server
- ``1-sidecar``:        client -> proxy -> server                       (h2c everywhere)
- ``2-sidecars``:       client -> proxy A -> h2c -> proxy B -> server   (two sidecars, no TLS)
- ``2-sidecars-mtls``:  client -> proxy A -> mTLS -> proxy B -> server  (a mesh hop: B requires A's cert)

The client always speaks h2c to the first hop and the last hop always speaks h2c to the server, as with
sidecars next to a plain gRPC app.
"""

from __future__ import annotations

from pathlib import Path

from bench.certs import CertSet
from bench.procs import free_port
from bench.proxies.base import Hop

SHAPES = ("direct", "1-sidecar", "2-sidecars", "2-sidecars-mtls")
MTLS_SHAPE = "2-sidecars-mtls"


def plan(shape: str, server_port: int, workdir: Path, certs: CertSet) -> list[Hop]:
    """The hops of ``shape``, ordered from the server outwards (start them in this order)."""
    if shape == "direct":
        return []
    if shape == "1-sidecar":
        return [Hop("A", free_port(), server_port, False, False, workdir / "A", certs, free_port())]
    if shape in ("2-sidecars", MTLS_SHAPE):
        mtls = shape == MTLS_SHAPE
        b = Hop("B", free_port(), server_port, mtls, False, workdir / "B", certs, free_port())
        a = Hop("A", free_port(), b.listen_port, False, mtls, workdir / "A", certs, free_port())
        return [b, a]
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
