"""Start the interop topology as real processes and run the interop client against it.

Resource handling: every process (interop server, sidecars, each client run) is started through a
:class:`tests.support.procs.ProcessGroup`, which stops it by PID when the group is closed; a client run
that outlives its timeout is stopped at once. Time is bounded by a :class:`Budget` shared by a test module:
each wait and each client run gets at most what is left of it, so a hung proxy costs the module its budget,
not an hour.

Error handling: a process that exits while we wait for it, or never becomes ready, raises
:class:`TopologyError` carrying the tail of its log.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.interop import render
from tests.interop.calls import TestServiceClient
from tests.interop.certs import SERVER_DNS, CertPaths
from tests.interop.proto import empty_pb2
from tests.support.procs import ManagedProcess, ProcessGroup, free_port, wait_for_port

LOOPBACK = "127.0.0.1"
DEFAULT_PROXY_CMD = f"{shlex.quote(sys.executable)} -m pyproxy"


class TopologyError(RuntimeError):
    """A process of the topology did not come up (the message holds its log tail)."""


@dataclass
class Budget:
    """Seconds left for a whole test module; every wait draws on it."""

    total: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.total - (time.monotonic() - self.started)

    def cap(self, seconds: float) -> float:
        left = self.remaining()
        if left <= 0:
            raise TimeoutError(f"the module's time budget of {self.total:.0f} s is used up")
        return min(seconds, left)


def log_text(proc: ManagedProcess) -> str:
    """The process's output so far, from its log file (``ManagedProcess.output()`` fails once stopped)."""
    return proc.log_path.read_text(errors="replace")


def tail(proc: ManagedProcess, chars: int = 3000) -> str:
    return (
        f"----- {proc.log_path.name} (pid {proc.pid}, alive={proc.alive()}) -----\n{log_text(proc)[-chars:]}"
    )


def wait_ready(proc: ManagedProcess, admin_port: int, timeout: float) -> None:
    """Poll ``GET /ready`` on the admin port until it answers 200 (the proxy is listening)."""
    deadline = time.monotonic() + timeout
    url = f"http://{LOOPBACK}:{admin_port}/ready"
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise TopologyError(
                f"{proc.args!r} exited with {proc.popen.returncode} before /ready\n{tail(proc)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise TopologyError(f"{url} not ready after {timeout:.0f} s ({last})\n{tail(proc)}")


def is_ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{admin_port}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class InteropServer:
    proc: ManagedProcess
    port: int
    tls: bool


@dataclass
class Sidecars:
    """A started pair: the client connects to ``entry_port`` (sidecar A's listener)."""

    name: str
    entry_port: int
    b_port: int  # sidecar B's mTLS listener
    procs: list[ManagedProcess]
    admin_ports: list[int]
    files: list[Path]

    def logs(self) -> str:
        return "\n".join(tail(p) for p in self.procs)

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.procs if not p.alive()]

    def stop(self) -> None:
        """SIGTERM to both at once (a proxy may drain for a while), then wait for each (SIGKILL after 5 s)."""
        for proc in self.procs:
            proc.kill(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()


@dataclass(frozen=True)
class ClientRun:
    returncode: int | None  # None: stopped after the timeout
    output: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0


@dataclass
class Stack:
    """One module's processes (``group``), time (``budget``) and certificates."""

    group: ProcessGroup
    budget: Budget
    certs: CertPaths

    def start_server(self, tls: bool = False) -> InteropServer:
        """The interop server on a free loopback port (TLS with sidecar B's certificate when ``tls``)."""
        port = free_port(LOOPBACK)
        args = ["--port", str(port), "--host", LOOPBACK]
        if tls:
            args += ["--use_tls", "true", "--tls_cert_file", str(self.certs.server_cert)]
            args += ["--tls_key_file", str(self.certs.server_key)]
        proc = self.group.python(
            "interop-server-tls" if tls else "interop-server", "tests.interop.server", *args
        )
        try:
            wait_for_port(LOOPBACK, port, timeout=self.budget.cap(15), proc=proc.popen)
        except (RuntimeError, TimeoutError) as error:
            raise TopologyError(f"{error}\n{tail(proc)}") from error
        return InteropServer(proc, port, tls=tls)

    def _values(self, server_port: int, run_dir: Path) -> dict[str, object]:
        ports = {name: free_port(LOOPBACK) for name in ("A_ADMIN_PORT", "A_LISTENER_PORT", "B_ADMIN_PORT")}
        return {
            **ports,
            "B_LISTENER_PORT": free_port(LOOPBACK),
            "SERVER_PORT": server_port,
            "CERT_DIR": self.certs.directory,
            "RUN_DIR": run_dir,
        }

    def _start_pair(
        self,
        name: str,
        values: dict[str, object],
        commands: Sequence[tuple[str, list[str]]],
        files: list[Path],
    ) -> Sidecars:
        """Start B (A's upstream) then A, and wait for both /ready."""
        admin = [int(str(values["B_ADMIN_PORT"])), int(str(values["A_ADMIN_PORT"]))]
        procs = [self.group.start(proc_name, cmd) for proc_name, cmd in commands]
        for proc, port in zip(procs, admin, strict=True):
            wait_ready(proc, port, self.budget.cap(20))
        entry, b_port = int(str(values["A_LISTENER_PORT"])), int(str(values["B_LISTENER_PORT"]))
        return Sidecars(name, entry, b_port, procs, admin, files)

    def start_pyproxy_pair(self, server_port: int, name: str, a: str, b: str) -> Sidecars:
        """Two proxies from the bootstrap templates ``a`` and ``b`` (file names in ``bootstraps/``).

        The command is ``python -m pyproxy -c FILE``; ``INTEROP_PROXY_CMD`` replaces ``python -m pyproxy``
        (for example ``envoy --use-dynamic-base-id`` runs the same topology on Envoy).
        """
        run_dir = self.group.workdir / name
        values = self._values(server_port, run_dir)
        files = [render.render(render.BOOTSTRAPS / template, values, run_dir) for template in (b, a)]
        base = shlex.split(os.environ.get("INTEROP_PROXY_CMD", DEFAULT_PROXY_CMD))
        commands = [
            (f"{name}-sidecar-{side}", [*base, "-c", str(f)]) for side, f in zip("ba", files, strict=True)
        ]
        return self._start_pair(name, values, commands, files)

    def start_nginx_pair(self, server_port: int) -> Sidecars:
        """The same pair as nginx instances (configs in ``nginx/``), for comparison."""
        run_dir = self.group.workdir / "nginx"
        values = self._values(server_port, run_dir)
        files = [
            render.render(render.NGINX / conf, values, run_dir)
            for conf in ("sidecar_b.conf", "sidecar_a.conf")
        ]
        commands = [
            (f"nginx-sidecar-{side}", ["nginx", "-e", "stderr", "-p", str(run_dir), "-c", str(f)])
            for side, f in zip("ba", files, strict=True)
        ]
        return self._start_pair("nginx", values, commands, files)

    def run_client(
        self, name: str, port: int, case: str, tls: bool = False, timeout: float = 20.0
    ) -> ClientRun:
        """Run ``python -m tests.interop.client --server_port=PORT --test_case=CASE`` to completion."""
        args = [
            f"--server_host={LOOPBACK}",
            f"--server_port={port}",
            f"--test_case={case}",
            "--rpc_timeout_s=10",
        ]
        if tls:
            args += ["--use_tls=true", "--use_test_ca=true", f"--ca_file={self.certs.ca}"]
            args += [f"--server_host_override={SERVER_DNS}"]
        limit = self.budget.cap(timeout)
        start = time.monotonic()
        proc = self.group.python(f"client-{name}-{case}", "tests.interop.client", *args)
        returncode: int | None
        try:
            returncode = proc.popen.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            returncode = None
        proc.stop(grace=1.0)
        output = log_text(proc) + ("" if returncode is not None else f"\n[stopped after {limit:.1f} s]")
        return ClientRun(returncode, output, time.monotonic() - start)


def empty_call_status(
    port: int, certs: CertPaths, identity: tuple[Path, Path] | None, tls: bool = True, timeout: float = 5.0
) -> grpc.StatusCode:
    """One ``EmptyCall`` to ``port`` (plaintext, or TLS trusting our CA with ``identity`` = (cert, key) as the
    client certificate, none if None); the resulting status code."""
    target = f"{LOOPBACK}:{port}"
    if tls:
        key = chain = None
        if identity is not None:
            chain, key = identity[0].read_bytes(), identity[1].read_bytes()
        credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes(), key, chain)
        channel = grpc.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", SERVER_DNS)]
        )
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            TestServiceClient(channel).empty_call(empty_pb2.Empty(), timeout=timeout)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK
