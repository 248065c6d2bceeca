"""A sidecar pair around the real payment service, as real processes on loopback, for integration tests:

    payment client --h2c--> client sidecar --mTLS h2--> server sidecar --h2c--> payment-server
                            (pyproxy, OUTBOUND)          (pyproxy, INBOUND)

:func:`start_mesh` issues SPIFFE certificates from a throwaway CA (:mod:`tests.support.certs`), renders the
Envoy v3 bootstraps in ``tests/integration/bootstraps/`` (every port picked free), starts the three processes
through a :class:`~tests.support.procs.ProcessGroup` (so they are stopped by PID whatever happens) and waits
until the server listens and both sidecars answer ``GET /ready`` with 200. The :class:`Mesh` it returns knows
every address, can kill and restart the payment server or a sidecar on the same port, reads the sidecars'
admin API, and looks at their sockets and memory through ``/proc``.

Fixtures: ``shared_mesh`` (one pair per test module: for tests that leave it as they found it) and ``mesh``
(the same pair; prints the processes' logs when the test fails and checks afterwards that both sidecars are
still running), ``fresh_mesh`` (a pair of its own, for tests that kill, stop or starve something). Use them
from a ``conftest.py`` with ``from tests.support.mesh import fresh_mesh, mesh, shared_mesh``.

:class:`RawGrpcClient` is a small blocking gRPC-over-h2c client (python-hyper ``h2``) for what grpcio cannot
show or do: the exact header blocks of a response (trailers-only or not, header bytes as sent), reading with a
window the test controls (a slow reader), a call that never cancels on its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.certs import TestCA
from tests.support.procs import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, wait_for_port

BOOTSTRAPS = REPO_ROOT / "tests" / "integration" / "bootstraps"
HOST = "127.0.0.1"
# The names the client sidecar routes (its virtual host's domains); any other authority has no route.
PAYMENT_AUTHORITY = "payment.default.svc.cluster.local:50051"
GONE_AUTHORITY = "gone:50051"  # routed to a destination nothing listens on
TRUST_DOMAIN = "spiffe://cluster.local/"
SERVER_SPIFFE_ID = TRUST_DOMAIN + "ns/default/sa/payment"
CLIENT_SPIFFE_ID = TRUST_DOMAIN + "ns/default/sa/payment-client"
START_TIMEOUT = 30.0
SERVER_WORKERS = 160  # payment-server handler threads: more than any test's concurrent calls
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


# ------------------------------------------------------------------------------------------- bootstraps


def render(template: Path, values: Mapping[str, object], out_dir: Path) -> Path:
    """Fill in ``${NAME}`` placeholders; a placeholder without a value is an error, not an empty string."""
    text = template.read_text()
    missing = set(_PLACEHOLDER.findall(text)) - values.keys()
    if missing:
        raise KeyError(f"{template.name}: placeholders without a value: {sorted(missing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / template.name
    out.write_text(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text))
    return out


# --------------------------------------------------------------------------------------------- /proc


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def connections_to(pid: int, port: int) -> set[int]:
    """The ESTABLISHED TCP connections process ``pid`` holds to remote ``port``, as socket inodes (from
    /proc/net/tcp): the same set before and after means the same connections."""
    mine = _socket_inodes(pid)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and int(fields[9]) in mine:
                found.add(int(fields[9]))
    return found


def established_to(pid: int, port: int) -> int:
    """How many ESTABLISHED TCP connections process ``pid`` holds to remote ``port``."""
    return len(connections_to(pid, port))


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Sidecar:
    name: str
    proc: ManagedProcess
    listen_port: int
    admin_port: int
    bootstrap: Path
    extra_args: tuple[str, ...] = ()

    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes]:
        """One admin API request; returns (HTTP status, body)."""
        req = urllib.request.Request(f"http://{HOST}:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def ready(self) -> bool:
        try:
            return self.admin("/ready", timeout=1.0)[0] == 200
        except OSError:
            return False

    def host_stat(self, cluster: str, stat: str) -> list[int]:
        """``stat`` of every host of ``cluster`` from ``/clusters?format=json`` (Envoy's list-of-{name, value}
        shape and pyproxy's flat dict both accepted)."""
        status, body = self.admin("/clusters?format=json")
        assert status == 200, body
        values = []
        for c in json.loads(body)["cluster_statuses"]:
            if c["name"] != cluster:
                continue
            for host in c.get("host_statuses", []):
                stats = host.get("stats", {})
                if isinstance(stats, list):
                    stats = {s["name"]: s.get("value", 0) for s in stats}
                values.append(int(stats.get(stat, 0)))
        return values

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)


CLIENT_CLUSTER = "outbound|50051||payment.default.svc.cluster.local"
SERVER_CLUSTER = "inbound|50051||"


@dataclass
class Mesh:
    group: ProcessGroup
    workdir: Path
    ca: TestCA
    app_port: int
    client_sidecar: Sidecar
    server_sidecar: Sidecar
    server: ManagedProcess
    server_name: str
    version: str = "v1"
    _restarts: int = field(default=0, repr=False)

    @property
    def target(self) -> str:
        """Where the payment client dials: the client sidecar's outbound listener."""
        return f"{HOST}:{self.client_sidecar.listen_port}"

    @property
    def app_target(self) -> str:
        return f"{HOST}:{self.app_port}"

    @property
    def sidecars(self) -> tuple[Sidecar, Sidecar]:
        return self.client_sidecar, self.server_sidecar

    def channel(self, authority: str = PAYMENT_AUTHORITY) -> grpc.Channel:
        """A plain gRPC channel to the client sidecar, as the app opens it (``:authority`` = the service)."""
        return grpc.insecure_channel(self.target, options=api.channel_options(authority))

    def app_channel(self) -> grpc.Channel:
        """Straight to the payment server, past both sidecars (for reading its counters)."""
        return grpc.insecure_channel(self.app_target, options=api.channel_options())

    def server_stats(self) -> pb.ServerStats:
        with self.app_channel() as channel:
            return api.Stub(channel).GetServerStats(pb.ServerStatsRequest(), timeout=5)

    def identity(self) -> list[tuple[str, str]]:
        """The response headers every reply of this pair's server carries."""
        return [("x-payment-version", self.version), ("x-served-by", self.server_name)]

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        self.server.kill(sig)
        self.server.popen.wait(timeout=10)

    def start_server(self, *extra: str) -> ManagedProcess:
        """Start a payment server on the pair's app port (again, after a kill) and wait until it listens."""
        self._restarts += 1
        self.server = _start_server(self.group, self.app_port, self.server_name, self.version,
                                    suffix=f"-{self._restarts}", extra=extra)
        wait_for_port(HOST, self.app_port, timeout=START_TIMEOUT, proc=self.server.popen)
        return self.server

    def restart_sidecar(self, sidecar: Sidecar, timeout: float = START_TIMEOUT) -> Sidecar:
        """Start ``sidecar`` again after it died (same bootstrap and ports); wait until it is ready."""
        assert not sidecar.proc.alive(), f"{sidecar.name} is still running"
        self._restarts += 1
        proc = self.group.python(f"{sidecar.name}-{self._restarts}", "pyproxy", "-c", str(sidecar.bootstrap),
                                 "--drain-time-s", "5", *sidecar.extra_args)
        new = Sidecar(sidecar.name, proc, sidecar.listen_port, sidecar.admin_port, sidecar.bootstrap,
                      sidecar.extra_args)
        if sidecar is self.client_sidecar:
            self.client_sidecar = new
        else:
            self.server_sidecar = new
        _wait_ready(self, timeout)
        return new

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM everything, clients first (SIGKILL after ``grace`` seconds: no stream is in flight now).
        Logs stay readable; the process group closes them."""
        for proc in (self.client_sidecar.proc, self.server_sidecar.proc, self.server):
            terminate(proc, grace)

    def alive(self) -> bool:
        return all(s.proc.alive() for s in self.sidecars)

    def logs(self) -> str:
        return self.group.logs()


def terminate(proc: ManagedProcess, grace: float) -> int | None:
    """SIGTERM ``proc`` (by PID), SIGKILL after ``grace`` seconds; its exit status. Unlike
    ``ManagedProcess.stop`` this keeps its log open for :meth:`ProcessGroup.logs`."""
    if proc.alive():
        proc.kill(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill(signal.SIGKILL)
            proc.popen.wait(timeout=5)
    return proc.popen.returncode


def _start_server(group: ProcessGroup, port: int, name: str, version: str, *, suffix: str = "",
                  extra: Sequence[str] = ()) -> ManagedProcess:
    return group.python(f"payment-server{suffix}", "payment_service.server", "--version", version,
                        "--listen", f"{HOST}:{port}", "--name", name, "--workers", str(SERVER_WORKERS),
                        "--grace", "5", *extra)


def _start_sidecar(group: ProcessGroup, name: str, template: str, values: dict[str, object],
                   workdir: Path, extra_args: Sequence[str] = ()) -> Sidecar:
    listen_port, admin_port = int(str(values["LISTEN_PORT"])), int(str(values["ADMIN_PORT"]))
    bootstrap = render(BOOTSTRAPS / template, values, workdir / name)
    proc = group.python(name, "pyproxy", "-c", str(bootstrap), "--drain-time-s", "5", *extra_args)
    return Sidecar(name, proc, listen_port, admin_port, bootstrap, tuple(extra_args))


def _wait_ready(mesh: Mesh, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    wait_for_port(HOST, mesh.app_port, timeout=timeout, proc=mesh.server.popen)
    for sidecar in mesh.sidecars:
        while not sidecar.ready():
            if not sidecar.proc.alive():
                raise RuntimeError(f"{sidecar.name} exited with {sidecar.proc.popen.returncode}:\n"
                                   f"{sidecar.proc.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sidecar.name} not ready after {timeout}s:\n"
                                   f"{sidecar.proc.output()[-4000:]}")
            time.sleep(0.05)


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(HOST)
        if port not in ports:
            ports.append(port)
    return ports


def start_mesh(group: ProcessGroup, workdir: Path, version: str = "v1", start_server: bool = True,
               timeout: float = START_TIMEOUT, *, idle_timeout: str = "3600s",
               client_sidecar_args: Sequence[str] = (), server_sidecar_args: Sequence[str] = ()) -> Mesh:
    """Start payment-server (unless ``start_server`` is false: a backend that is down) and both sidecars.

    ``idle_timeout``: both sidecars' HCM ``common_http_protocol_options.idle_timeout``; ``*_sidecar_args``:
    more pyproxy flags (e.g. ``--config-yaml`` with a ``layered_runtime`` or an ``overload_manager``)."""
    ca = TestCA(workdir / "certs")
    ca.issue("payment", SERVER_SPIFFE_ID)
    ca.issue("payment-client", CLIENT_SPIFFE_ID)
    app_port, server_listen, server_admin, client_listen, client_admin, unreachable = _distinct_ports(6)
    server_name = f"payment-{version}-{app_port}"
    common = {"HOST": HOST, "CERTS": ca.directory, "IDLE_TIMEOUT": idle_timeout}
    server_sidecar = _start_sidecar(group, "server-sidecar", "server_sidecar.yaml", {
        **common, "LISTEN_PORT": server_listen, "ADMIN_PORT": server_admin, "APP_PORT": app_port,
        "TRUST_DOMAIN_PREFIX": TRUST_DOMAIN}, workdir, server_sidecar_args)
    client_sidecar = _start_sidecar(group, "client-sidecar", "client_sidecar.yaml", {
        **common, "LISTEN_PORT": client_listen, "ADMIN_PORT": client_admin,
        "SERVER_SIDECAR_PORT": server_listen, "UNREACHABLE_PORT": unreachable,
        "SERVER_SPIFFE_ID": SERVER_SPIFFE_ID}, workdir, client_sidecar_args)
    server = _start_server(group, app_port, server_name, version)
    mesh = Mesh(group, workdir, ca, app_port, client_sidecar, server_sidecar, server, server_name, version)
    _wait_ready(mesh, timeout)
    if not start_server:
        mesh.kill_server()
    return mesh


# ------------------------------------------------------------------------------------------- fixtures


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return bool(rep is not None and rep.failed)


@pytest.fixture(scope="module")
def shared_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    group = ProcessGroup(tmp_path_factory.mktemp("mesh"))
    try:
        started = start_mesh(group, group.workdir)
        yield started
        started.stop()
    finally:
        group.close()


@pytest.fixture
def mesh(shared_mesh: Mesh, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    """The module's pair; after the test, both sidecars must still be running (and logs shown on failure)."""
    yield shared_mesh
    if _failed(request):
        print(shared_mesh.logs())
    assert shared_mesh.alive(), f"a sidecar died during the test:\n{shared_mesh.logs()}"


@pytest.fixture
def fresh_mesh(procs: ProcessGroup) -> Iterator[Mesh]:
    """A pair of its own (its processes belong to the test's ``procs``, which prints the logs on failure)."""
    started = start_mesh(procs, procs.workdir)
    yield started
    started.stop()


# ----------------------------------------------------------------------------------- raw gRPC client

Header = tuple[bytes, bytes]


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return struct.pack(">BI", 0, len(message)) + message


@dataclass
class RawResponse:
    """What arrived on one stream, header blocks exactly as received (in order)."""

    header_blocks: list[list[Header]] = field(default_factory=list)
    end_stream_on_headers: list[bool] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    data_frames: int = 0
    ended: bool = False
    reset_code: int | None = None

    @property
    def trailers_only(self) -> bool:
        return len(self.header_blocks) == 1 and self.end_stream_on_headers == [True] and not self.data

    def last_block(self) -> dict[bytes, bytes]:
        return dict(self.header_blocks[-1]) if self.header_blocks else {}

    @property
    def grpc_status(self) -> int | None:
        value = self.last_block().get(b"grpc-status")
        return None if value is None else int(value)

    def messages(self) -> list[bytes]:
        out, data, offset = [], bytes(self.data), 0
        while offset < len(data):
            flag, length = struct.unpack_from(">BI", data, offset)
            assert flag == 0, "compressed message"
            out.append(data[offset + 5: offset + 5 + length])
            assert len(out[-1]) == length, f"truncated message: {len(out[-1])} of {length} bytes"
            offset += 5 + length
        return out


class RawGrpcClient:
    """One h2c connection; flow control is manual: received DATA is only acknowledged by :meth:`ack`."""

    def __init__(self, host: str, port: int, *, initial_window: int = 65535, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
                                   h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
        self.responses: dict[int, RawResponse] = {}
        self.unacked: dict[int, int] = {}
        self.goaway = False
        self._flush()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> RawGrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, method: str, message: bytes | None, *, authority: str = PAYMENT_AUTHORITY,
              metadata: Sequence[tuple[str, str]] = (), end_stream: bool = True) -> int:
        """Open a call to ``/payment.PaymentService/<method>``; send ``message`` (if any)."""
        sid = int(self.conn.get_next_available_stream_id())
        headers: list[Header] = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", authority.encode()),
            (b":path", api.path(method).encode()), (b"content-type", b"application/grpc"),
            (b"te", b"trailers")]
        headers += [(k.encode(), v.encode()) for k, v in metadata]
        self.responses[sid] = RawResponse()
        self.unacked[sid] = 0
        self.conn.send_headers(sid, headers, end_stream=message is None and end_stream)
        if message is not None:
            self.conn.send_data(sid, grpc_frame(message), end_stream=end_stream)
        self._flush()
        return sid

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self._flush()

    def ack(self, sid: int, n: int | None = None) -> None:
        """Return ``n`` (default: everything read so far) bytes of window on ``sid`` and the connection."""
        n = self.unacked[sid] if n is None else min(n, self.unacked[sid])
        if n:
            self.unacked[sid] -= n
            self.conn.acknowledge_received_data(n, sid)  # a closed stream: the connection window only
            self._flush()

    def pump(self, timeout: float) -> bool:
        """Read and process what arrives within ``timeout`` (one socket read); False when nothing came."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("connection closed by the proxy")
        for event in self.conn.receive_data(data):
            self._on_event(event)
        self._flush()
        return True

    def _on_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        resp = self.responses.get(sid)
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            assert resp is not None
            resp.header_blocks.append([(bytes(k), bytes(v)) for k, v in event.headers])
            resp.end_stream_on_headers.append(event.stream_ended is not None)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            assert resp is not None
            resp.header_blocks.append([(bytes(k), bytes(v)) for k, v in event.headers])
            resp.end_stream_on_headers.append(False)
        elif isinstance(event, h2.events.DataReceived):
            assert resp is not None
            resp.data += event.data
            resp.data_frames += 1
            self.unacked[sid] += event.flow_controlled_length
        elif isinstance(event, h2.events.StreamEnded) and resp is not None:
            resp.ended = True
        elif isinstance(event, h2.events.StreamReset) and resp is not None:
            resp.reset_code = int(event.error_code)
            resp.ended = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True

    def read_until(self, sid: int, predicate: Callable[[RawResponse], bool], timeout: float, *,
                   auto_ack: bool = True) -> RawResponse:
        """Read until ``predicate(response of sid)`` holds (acknowledging data as it comes unless ``auto_ack``
        is false); TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        resp = self.responses[sid]
        while not predicate(resp):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"stream {sid}: condition not met after {timeout}s: {resp.header_blocks}")
            self.pump(min(left, 0.5))
            if auto_ack:
                self.ack(sid)
        return resp

    def wait(self, sid: int, timeout: float, *, auto_ack: bool = True) -> RawResponse:
        """Read until stream ``sid`` ends."""
        return self.read_until(sid, lambda r: r.ended, timeout, auto_ack=auto_ack)


def raw_unary(port: int, method: str, message: bytes, *, authority: str = PAYMENT_AUTHORITY,
              metadata: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> RawResponse:
    """One call on a connection of its own; the whole response as received."""
    with RawGrpcClient(HOST, port, timeout=timeout) as client:
        sid = client.start(method, message, authority=authority, metadata=metadata)
        return client.wait(sid, timeout)


def pairs(metadata: Any) -> list[tuple[str, str | bytes]]:
    """grpcio metadata as a plain list of (key, value)."""
    return [(k, v) for k, v in metadata or ()]
