"""What every proxy implementation gets (a :class:`Hop`) and must provide (:class:`ProxyImpl`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.certs import CertSet
from bench.procs import Proc, ProcessSet

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds from exec to ready


@dataclass(frozen=True, slots=True)
class Hop:
    """One sidecar: accept on ``listen_port`` and forward every gRPC call to ``upstream_port``.

    ``downstream_tls``: the listener terminates TLS and requires a client certificate signed by the run's CA
    (the inbound sidecar B of a mesh). ``upstream_tls``: connect to the upstream with TLS, present the
    client certificate and verify the server's (the outbound sidecar A). Otherwise both sides are h2c.
    """

    name: str
    listen_port: int
    upstream_port: int
    downstream_tls: bool
    upstream_tls: bool
    workdir: Path
    certs: CertSet
    admin_port: int | None = None  # used by pyproxy (Envoy admin); others ignore it

    @property
    def listen(self) -> str:
        return f"{HOST}:{self.listen_port}"

    @property
    def upstream(self) -> str:
        return f"{HOST}:{self.upstream_port}"


class ProxyImpl(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """Why this proxy cannot run here (e.g. ``"nginx not installed"``), or None."""
        ...

    def version(self) -> str: ...

    def start(self, hop: Hop, procs: ProcessSet) -> Proc:
        """Write the config into ``hop.workdir``, start the proxy and return once it is ready to proxy.

        Raises RuntimeError with a short reason (and the log tail) when it cannot start.
        """
        ...
