"""HAProxy as a gRPC sidecar (Debian's HAProxy 2.6: ``mode http``, ``proto h2`` on both sides).

One process, one thread (``nbthread 1``), foreground (``-db``) so the benchmark owns it by PID. HAProxy
multiplexes every stream on one upstream HTTP/2 connection (``http-reuse always`` makes that explicit).
With mTLS the listener requires a client certificate (``verify required``) and the server line presents
the client certificate and checks the upstream's (``verify required``, ``verifyhost localhost``).
"""

from __future__ import annotations

import shutil
import subprocess

from bench.procs import Proc, ProcessSet, wait_ready
from bench.proxies.base import HOST, START_TIMEOUT, Hop

BINARY = "haproxy"


def config(hop: Hop) -> str:
    certs = hop.certs
    bind_tls = (
        f" ssl crt {certs.server.bundle} ca-file {certs.ca} verify required alpn h2"
        if hop.downstream_tls
        else ""
    )
    server_tls = (
        f" ssl crt {certs.client.bundle} ca-file {certs.ca} verify required"
        " sni str(localhost) verifyhost localhost alpn h2"
        if hop.upstream_tls
        else ""
    )
    return f"""
global
    nbthread 1
    maxconn 4000
    pidfile {hop.workdir}/haproxy.pid
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-keep-alive 600s

frontend sidecar
    bind {hop.listen} proto h2{bind_tls}
    default_backend upstream

backend upstream
    http-reuse always
    server up {hop.upstream} proto h2{server_tls}
"""


class HAProxy:
    name = "haproxy"

    def unavailable(self) -> str | None:
        return None if shutil.which(BINARY) else "haproxy not installed"

    def version(self) -> str:
        out = subprocess.run([BINARY, "-v"], capture_output=True, text=True, timeout=10, check=False)
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"
        return first.removeprefix("HAProxy version ").split(" ")[0]

    def start(self, hop: Hop, procs: ProcessSet) -> Proc:
        hop.workdir.mkdir(parents=True, exist_ok=True)
        conf = hop.workdir / "haproxy.cfg"
        conf.write_text(config(hop))
        check = subprocess.run(
            [BINARY, "-c", "-q", "-f", str(conf)], capture_output=True, text=True, timeout=20, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c rejected {conf}: {(check.stderr or check.stdout).strip()[-600:]}")
        proc = procs.start(f"haproxy-{hop.name}-{hop.listen_port}", [BINARY, "-db", "-f", str(conf)])
        wait_ready(proc, HOST, hop.listen_port, START_TIMEOUT)
        return proc
