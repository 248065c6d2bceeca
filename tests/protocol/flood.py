"""Tools for the resource tests: send a bounded flood without reading, watch the target meanwhile.

- :func:`flood` writes pre-built chunks on a non-blocking socket until they are all sent, the peer
  closes, the peer stops reading (no progress for ``stall_seconds``), or ``max_seconds`` pass.
- :class:`TargetWatch` samples the target's RSS every 50 ms (peak over baseline) and, in another thread,
  keeps making well-behaved gRPC calls on fresh connections: the target must keep serving everyone else.
- :func:`drain` reads what the target sent afterwards, parsing frame headers only (cheap for 100k frames).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType

from tests.protocol.grpc_shapes import check_serving
from tests.protocol.h2peer import FrameType, code_name
from tests.protocol.targets import Target

RSS_LIMIT_MB = 64


class Outcome(Enum):
    COMPLETED = "all frames sent"
    CLOSED = "the peer closed the connection"
    STALLED = "the peer stopped reading"
    OUT_OF_TIME = "time budget used up"


@dataclass
class FloodResult:
    outcome: Outcome
    frames_sent: int
    bytes_sent: int
    seconds: float

    def __str__(self) -> str:
        sent = f"{self.frames_sent} frames / {self.bytes_sent} octets"
        return f"{self.outcome.value} after {sent} in {self.seconds:.2f}s"


def flood(
    sock: socket.socket,
    chunks: Iterable[tuple[bytes, int]],
    *,
    max_seconds: float = 5.0,
    stall_seconds: float = 1.5,
) -> FloodResult:
    """Send ``(chunk, frames_in_chunk)`` pairs without ever reading."""
    start = time.monotonic()
    frames = sent = 0
    sock.setblocking(False)
    try:
        for chunk, count in chunks:
            view = memoryview(chunk)
            last_progress = time.monotonic()
            while view:
                now = time.monotonic()
                if now - start > max_seconds:
                    return FloodResult(Outcome.OUT_OF_TIME, frames, sent, now - start)
                if now - last_progress > stall_seconds:
                    return FloodResult(Outcome.STALLED, frames, sent, now - start)
                try:
                    n = sock.send(view)
                except BlockingIOError:
                    select.select([], [sock], [], 0.05)
                    continue
                except OSError:
                    return FloodResult(Outcome.CLOSED, frames, sent, time.monotonic() - start)
                view = view[n:]
                sent += n
                last_progress = time.monotonic()
            frames += count
        return FloodResult(Outcome.COMPLETED, frames, sent, time.monotonic() - start)
    finally:
        sock.setblocking(True)


def chunked(frame_bytes: Iterable[bytes], per_chunk: int = 1000) -> Iterable[tuple[bytes, int]]:
    batch: list[bytes] = []
    for frame in frame_bytes:
        batch.append(frame)
        if len(batch) == per_chunk:
            yield b"".join(batch), len(batch)
            batch = []
    if batch:
        yield b"".join(batch), len(batch)


@dataclass
class Drained:
    frames: Counter[str] = field(default_factory=Counter)
    goaways: list[tuple[int, int]] = field(default_factory=list)  # (last_stream_id, error code)
    resets: list[tuple[int, int]] = field(default_factory=list)  # (stream id, error code)
    closed: bool = False

    @property
    def terminated(self) -> bool:
        """The connection was ended: closed, or a GOAWAY was sent."""
        return self.closed or bool(self.goaways)

    def __str__(self) -> str:
        goaway = ""
        if self.goaways:
            last, code = self.goaways[0]
            goaway = f" first GOAWAY(last_stream_id={last}, {code_name(code)}) of {len(self.goaways)}"
        return f"frames={dict(self.frames)}{goaway} resets={len(self.resets)} closed={self.closed}"


def drain(sock: socket.socket, seconds: float, already: bytes = b"") -> Drained:
    """Read for up to ``seconds`` (or until EOF), tallying frames by type from their headers."""
    out = Drained()
    buffer = bytearray(already)
    deadline = time.monotonic() + seconds
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            ftype, stream_id = buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            name = FrameType(ftype).name if ftype <= 9 else f"0x{ftype:x}"
            out.frames[name] += 1
            if ftype == FrameType.GOAWAY and length >= 8:
                out.goaways.append(struct.unpack(">II", buffer[9:17]))
            elif ftype == FrameType.RST_STREAM and length == 4:
                out.resets.append((stream_id, int.from_bytes(buffer[9:13], "big")))
            del buffer[: 9 + length]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 18)
        except TimeoutError:
            return out
        except OSError:
            out.closed = True
            return out
        if not chunk:
            out.closed = True
            return out
        buffer += chunk


class TargetWatch:
    """Peak RSS over the baseline and continuous health probes, while the ``with`` block runs."""

    def __init__(self, target: Target, probe_interval: float = 0.25) -> None:
        self.target = target
        self.probe_interval = probe_interval
        self.baseline_kb = target.rss_kb()
        self.peak_kb = self.baseline_kb
        self.probes_ok = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self.target.rss_kb()
            if rss is not None and self.peak_kb is not None:
                self.peak_kb = max(self.peak_kb, rss)
            self._stop.wait(0.05)

    def _probe(self) -> None:
        while not self._stop.is_set():
            problem = check_serving(self.target.host, self.target.port, timeout=5.0)
            if problem is None:
                self.probes_ok += 1
            else:
                self.problems.append(problem)
            self._stop.wait(self.probe_interval)

    @property
    def growth_mb(self) -> float | None:
        if self.baseline_kb is None or self.peak_kb is None:
            return None
        return (self.peak_kb - self.baseline_kb) / 1024

    def __enter__(self) -> TargetWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def assert_healthy(self, what: str) -> None:
        """Memory stayed under RSS_LIMIT_MB over the baseline; every probe made meanwhile succeeded."""
        assert not self.problems, f"during {what}, other clients were not served: {self.problems[0]}"
        assert self.probes_ok >= 1, f"no health probe completed during {what}"
        growth = self.growth_mb
        if growth is not None:
            assert growth < RSS_LIMIT_MB, (
                f"during {what}, the target's RSS grew by {growth:.1f} MB (limit {RSS_LIMIT_MB})"
            )
