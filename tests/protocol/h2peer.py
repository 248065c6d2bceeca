"""A small synchronous HTTP/2 client that can say anything, for conformance and hostile-peer tests.

:class:`H2Peer` talks to a server over a plain blocking socket. Frames are built with ``hyperframe`` (or as
raw bytes when the frame must be illegal, which hyperframe refuses to build), header blocks with ``hpack``.
Nothing is validated on the way out: that is the point.

Reading is what h2spec's ``spec.Conn`` does: :meth:`H2Peer.read_event` returns the next frame, or
:class:`Closed` (EOF / reset), or :class:`TimedOut`. Side effects of reading mirror h2spec so that its cases
port one to one: DATA is accounted and the window is replenished only once 65,535 octets have been consumed
(h2spec's ``updateWindowSize``), response header blocks are decoded (HPACK state stays consistent), and the
server's SETTINGS are recorded and acknowledged.

The ``expect_*`` helpers are h2spec's verifiers (``spec/verifier.go``): they read until a verdict or until the
deadline, which bounds every wait. One deliberate difference: a GOAWAY or RST_STREAM carrying an error code
other than the expected ones fails at once, where h2spec keeps reading and would accept the connection
closing afterwards. Set ``H2SPEC_LENIENT=1`` to get h2spec's exact behaviour.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

DEFAULT_TIMEOUT = float(os.environ.get("H2_TIMEOUT", "2.0"))
LENIENT = os.environ.get("H2SPEC_LENIENT", "") == "1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME_SIZE = 16384

Header = tuple[str | bytes, str | bytes]


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"


@dataclass(frozen=True, slots=True)
class Closed:
    """The server closed the connection (EOF or reset). ``trailing`` holds bytes that never formed a frame."""

    reason: str
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class TimedOut:
    pass


@dataclass(frozen=True, slots=True)
class ReadError:
    """Bytes from the server that do not parse as an HTTP/2 frame."""

    error: str


Event = Frame | Closed | TimedOut | ReadError


class Verdict(Enum):
    PASS = "pass"
    FAIL = "fail"
    CONTINUE = "continue"


class ExpectationError(AssertionError):
    """h2spec's TestError: what was expected, what came instead, and what was seen on the way."""

    def __init__(self, expected: Sequence[str], actual: Event, seen: Sequence[Event]) -> None:
        lines = ["Expected: " + expected[0], *("          " + e for e in expected[1:])]
        lines.append("  Actual: " + describe(actual))
        if seen:
            lines.append("Received before: " + "; ".join(describe(e) for e in seen[-12:]))
        super().__init__("\n".join(lines))


def describe(event: Event) -> str:
    """A one-line rendering of an event, in h2spec's vocabulary."""
    if isinstance(event, Closed):
        extra = f", {len(event.trailing)} unparsed bytes {event.trailing[:24]!r}" if event.trailing else ""
        return f"Connection closed ({event.reason}{extra})"
    if isinstance(event, TimedOut):
        return "Timeout"
    if isinstance(event, ReadError):
        return f"Unparsable bytes ({event.error})"
    name = FrameType(event.type).name if event.type is not None and event.type <= 9 else f"type=0x{event.type:x}"
    flags = ",".join(sorted(event.flags)) or "-"
    base = f"{name} Frame (stream_id:{event.stream_id}, flags:{flags}"
    if isinstance(event, GoAwayFrame):
        error, debug = code_name(event.error_code), event.additional_data[:60]
        return f"{base}, last_stream_id:{event.last_stream_id}, error:{error}, debug:{debug!r})"
    if isinstance(event, RstStreamFrame):
        return f"{base}, error:{code_name(event.error_code)})"
    if isinstance(event, DataFrame):
        return f"{base}, length:{len(event.data)})"
    if isinstance(event, PingFrame):
        return f"{base}, opaque_data:{event.opaque_data!r})"
    if isinstance(event, SettingsFrame):
        return f"{base}, settings:{event.settings})"
    if isinstance(event, WindowUpdateFrame):
        return f"{base}, increment:{event.window_increment})"
    decoded = getattr(event, "decoded_headers", None)
    if decoded is not None:
        return f"{base}, headers:{decoded})"
    return base + ")"


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """Any frame, legal or not. ``length`` overrides the length field (to lie about the payload size)."""
    size = len(payload) if length is None else length
    return struct.pack(">I", size)[1:] + struct.pack(">BBI", frame_type, flags, stream_id) + payload


def hpack_integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    """RFC 7541 5.1 integer representation, for hand-made HPACK representations."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(slots=True)
class StreamRecord:
    """What the server sent on one stream."""

    header_blocks: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


class H2Peer:
    """One client connection. Use as a context manager or call :meth:`close`."""

    def __init__(self, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT, rcvbuf: int | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.server_settings: dict[int, int] = {}
        self.streams: dict[int, StreamRecord] = {}
        self.goaway: GoAwayFrame | None = None
        self.closed: Closed | None = None
        self.send_error: OSError | None = None
        self.auto_window_update = True
        self._buffer = bytearray()
        self._window: dict[int, int] = {0: DEFAULT_WINDOW}
        self._header_block: tuple[int, bytearray, Frame] | None = None

    # ------------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def max_frame_size(self) -> int:
        return self.server_settings.get(Setting.MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE)

    def unread(self) -> bytes:
        """Bytes received but not yet parsed into a frame (to hand over to another reader)."""
        return bytes(self._buffer)

    def stream(self, stream_id: int) -> StreamRecord:
        return self.streams.setdefault(stream_id, StreamRecord())

    # ------------------------------------------------------------------------------------------- sending

    def send(self, data: bytes) -> None:
        """Write bytes; like h2spec, a failed write is remembered, not raised (reading gives the verdict)."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.send_error = self.send_error or exc

    def send_frame(self, frame: Frame) -> None:
        self.send(frame.serialize())

    def send_preface(self, settings: dict[int, int] | None = None) -> None:
        self.send(
            PREFACE
            + SettingsFrame(0, settings={Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW, **(settings or {})}).serialize()
        )

    def handshake(self, settings: dict[int, int] | None = None) -> None:
        """h2spec's ``handshakeAsClient``: preface + SETTINGS, then wait for the server's SETTINGS and ACK."""
        self.send_preface(settings)
        got_settings = got_ack = False
        deadline = time.monotonic() + self.timeout
        while not (got_settings and got_ack):
            event = self.read_event(deadline - time.monotonic())
            if isinstance(event, SettingsFrame):
                if "ACK" in event.flags:
                    got_ack = True
                else:
                    got_settings = True
            elif isinstance(event, Closed | TimedOut | ReadError):
                raise ExpectationError(["SETTINGS Frame and SETTINGS ACK (handshake)"], event, [])

    def encode_headers(self, headers: Iterable[Header], *, huffman: bool = True, index: bool = True) -> bytes:
        """HPACK-encode with this connection's encoder. ``index=False`` never touches the dynamic table."""
        if index:
            return self.encoder.encode(list(headers), huffman=huffman)
        return self.encoder.encode([(n, v, True) for n, v in headers], huffman=huffman)

    def send_headers(
        self,
        stream_id: int,
        headers: Iterable[Header] | bytes,
        *,
        end_stream: bool = False,
        end_headers: bool = True,
        pad_length: int | None = None,
        priority: tuple[int, int, bool] | None = None,
    ) -> None:
        """A HEADERS frame; ``priority`` is (depends_on, weight byte, exclusive)."""
        block = headers if isinstance(headers, bytes) else self.encode_headers(headers)
        flags = [f for f, on in (("END_STREAM", end_stream), ("END_HEADERS", end_headers)) if on]
        frame = HeadersFrame(stream_id, block, flags=flags)
        if pad_length is not None:
            frame.flags.add("PADDED")
            frame.pad_length = pad_length
        if priority is not None:
            frame.flags.add("PRIORITY")
            frame.depends_on, frame.stream_weight, frame.exclusive = priority
        self.send_frame(frame)

    def send_continuation(self, stream_id: int, headers: Iterable[Header] | bytes, *, end_headers: bool = True) -> None:
        block = headers if isinstance(headers, bytes) else self.encode_headers(headers)
        if stream_id == 0:
            self.send(raw_frame(FrameType.CONTINUATION, 0x4 if end_headers else 0, 0, block))
            return
        self.send_frame(ContinuationFrame(stream_id, block, flags=["END_HEADERS"] if end_headers else []))

    def send_header_block(self, stream_id: int, block: bytes, *, end_stream: bool = False) -> None:
        """A header block of any size, split into HEADERS + CONTINUATION frames of the server's max size."""
        size = self.max_frame_size
        chunks = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
        self.send_headers(stream_id, chunks[0], end_stream=end_stream, end_headers=len(chunks) == 1)
        for i, chunk in enumerate(chunks[1:], start=2):
            self.send_continuation(stream_id, chunk, end_headers=i == len(chunks))

    def send_data(
        self, stream_id: int, data: bytes, *, end_stream: bool = False, pad_length: int | None = None
    ) -> None:
        frame = DataFrame(stream_id, data, flags=["END_STREAM"] if end_stream else [])
        if pad_length is not None:
            frame.flags.add("PADDED")
            frame.pad_length = pad_length
        self.send_frame(frame)

    def send_settings(self, settings: dict[int, int] | None = None, *, ack: bool = False) -> None:
        self.send_frame(SettingsFrame(0, settings=settings or {}, flags=["ACK"] if ack else []))

    def send_ping(self, data: bytes = b"\0" * 8, *, ack: bool = False) -> None:
        self.send_frame(PingFrame(0, data, flags=["ACK"] if ack else []))

    def send_priority(self, stream_id: int, depends_on: int = 0, weight: int = 255, exclusive: bool = False) -> None:
        payload = struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight)
        self.send(raw_frame(FrameType.PRIORITY, 0, stream_id, payload))

    def send_rst_stream(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        self.send(raw_frame(FrameType.RST_STREAM, 0, stream_id, struct.pack(">I", code)))

    def send_window_update(self, stream_id: int, increment: int) -> None:
        self.send(raw_frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment)))

    def send_goaway(self, last_stream_id: int = 0, code: int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        self.send(raw_frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug))

    # ------------------------------------------------------------------------------------------- receiving

    def read_event(self, timeout: float | None = None) -> Event:
        """The next frame, or Closed / TimedOut / ReadError. Never blocks past ``timeout`` seconds."""
        if self.closed is not None:
            return self.closed
        deadline = time.monotonic() + (self.timeout if timeout is None else max(timeout, 0.0))
        while True:
            if len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 9 + length:
                    return self._parse_frame(length)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TimedOut()
            try:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                return TimedOut()
            except OSError as exc:
                return self._mark_closed(f"{type(exc).__name__}: {exc}")
            if not chunk:
                return self._mark_closed("EOF")
            self._buffer += chunk

    def _mark_closed(self, reason: str) -> Closed:
        self.closed = Closed(reason, bytes(self._buffer))
        self._buffer.clear()
        return self.closed

    def _parse_frame(self, length: int) -> Event:
        header, body = bytes(self._buffer[:9]), bytes(self._buffer[9 : 9 + length])
        del self._buffer[: 9 + length]
        try:
            frame, _ = Frame.parse_frame_header(memoryview(header))
            frame.parse_body(memoryview(body))
        except Exception as exc:  # any parse failure of the server's bytes is the server's fault
            return ReadError(f"{type(exc).__name__}: {exc}; header={header.hex()}")
        self._on_frame(frame)
        return frame

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            record = self.stream(frame.stream_id)
            record.data += frame.data
            record.ended |= "END_STREAM" in frame.flags
            self._account(frame.stream_id, frame.flow_controlled_length)
        elif isinstance(frame, HeadersFrame | ContinuationFrame):
            self._on_header_fragment(frame)
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = frame.error_code
        elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.server_settings.update(frame.settings)
            self.send_settings(ack=True)
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send_ping(frame.opaque_data, ack=True)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame

    def _on_header_fragment(self, frame: HeadersFrame | ContinuationFrame) -> None:
        if isinstance(frame, HeadersFrame):
            self._header_block = (frame.stream_id, bytearray(frame.data), frame)
        elif self._header_block is not None:
            self._header_block[1].extend(frame.data)
        if "END_HEADERS" not in frame.flags or self._header_block is None:
            return
        stream_id, block, first = self._header_block
        self._header_block = None
        record = self.stream(stream_id)
        try:
            decoded = [(str(n), str(v)) for n, v in self.decoder.decode(bytes(block))]
        except Exception as exc:  # the server's HPACK is broken: keep a marker the checks will trip on
            decoded = [(":decode-error", f"{type(exc).__name__}: {exc}")]
        record.header_blocks.append(decoded)
        setattr(first, "decoded_headers", decoded)  # noqa: B010 - an ad-hoc attribute for describe()
        setattr(frame, "decoded_headers", decoded)  # noqa: B010
        record.ended |= "END_STREAM" in first.flags

    def _account(self, stream_id: int, length: int) -> None:
        """h2spec's updateWindowSize: replenish a window only once it is used up."""
        if not self.auto_window_update or length == 0:
            return
        for sid in (stream_id, 0):
            window = self._window.get(sid, DEFAULT_WINDOW) - length
            if window <= 0:
                increment = DEFAULT_WINDOW - window
                self.send_window_update(sid, increment)
                window += increment
            self._window[sid] = window

    # ------------------------------------------------------------------------------------------- verdicts

    def wait(self, judge: Callable[[Event], Verdict], expected: Sequence[str], timeout: float | None = None) -> Event:
        """Read until ``judge`` passes (return the event) or fails / the deadline passes (raise)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen: list[Event] = []
        while True:
            event = self.read_event(deadline - time.monotonic())
            verdict = judge(event)
            if verdict is Verdict.PASS:
                return event
            if verdict is Verdict.FAIL or isinstance(event, Closed | TimedOut | ReadError):
                raise ExpectationError(expected, event, seen)
            seen.append(event)

    @staticmethod
    def _code_verdict(code: int, codes: Sequence[int]) -> Verdict:
        if code in codes:
            return Verdict.PASS
        return Verdict.CONTINUE if LENIENT else Verdict.FAIL

    def expect_connection_error(self, *codes: int, timeout: float | None = None) -> Event:
        """h2spec VerifyConnectionError: GOAWAY with one of ``codes``, or the connection closed."""

        def judge(ev: Event) -> Verdict:
            if isinstance(ev, Closed):
                return Verdict.PASS
            if isinstance(ev, GoAwayFrame):
                return self._code_verdict(ev.error_code, codes)
            return Verdict.CONTINUE

        names = [f"GOAWAY Frame (Error Code: {code_name(c)})" for c in codes]
        return self.wait(judge, [*names, "Connection closed"], timeout)

    def expect_stream_error(self, *codes: int, stream_id: int | None = None, timeout: float | None = None) -> Event:
        """h2spec VerifyStreamError: RST_STREAM or GOAWAY with one of ``codes``, or the connection closed."""

        def judge(ev: Event) -> Verdict:
            if isinstance(ev, Closed):
                return Verdict.PASS
            if isinstance(ev, GoAwayFrame):
                return self._code_verdict(ev.error_code, codes)
            if isinstance(ev, RstStreamFrame) and (stream_id is None or ev.stream_id == stream_id):
                return self._code_verdict(ev.error_code, codes)
            return Verdict.CONTINUE

        names = [f"{kind} Frame (Error Code: {code_name(c)})" for c in codes for kind in ("GOAWAY", "RST_STREAM")]
        return self.wait(judge, [*names, "Connection closed"], timeout)

    def expect_connection_closed(self, timeout: float | None = None) -> Event:
        """h2spec VerifyConnectionClose: the server closes the TCP connection (a GOAWAY first is fine)."""
        return self.wait(
            lambda ev: Verdict.PASS if isinstance(ev, Closed) else Verdict.CONTINUE,
            ["Connection closed"],
            timeout,
        )

    def expect_stream_close(self, stream_id: int, timeout: float | None = None) -> Event:
        """h2spec VerifyStreamClose: END_STREAM on DATA or HEADERS, or RST_STREAM(NO_ERROR)."""

        def judge(ev: Event) -> Verdict:
            if isinstance(ev, DataFrame | HeadersFrame) and ev.stream_id == stream_id and self.stream(stream_id).ended:
                return Verdict.PASS
            if isinstance(ev, RstStreamFrame) and ev.stream_id == stream_id:
                return Verdict.PASS if ev.error_code == ErrorCode.NO_ERROR else Verdict.FAIL
            return Verdict.CONTINUE

        return self.wait(judge, [f"Stream {stream_id} closed"], timeout)

    def expect_frame(self, frame_type: int, *, stream_id: int | None = None, timeout: float | None = None) -> Frame:
        """h2spec VerifyEventType / WaitEventByType: the first frame of ``frame_type`` (others skipped)."""

        def judge(ev: Event) -> Verdict:
            if isinstance(ev, Frame) and ev.type == frame_type:
                return Verdict.PASS if stream_id is None or ev.stream_id == stream_id else Verdict.FAIL
            return Verdict.CONTINUE

        where = "" if stream_id is None else f" (stream_id:{stream_id})"
        event = self.wait(judge, [f"{FrameType(frame_type).name} Frame{where}"], timeout)
        assert isinstance(event, Frame)
        return event

    def expect_headers(self, stream_id: int, timeout: float | None = None) -> Frame:
        """h2spec VerifyHeadersFrame: the next HEADERS frame is on ``stream_id``."""
        return self.expect_frame(FrameType.HEADERS, stream_id=stream_id, timeout=timeout)

    def expect_settings_ack(self, timeout: float | None = None) -> Frame:
        """h2spec VerifySettingsFrameWithAck: the next SETTINGS frame carries ACK."""

        def judge(ev: Event) -> Verdict:
            if isinstance(ev, SettingsFrame):
                return Verdict.PASS if "ACK" in ev.flags else Verdict.FAIL
            return Verdict.CONTINUE

        event = self.wait(judge, ["SETTINGS Frame (length:0, flags:ACK, stream_id:0)"], timeout)
        assert isinstance(event, Frame)
        return event

    def expect_ping_ack(self, data: bytes, *, or_closed: bool = False, timeout: float | None = None) -> Event:
        """h2spec VerifyPingFrameWithAck (``or_closed``: VerifyPingFrameOrConnectionClose).

        A PING the server starts itself (no ACK) is skipped; an ACK carrying other data fails.
        """

        def judge(ev: Event) -> Verdict:
            if or_closed and isinstance(ev, Closed):
                return Verdict.PASS
            if isinstance(ev, PingFrame) and "ACK" in ev.flags:
                return Verdict.PASS if ev.opaque_data == data else Verdict.FAIL
            return Verdict.CONTINUE

        expected = [f"PING Frame (length:8, flags:ACK, stream_id:0, opaque_data:{data!r})"]
        return self.wait(judge, [*expected, "Connection closed"] if or_closed else expected, timeout)

    def expect_data(self, stream_id: int, length: int, timeout: float | None = None) -> Frame:
        """The first DATA frame (on any stream, as h2spec waits) is on ``stream_id`` with ``length``."""
        frame = self.expect_frame(FrameType.DATA, timeout=timeout)
        assert isinstance(frame, DataFrame)
        if frame.stream_id != stream_id or len(frame.data) != length:
            raise ExpectationError([f"DATA Frame (length:{length}, stream_id:{stream_id})"], frame, [])
        return frame
