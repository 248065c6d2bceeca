"""The servers the protocol suite can run against, started as real processes, and their memory use.

Every launched target listens for h2c on a free loopback port, advertises SETTINGS_MAX_CONCURRENT_STREAMS
= :data:`MAX_CONCURRENT_STREAMS`, and routes every path to the suite's backend (or, for ``h2server``,
answers itself):

- ``pyproxy`` (default): ``python -m pyproxy -c bootstrap.yaml`` with an Envoy v3 bootstrap from
  :func:`envoy_bootstrap`; ready when the admin ``/ready`` answers 200. ``H2_PYPROXY_CMD`` overrides the
  command (``{config}`` is replaced by the bootstrap path), e.g. to run a real Envoy on the same file.
- ``nginx``: Debian's nginx, ``listen ... http2`` + ``grpc_pass`` (config from :func:`nginx_config`).
- ``h2server``: :mod:`tests.protocol.h2_reference_server`.
- ``external``: something already running at ``H2_TARGET_ADDR`` (host:port) that routes to a backend the
  suite starts at ``H2_BACKEND_ADDR``; ``H2_TARGET_PID`` enables the memory checks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from tests.support.procs import ManagedProcess, ProcessGroup, free_port, wait_for_port

HOST = "127.0.0.1"
MAX_CONCURRENT_STREAMS = 10
MAX_REQUEST_HEADERS_KB = 60  # Envoy's default max_request_headers_kb, left at its default in the bootstrap
TARGETS = ("pyproxy", "nginx", "h2server", "external")
START_TIMEOUT = 20.0
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def envoy_bootstrap(listen_port: int, admin_port: int, backend_port: int) -> dict[str, object]:
    """An ordinary Envoy v3 bootstrap: one h2c listener routing ``/`` to a STATIC HTTP/2 cluster."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "h2_protocol_suite",
        "codec_type": "HTTP2",
        "http2_protocol_options": {"max_concurrent_streams": MAX_CONCURRENT_STREAMS},
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "h2_protocol_suite",
                    "address": {"socket_address": {"address": HOST, "port_value": listen_port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": HOST,
                                                    "port_value": backend_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/" + HTTP_OPTIONS,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ],
        },
    }


def nginx_config(workdir: Path, listen_port: int, backend_port: int) -> str:
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
daemon off;
user root;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp}
    http2_max_concurrent_streams {MAX_CONCURRENT_STREAMS};
    server {{
        listen {HOST}:{listen_port} http2;
        location / {{
            grpc_pass grpc://{HOST}:{backend_port};
            grpc_read_timeout 60s;
        }}
    }}
}}
"""


@dataclass
class Target:
    """A running server under test. ``process`` is None for ``external`` targets."""

    name: str
    host: str
    port: int
    process: ManagedProcess | None = None
    pid: int | None = None
    notes: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.alive()
        return self.pid is None or Path(f"/proc/{self.pid}").exists()

    def rss_kb(self) -> int | None:
        """Resident memory of the target's process tree (VmRSS summed), None when unknown."""
        pid = self.process.pid if self.process is not None else self.pid
        return None if pid is None else tree_rss_kb(pid)


def start_backend(group: ProcessGroup, port: int) -> ManagedProcess:
    proc = group.python("backend", "tests.protocol.backend", "--host", HOST, "--port", str(port))
    wait_for_port(HOST, port, timeout=START_TIMEOUT, proc=proc.popen)
    return proc


def start_target(name: str, group: ProcessGroup, backend_port: int) -> Target:
    if name not in TARGETS:
        raise ValueError(f"H2_TARGET must be one of {TARGETS}, not {name!r}")
    if name == "external":
        host, _, external_port = os.environ["H2_TARGET_ADDR"].rpartition(":")
        pid = os.environ.get("H2_TARGET_PID")
        return Target(name, host.strip("[]"), int(external_port), pid=int(pid) if pid else None)
    port = free_port(HOST)
    if name == "h2server":
        proc = group.python(
            "h2server",
            "tests.protocol.h2_reference_server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--max-concurrent-streams",
            str(MAX_CONCURRENT_STREAMS),
        )
        wait_for_port(HOST, port, timeout=START_TIMEOUT, proc=proc.popen)
    elif name == "nginx":
        proc = _start_nginx(group, port, backend_port)
    else:
        proc = _start_pyproxy(group, port, backend_port)
    return Target(name, HOST, port, proc)


def _start_nginx(group: ProcessGroup, port: int, backend_port: int) -> ManagedProcess:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir = group.workdir / f"nginx-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port, backend_port))
    proc = group.start("nginx", [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")])
    wait_for_port(HOST, port, timeout=START_TIMEOUT, proc=proc.popen)
    return proc


def _start_pyproxy(group: ProcessGroup, port: int, backend_port: int) -> ManagedProcess:
    admin_port = free_port(HOST)
    config = group.workdir / f"bootstrap-{port}.yaml"
    config.write_text(yaml.safe_dump(envoy_bootstrap(port, admin_port, backend_port), sort_keys=False))
    command = os.environ.get("H2_PYPROXY_CMD")
    args = (
        [part.replace("{config}", str(config)) for part in shlex.split(command)]
        if command
        else [sys.executable, "-m", "pyproxy", "-c", str(config)]
    )
    proc = group.start("pyproxy", args)
    _wait_ready(proc, admin_port)
    wait_for_port(HOST, port, timeout=START_TIMEOUT, proc=proc.popen)
    return proc


def _wait_ready(proc: ManagedProcess, admin_port: int) -> None:
    """Poll the admin ``/ready`` until it answers 200, the process exits, or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    url = f"http://{HOST}:{admin_port}/ready"
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.args} exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {START_TIMEOUT}s:\n{proc.output()[-3000:]}")
        time.sleep(0.1)


def nginx_syntax_ok(conf: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.run(
        [binary, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "nginx-error.log")],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


# ------------------------------------------------------------------------------------------- memory


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children_map() -> dict[int, list[int]]:
    """ppid -> pids, from /proc/*/stat (this kernel has no /proc/<pid>/task/<tid>/children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return children


def tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in KiB (nginx: master + workers)."""
    children = _children_map()
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss_kb(current)
        todo += children.get(current, [])
    return total


# ------------------------------------------------------------------------------------------- backend


class Backend:
    """The suite's backend process, and a direct grpcio channel to ask it what it saw."""

    def __init__(self, group: ProcessGroup, host: str = HOST, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process = start_backend(group, self.port)
        self._channel = grpc.insecure_channel(f"{host}:{self.port}")
        raw = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out
        self._seen = self._channel.unary_unary("/test.Echo/Seen", **raw)
        self._count = self._channel.unary_unary("/test.Echo/Count", **raw)

    def seen(self, test_id: str) -> bool:
        """Did a request carrying ``x-test-id: test_id`` reach the backend?"""
        return bool(self._seen(test_id.encode(), timeout=5) == b"1")

    def count(self) -> int:
        """Requests the backend has handled so far."""
        return int(self._count(b"", timeout=5))

    def close(self) -> None:
        self._channel.close()
