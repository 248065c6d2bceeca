"""Issue 9.4 on a live mesh: 20,140 rapid resets (HTTP/2 HEADERS then RST_STREAM at once, CVE-2023-44487)
spread over 106 connections to the client's sidecar were relayed to the payment sidecars over the shared
upstream connections; their rapid-reset defence then cut those shared connections, failing legitimate calls
in flight on them (4 of 305).

Now premature resets are charged to the connection that made them, with Envoy's limits (250 premature
resets, or half of at least 500 streams, within a second of each stream's start): that connection gets a
GOAWAY (ENHANCE_YOUR_CALM) and is closed. A shared upstream connection that reaches the limit with its
clients' resets is drained gracefully instead of aborted: its streams in flight complete and the streams the
GOAWAY refused are retried (Istio's default retry policy covers refused-stream). No legitimate call fails.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hpack import Encoder
from hpack.struct import NeverIndexedHeaderTuple

from tests.support.live_mesh import AUTHORITY, Load, Mesh, failures, running_mesh, wait_until

pytestmark = pytest.mark.timeout(300)

SPREAD_CONNECTIONS = 106
RESETS_PER_CONNECTION = 190  # 20,140 in all, each connection under Envoy's per-connection limit (250)
CONCENTRATED_RESETS = 600  # one connection over the limit
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x1, 0x3, 0x4, 0x7
END_STREAM_AND_HEADERS = 0x5
CANCEL, ENHANCE_YOUR_CALM = 0x8, 0xB


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HBBBL", len(payload) >> 8, len(payload) & 0xFF, kind, flags, sid) + payload


# The request's header block, never indexed so that the same bytes are valid on every stream.
_BLOCK = Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in (
    (":method", "POST"), (":scheme", "http"), (":authority", AUTHORITY),
    (":path", "/payment.PaymentService/Charge"), ("content-type", "application/grpc"), ("te", "trailers"))])


class Attacker:
    """One raw HTTP/2 connection that opens requests and resets each one at once."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.next_sid = 1
        self.received = b""
        self.closed_by_peer = False

    def rapid_resets(self, n: int) -> None:
        out = []
        for _ in range(n):
            sid = self.next_sid
            self.next_sid += 2
            out.append(frame(HEADERS, END_STREAM_AND_HEADERS, sid, _BLOCK) + frame(RST_STREAM, 0, sid,
                                                                                     struct.pack(">L", CANCEL)))
        try:
            self.sock.sendall(b"".join(out))
        except OSError:
            self.closed_by_peer = True
        self.read_available()

    def read_available(self) -> bool:
        """Read what has arrived; whether the peer closed the connection."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.closed_by_peer = True
                    break
                self.received += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.closed_by_peer = True
        finally:
            self.sock.setblocking(True)
        return self.closed_by_peer

    def goaway_codes(self) -> list[int]:
        """Error codes of the GOAWAY frames received (the frames after the server's SETTINGS)."""
        codes, data, pos = [], self.received, 0
        while len(data) - pos >= 9:
            length = int.from_bytes(data[pos:pos + 3], "big")
            kind = data[pos + 3]
            if kind == GOAWAY and len(data) - pos - 9 >= 8:
                codes.append(struct.unpack_from(">L", data, pos + 13)[0])
            pos += 9 + length
        return codes

    def close(self) -> None:
        self.sock.close()


def counter(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not exported"
    return float(m.group(1))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, "rapid-reset", "--rps", "1", "--concurrency", "1") as m:
        yield m


def test_rapid_resets_are_charged_to_the_connection_that_made_them(mesh: Mesh) -> None:
    target = mesh.client_target()
    cut = "envoy_http_downstream_rq_too_many_premature_resets"
    before = {w: counter(mesh.prometheus(w), cut) for w in ("client", "payment-v1", "payment-v2")}
    with Load(target, rps=80, concurrency=8) as load:
        wait_until("50 calls before the attack", lambda: len(load.calls) >= 50, timeout=30)
        # 1. Spread: 106 connections, 190 rapid resets each, interleaved in rounds of 10.
        attackers = [Attacker(target) for _ in range(SPREAD_CONNECTIONS)]
        started = time.monotonic()
        try:
            for _ in range(RESETS_PER_CONNECTION // 10):
                for a in attackers:
                    a.rapid_resets(10)
            spread_s = time.monotonic() - started
            for a in attackers:
                a.read_available()
            assert not any(a.closed_by_peer for a in attackers), "a connection under the limit was closed"
        finally:
            for a in attackers:
                a.close()
        # 2. Concentrated: one connection over the limit is the one that gets the GOAWAY.
        concentrated = Attacker(target)
        try:
            for _ in range(CONCENTRATED_RESETS // 50):
                concentrated.rapid_resets(50)
                if concentrated.closed_by_peer:
                    break
            wait_until("the attacker's connection is closed", concentrated.read_available, timeout=10)
        finally:
            concentrated.close()
        after_attack = time.monotonic()
        wait_until("100 calls after the attack", lambda: load.started_since(after_attack) >= 100, timeout=30)
    assert ENHANCE_YOUR_CALM in concentrated.goaway_codes(), concentrated.goaway_codes()
    after = {w: counter(mesh.prometheus(w), cut) for w in before}
    calls = load.calls
    failed = failures(calls)
    shared_cut = sum(after[w] - before[w] for w in ("payment-v1", "payment-v2"))
    print(f"\n{SPREAD_CONNECTIONS * RESETS_PER_CONNECTION} rapid resets over {SPREAD_CONNECTIONS} connections "
          f"in {spread_s:.1f} s, then {CONCENTRATED_RESETS} on one: client sidecar GOAWAYs "
          f"{after['client'] - before['client']:.0f}; shared upstream connections drained by the payment sidecars "
          f"{shared_cut:.0f}; {len(failed)} of {len(calls)} legitimate calls failed "
          f"{sorted({c.status for c in failed})}")
    assert after["client"] - before["client"] >= 1
    assert not failed, [(c.status, c.version) for c in failed[:10]]
