"""nginx as a gRPC sidecar (Debian's nginx 1.22: ``listen ... http2`` + ``grpc_pass``).

One worker process under a master, in its own prefix (config, pid, error log, temp dirs) in the run's temp
dir, started in the foreground (``daemon off``) so the benchmark owns it by PID. Upstream connections are
kept alive (``keepalive`` in the ``upstream`` block): nginx's gRPC proxy carries one stream per upstream
connection, so it keeps up to one connection per request in flight instead of reconnecting per request.
The client side allows a million requests per connection (``keepalive_requests``; default 1000), so the
load generator's single connection is never sent a GOAWAY mid-run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bench.procs import Proc, ProcessSet, wait_ready
from bench.proxies.base import HOST, START_TIMEOUT, Hop

BINARY = "nginx"


def config(hop: Hop) -> str:
    prefix = hop.workdir
    certs = hop.certs
    listen_opts = "ssl http2" if hop.downstream_tls else "http2"
    server_tls = (
        f"""
        ssl_certificate {certs.server.cert};
        ssl_certificate_key {certs.server.key};
        ssl_client_certificate {certs.ca};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;"""
        if hop.downstream_tls
        else ""
    )
    upstream_tls = (
        f"""
            grpc_ssl_certificate {certs.client.cert};
            grpc_ssl_certificate_key {certs.client.key};
            grpc_ssl_trusted_certificate {certs.ca};
            grpc_ssl_verify on;
            grpc_ssl_verify_depth 2;
            grpc_ssl_name localhost;
            grpc_ssl_server_name on;
            grpc_ssl_session_reuse on;
            grpc_ssl_protocols TLSv1.2 TLSv1.3;"""
        if hop.upstream_tls
        else ""
    )
    scheme = "grpcs" if hop.upstream_tls else "grpc"
    # Workers drop to this user when nginx starts as root; keep the user that owns the temp dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 1000;
    upstream up {{
        server {hop.upstream};
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen {hop.listen} {listen_opts};{server_tls}
        location / {{
            grpc_pass {scheme}://up;
            grpc_read_timeout 60s;
            grpc_send_timeout 60s;{upstream_tls}
        }}
    }}
}}
"""


class Nginx:
    name = "nginx"

    def unavailable(self) -> str | None:
        return None if shutil.which(BINARY) else "nginx not installed"

    def version(self) -> str:
        out = subprocess.run([BINARY, "-v"], capture_output=True, text=True, timeout=10, check=False)
        return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")

    def start(self, hop: Hop, procs: ProcessSet) -> Proc:
        (hop.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = hop.workdir / "nginx.conf"
        conf.write_text(config(hop))
        args = [BINARY, "-p", str(hop.workdir), "-c", str(conf), "-e", str(hop.workdir / "error.log")]
        check = subprocess.run([*args, "-t", "-q"], capture_output=True, text=True, timeout=20, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t rejected {conf}: {check.stderr.strip()[-600:]}")
        proc = procs.start(f"nginx-{hop.name}-{hop.listen_port}", args)
        wait_ready(proc, HOST, hop.listen_port, START_TIMEOUT)
        return proc
