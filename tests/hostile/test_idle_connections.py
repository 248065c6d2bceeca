"""Issue 9.7, reproduced: silent connections were kept forever (3,000 of them: RSS 64 -> 97 MB, not returned).

The attack, on the real sidecar pair: while a client makes gRPC calls through both sidecars, an attacker opens
connections that never send a byte to the client sidecar's outbound (h2c) listener and to the server sidecar's
inbound (mTLS) listener, up to their limits and past them. What must hold, with Envoy's semantics:

- the limit: the client sidecar's listener has the runtime limit
  ``envoy.resource_limits.listener.virtualOutbound.connection_limit``, the server sidecar the overload
  manager's global limit; connections over them are closed at once and counted (``downstream_cx_overflow``,
  ``downstream_global_cx_overflow``);
- the calls in flight go on: not one fails;
- the silent connections are closed by the HCM's ``idle_timeout`` (short here), which runs from the
  connection's creation, not earlier, and counted (``downstream_cx_idle_timeout``);
- the memory comes back: each sidecar's RSS after the attack is within :data:`RSS_TOLERANCE_KIB` of its RSS
  before it.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import HOST, Mesh, Sidecar, start_mesh
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.timeout(120)

LIMIT = 1000  # each sidecar's connection limit (per listener on the client sidecar, global on the server one)
EXTRA = 200  # connections past the limit
IDLE_S = 5.0  # both sidecars' HCM idle_timeout
# Before the fix, 1,000 silent connections held ~12 MB (h2c) / ~47 MB (mTLS) and kept most of it after they
# closed; now they hold ~0.25 MB and give it back. Measured after the attack: +0.3 to +1.0 MB over 5 runs
# (calls keep running meanwhile, and Python's allocator keeps some arenas). A tenth of the old per-connection
# cost of the h2c listener is more than a correct proxy ever keeps and less than any per-connection leak.
RSS_TOLERANCE_KIB = 4 * 1024


def _runtime_limit() -> str:
    return json.dumps({"layered_runtime": {"layers": [{"name": "limits", "static_layer": {
        "envoy.resource_limits.listener.virtualOutbound.connection_limit": LIMIT}}]}})


def _global_limit() -> str:
    return json.dumps({"overload_manager": {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections."
                                  "v3.DownstreamConnectionsConfig",
                         "max_active_downstream_connections": LIMIT}}]}})


@pytest.fixture
def limited_mesh(procs: ProcessGroup) -> Iterator[Mesh]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (LIMIT + EXTRA) + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open files limit ({hard}) is below the {needed} sockets this test opens")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = start_mesh(procs, procs.workdir, idle_timeout=f"{IDLE_S}s",
                         client_sidecar_args=("--config-yaml", _runtime_limit()),
                         server_sidecar_args=("--config-yaml", _global_limit()))
    try:
        yield started
        started.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def stats(sidecar: Sidecar) -> dict[str, int]:
    status, body = sidecar.admin("/stats")
    assert status == 200
    return {k: int(v) for k, v in (line.rsplit(": ", 1) for line in body.decode().splitlines())}


def stat(sidecar: Sidecar, suffix: str) -> int:
    """The one counter whose name ends with ``suffix`` (listener.<address>.X, http.<prefix>.X)."""
    found = [v for k, v in stats(sidecar).items() if k.endswith(suffix) and not k.startswith("cluster.")]
    assert len(found) == 1, (suffix, found)
    return found[0]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


class Caller(threading.Thread):
    """Unary calls one after the other through both sidecars until stopped; keeps every failure."""

    def __init__(self, mesh: Mesh) -> None:
        super().__init__(daemon=True)
        self.channel = mesh.channel()
        self.stub = api.Stub(self.channel)
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.stub.Charge(pb.ChargeRequest(customer_id="c", amount=1, currency="EUR"), timeout=5)
                self.ok += 1
            except grpc.RpcError as e:
                self.failures.append(e.code().name)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        self.channel.close()


def open_silent(port: int, n: int) -> list[tuple[socket.socket, float]]:
    out = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        out.append((s, time.monotonic()))
    return out


def wait_closed(socks: list[tuple[socket.socket, float]], timeout: float) -> list[float]:
    """Wait until the peer closed every socket (EOF or reset); each one's lifetime in seconds."""
    poller = select.poll()
    pending = {s.fileno(): (s, t) for s, t in socks}
    for s, _ in socks:
        poller.register(s, select.POLLIN)
    lifetimes = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            s, opened = pending.pop(fd)
            poller.unregister(fd)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            assert not data, f"a silent connection got {data[:40]!r}"
            lifetimes.append(time.monotonic() - opened)
    assert not pending, f"{len(pending)} of {len(socks)} silent connections still open after {timeout}s"
    return lifetimes


def test_silent_connections_are_limited_timed_out_and_their_memory_returned(limited_mesh: Mesh) -> None:
    mesh = limited_mesh
    client, server = mesh.client_sidecar, mesh.server_sidecar
    caller = Caller(mesh)
    caller.start()
    attack: list[tuple[socket.socket, float]] = []
    try:
        wait_for(lambda: caller.ok >= 200, 30, "200 calls before the attack")
        before = {s.name: s.rss_kib() for s in mesh.sidecars}
        targets = ((client, f"listener.{HOST}_{client.listen_port}.downstream_cx_active"),
                   (server, f"listener.{HOST}_{server.listen_port}.downstream_cx_active"))
        # Up to the limit (the caller's own connection counts: it is one of each listener's LIMIT)...
        silent: dict[str, list[tuple[socket.socket, float]]] = {}
        for sidecar, active in targets:
            silent[sidecar.name] = open_silent(sidecar.listen_port, LIMIT - stats(sidecar)[active])
            attack += silent[sidecar.name]
        for sidecar, active in targets:
            wait_for(lambda s=sidecar, a=active: stats(s)[a] == LIMIT, 10, f"{sidecar.name} at its limit")
        during = {s.name: s.rss_kib() for s in mesh.sidecars}
        # ... and past it: accepted and closed at once, counted.
        for sidecar, overflow in ((client, "downstream_cx_overflow"), (server, "downstream_global_cx_overflow")):
            over = open_silent(sidecar.listen_port, EXTRA)
            attack += over
            lifetimes = wait_closed(over, 5)
            assert max(lifetimes) < min(IDLE_S, 2.0), f"{sidecar.name}: over the limit but kept {max(lifetimes):.2f}s"
            assert stat(sidecar, f".{overflow}") == EXTRA
        # The silent ones: closed by the idle timeout, which runs from their creation (not before it fires).
        for sidecar in (client, server):
            lifetimes = wait_closed(silent[sidecar.name], IDLE_S + 10)
            assert min(lifetimes) >= IDLE_S - 0.05, f"{sidecar.name}: closed after {min(lifetimes):.2f}s"
            assert stat(sidecar, ".downstream_cx_idle_timeout") == len(silent[sidecar.name])
        assert caller.failures == [], caller.failures[:10]
        calls_during = caller.ok
    finally:
        for s, _ in attack:
            s.close()
        caller.finish()
    assert caller.failures == [], caller.failures[:10]
    assert calls_during >= 200
    # The memory: back near where it was (what the sidecars hold now is what they held before the attack).
    after = {s.name: s.rss_kib() for s in mesh.sidecars}
    for name, rss_before in before.items():
        assert after[name] - rss_before <= RSS_TOLERANCE_KIB, (name, rss_before, during[name], after[name])
    print("\nRSS KiB before / at the limit / after: "
          + "; ".join(f"{n} {before[n]} / {during[n]} / {after[n]}" for n in before)
          + f"; {calls_during} calls, 0 failures")
