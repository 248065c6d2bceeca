"""A sans-IO HTTP/2 connection (RFC 9113) for both ends of a proxy: bytes in -> events, calls -> bytes out.

Why not the ``h2`` library on the hot path: measured on this machine, h2's state machine costs ~200-240 us per
unary request for both ends of a connection, and a sidecar pays for two ends per request (downstream server +
upstream client), so a pair of sidecars would spend ~450 us of pure-Python CPU in h2 alone, more than half of
the per-request budget the project sets (8x nginx). This engine does the same protocol work with table-driven
dispatch, ``bytes`` headers and no per-frame objects beyond the events, and keeps every check the RFC requires
of untrusted input (frame sizes, stream states, flow control, HPACK, header field and pseudo-header rules,
content-length, flood limits). ``h2`` remains the reference peer in the protocol tests.

Errors: a *connection error* queues GOAWAY, marks the connection closed and reports
:class:`ConnectionTerminated` (``local=True``); a *stream error* queues RST_STREAM and reports
:class:`StreamReset` (``remote=False``). Nothing raises out of :meth:`receive_data` for bad peer input.
Misuse by the caller (sending on a closed stream, beyond the window) raises :class:`StreamStateError`.
Where RFC 9113 lets the receiver choose between a stream and a connection error, the engine does what h2spec
accepts (comments at each such place); ``tests/unit/http2`` checks every rule against raw frames and ``h2``.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from time import monotonic

from pyproxy.http2 import frames as fr
from pyproxy.http2.events import (
    INFORMATIONAL,
    REQUEST,
    RESPONSE,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    Event,
    HeaderListTooLarge,
    HeadersReceived,
    PingAcknowledged,
    RemoteSettingsChanged,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import ErrorCode, Setting
from pyproxy.http2.hpack import Decoder, Encoder, Header, HpackError
from pyproxy.http2.hpack import HeaderListTooLarge as _HpackTooLarge

_FRAME_HEAD = struct.Struct(">HBBBL")
_UINT32 = struct.Struct(">L")
_PRIORITY = struct.Struct(">LB")
_SETTING = struct.Struct(">HL")

# Connection-specific fields (RFC 9113 8.2.2) plus ``te``, allowed only as "trailers": one set lookup per field.
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                  b"upgrade", b"te"})
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9113 8.2.1: no 0x00-0x20, 0x41-0x5a (upper case), 0x7f-0xff, and no ':' outside pseudo-header names.
_BAD_NAME = re.compile(rb"[^\x21-\x39\x3b-\x40\x5b-\x7e]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_MAX_CLOSED_REMEMBERED = 2048
# A header block (HEADERS + CONTINUATION) may not grow beyond this many octets, each CONTINUATION frame
# counting its 9-octet frame header too, so that floods of empty frames are bounded like large ones.
_MIN_HEADER_BLOCK_LIMIT = 256 * 1024
# Stream.content_length markers besides -1 (no content-length): a HEAD request was sent (client side).
_HEAD_REQUEST = -2

# Closed-stream reasons remembered for late frames.
_ENDED = 0  # both sides sent END_STREAM
_RESET_BY_US = 1  # we sent RST_STREAM: late frames are ignored
_RESET_BY_PEER = 2


class StreamStateError(Exception):
    """The caller tried something the stream's state does not allow (a bug in the caller, not the peer)."""


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class _StreamError(Exception):
    def __init__(self, stream_id: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


class Stream:
    __slots__ = ("content_length", "id", "inbound_window", "opened_at", "outbound_window", "received_bytes",
                 "recv_closed", "recv_headers", "send_closed", "send_headers", "unacked")

    def __init__(self, stream_id: int, inbound_window: int, outbound_window: int) -> None:
        self.id = stream_id
        self.opened_at = 0.0  # server side: when the peer opened it (premature-reset accounting)
        self.inbound_window = inbound_window  # what the peer may still send us
        self.outbound_window = outbound_window  # what we may still send
        self.unacked = 0  # consumed by the application, not yet returned with WINDOW_UPDATE
        self.recv_headers = False  # initial (final) headers received
        self.send_headers = False
        self.recv_closed = False
        self.send_closed = False
        self.content_length = -1
        self.received_bytes = 0


class H2Settings:
    """Our side's settings and limits for one connection (from Http2ProtocolOptions)."""

    __slots__ = ("header_table_size", "initial_connection_window", "initial_window", "max_concurrent_streams",
                 "max_consecutive_empty_frames", "max_frame_size", "max_header_list_size",
                 "max_priority_per_stream", "max_window_updates_per_data", "premature_reset_min_stream_lifetime",
                 "premature_reset_total_stream_count")

    def __init__(self, *, max_concurrent_streams: int = 2**31 - 1, initial_window: int = 1 << 20,
                 initial_connection_window: int = 16 << 20, max_header_list_size: int = 60 * 1024,
                 max_frame_size: int = fr.DEFAULT_MAX_FRAME_SIZE, header_table_size: int = 4096,
                 max_consecutive_empty_frames: int = 1, max_priority_per_stream: int = 100,
                 max_window_updates_per_data: int = 10, premature_reset_total_stream_count: int = 500,
                 premature_reset_min_stream_lifetime: float = 1.0) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window = min(initial_window, fr.MAX_WINDOW)
        # The connection window starts at 65,535 whatever SETTINGS say (RFC 9113 6.9.2); we can only grow it.
        self.initial_connection_window = min(max(initial_connection_window, fr.DEFAULT_WINDOW), fr.MAX_WINDOW)
        self.max_header_list_size = max_header_list_size
        self.max_frame_size = max_frame_size
        self.header_table_size = header_table_size
        self.max_consecutive_empty_frames = max_consecutive_empty_frames
        self.max_priority_per_stream = max_priority_per_stream
        # Envoy's rapid-reset (CVE-2023-44487) limits, runtime keys overload.premature_reset_total_stream_count
        # and overload.premature_reset_min_stream_lifetime_seconds: see H2Connection._on_rst_stream.
        self.premature_reset_total_stream_count = premature_reset_total_stream_count
        self.premature_reset_min_stream_lifetime = premature_reset_min_stream_lifetime
        self.max_window_updates_per_data = max_window_updates_per_data


class H2Connection:
    """One HTTP/2 connection, either side. Feed bytes with :meth:`receive_data`, collect output with
    :meth:`data_to_send`."""

    def __init__(self, client_side: bool, settings: H2Settings | None = None) -> None:
        self.client_side = client_side
        self.local = settings or H2Settings()
        self.streams: dict[int, Stream] = {}
        self._closed_streams: OrderedDict[int, int] = OrderedDict()
        self._out: list[bytes] = []
        self._buf = b""
        self._preface_pending = not client_side  # server waits for the client preface
        self._settings_received = False
        self._encoder = Encoder()
        self._decoder = Decoder(self.local.max_header_list_size)
        # Our SETTINGS bind the peer only once it has seen them, i.e. when its ACK arrives (RFC 9113 6.5.3):
        # until then we accept what the defaults allow when they are more generous than our values.
        self._local_settings_acked = False
        self._decoder.max_allowed_table_size = max(self.local.header_table_size, 4096)
        self._stream_recv_window = max(self.local.initial_window, fr.DEFAULT_WINDOW)
        # Peer's settings (defaults until its SETTINGS frame arrives).
        self.remote_max_concurrent_streams = 2**31 - 1
        self.remote_initial_window = fr.DEFAULT_WINDOW
        self.remote_max_frame_size = fr.DEFAULT_MAX_FRAME_SIZE
        self.remote_enable_push = 1
        # Connection-level flow control.
        self.outbound_window = fr.DEFAULT_WINDOW
        self.inbound_window = self.local.initial_connection_window
        self._conn_unacked = 0
        # Stream ids.
        self._next_stream_id = 1 if client_side else 2
        self.highest_remote_stream_id = 0
        self.open_remote_streams = 0  # peer-initiated streams counted against our max concurrency
        self.open_local_streams = 0
        # Header block being assembled across CONTINUATION frames: (stream_id, end_stream, fragments).
        self._continuation: tuple[int, bool, list[bytes]] | None = None
        self._continuation_size = 0
        self._self_dependent = False
        # Shutdown.
        self.closed = False  # no more frames in or out (after a connection error or GOAWAY fully done)
        self.goaway_sent_last_id: int | None = None
        self.goaway_received_last_id: int | None = None
        # Flood protection counters.
        self._empty_frames = 0
        self._priority_frames = 0
        self._window_update_frames = 0
        self._data_frames_sent = 0
        self._local_streams_opened = 0
        self._premature_resets = 0
        self.premature_reset_goaway = False  # the rapid-reset limit was reached (see _premature_reset)
        self._streams_opened = 0

    # ------------------------------------------------------------------------------------- setup

    def initiate_connection(self) -> None:
        """Queue the preface (client) and our SETTINGS, plus a connection WINDOW_UPDATE if configured."""
        s = self.local
        settings: dict[int, int] = {
            Setting.MAX_CONCURRENT_STREAMS: min(s.max_concurrent_streams, 2**31 - 1),
            Setting.INITIAL_WINDOW_SIZE: s.initial_window,
            Setting.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
        }
        if self.client_side:
            settings[Setting.ENABLE_PUSH] = 0
            self._out.append(fr.PREFACE)
        if s.max_frame_size != fr.DEFAULT_MAX_FRAME_SIZE:
            settings[Setting.MAX_FRAME_SIZE] = s.max_frame_size
        if s.header_table_size != 4096:
            settings[Setting.HEADER_TABLE_SIZE] = s.header_table_size
        self._out.append(fr.settings_frame(settings))
        extra = s.initial_connection_window - fr.DEFAULT_WINDOW
        if extra > 0:
            self._out.append(fr.window_update_frame(0, extra))

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        return data

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    # ------------------------------------------------------------------------------------- sending

    def get_next_stream_id(self) -> int:
        return self._next_stream_id

    def can_open_stream(self) -> bool:
        return (not self.closed and self.goaway_received_last_id is None
                and self.open_local_streams < self.remote_max_concurrent_streams
                and self._next_stream_id < 2**31)

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if not self.client_side or stream_id != self._next_stream_id:
                raise StreamStateError(f"cannot open stream {stream_id}")
            stream = Stream(stream_id, self._stream_recv_window, self.remote_initial_window)
            self.streams[stream_id] = stream
            self._next_stream_id += 2
            self.open_local_streams += 1
            self._local_streams_opened += 1
            for name, value in headers:  # :method comes first: one iteration
                if name == b":method":
                    if value == b"HEAD":
                        stream.content_length = _HEAD_REQUEST
                    break
        elif stream.send_closed:
            raise StreamStateError(f"stream {stream_id} is closed for sending")
        stream.send_headers = True
        block = self._encoder.encode(headers)
        self._out.append(fr.headers_frames(stream_id, block, end_stream, self.remote_max_frame_size))
        if end_stream:
            self._close_send(stream)

    def max_send(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on ``stream_id`` now (both flow-control windows)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.send_closed:
            return 0
        w = stream.outbound_window
        w = min(w, self.outbound_window)
        return w if w > 0 else 0  # a stream window can be negative after SETTINGS_INITIAL_WINDOW_SIZE shrank

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.send_closed:
            raise StreamStateError(f"stream {stream_id} is closed for sending")
        n = len(data)
        if n:
            if n > stream.outbound_window or n > self.outbound_window:
                raise StreamStateError(f"{n} bytes exceed the flow-control window on stream {stream_id}")
            stream.outbound_window -= n
            self.outbound_window -= n
        self._out.append(fr.data_frames(stream_id, data, end_stream, self.remote_max_frame_size))
        self._data_frames_sent += 1 + (n - 1) // self.remote_max_frame_size if n else 1
        if end_stream:
            self._close_send(stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        """Send RST_STREAM (no-op if the stream is already closed)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        self._out.append(fr.rst_stream_frame(stream_id, code))
        self._forget(stream, _RESET_BY_US)

    def acknowledge_received_data(self, n: int, stream_id: int) -> None:
        """Return ``n`` flow-controlled bytes to the peer, on the connection and on the stream (call once they
        have been forwarded). A proxy that buffers returns the connection's share on receipt
        (:meth:`acknowledge_connection`) and the stream's once forwarded (:meth:`acknowledge_stream`)."""
        if n <= 0 or self.closed:
            return
        self.acknowledge_connection(n)
        self.acknowledge_stream(n, stream_id)

    def acknowledge_connection(self, n: int) -> None:
        """Return ``n`` bytes of the connection's window only: what one stream holds then never limits the
        others (each stream is still bounded by its own window)."""
        if n <= 0 or self.closed:
            return
        self._conn_unacked += n
        if self._conn_unacked >= self.local.initial_connection_window >> 2:
            # Never past 2^31-1 (the peer would see a FLOW_CONTROL_ERROR): only if the caller acknowledged
            # more than it received, which the cap absorbs.
            inc = min(self._conn_unacked, fr.MAX_WINDOW - self.inbound_window)
            if inc > 0:
                self._out.append(fr.window_update_frame(0, inc))
                self.inbound_window += inc
            self._conn_unacked = 0

    def acknowledge_stream(self, n: int, stream_id: int) -> None:
        """Return ``n`` bytes of one stream's window (nothing once the stream can receive no more)."""
        if n <= 0 or self.closed:
            return
        stream = self.streams.get(stream_id)
        if stream is None or stream.recv_closed:
            return
        stream.unacked += n
        if stream.unacked >= self.local.initial_window >> 2:
            inc = min(stream.unacked, fr.MAX_WINDOW - stream.inbound_window)
            if inc > 0:
                self._out.append(fr.window_update_frame(stream_id, inc))
                stream.inbound_window += inc
            stream.unacked = 0

    def ping(self, payload: bytes) -> None:
        if len(payload) != 8:
            raise ValueError("a PING payload is exactly 8 octets")
        self._out.append(fr.ping_frame(payload))

    def send_goaway(self, code: int = ErrorCode.NO_ERROR, debug: bytes = b"",
                    last_stream_id: int | None = None, *, keep_open: bool = False) -> None:
        """Announce shutdown; peer streams above ``last_stream_id`` (default: the highest seen) are refused.
        A GOAWAY with an error code ends the connection unless ``keep_open``: then the streams up to
        ``last_stream_id`` may still complete (RFC 9113 6.8)."""
        if self.closed:
            return
        last = self.highest_remote_stream_id if last_stream_id is None else last_stream_id
        self.goaway_sent_last_id = last
        self._out.append(fr.goaway_frame(last, code, debug))
        if code != ErrorCode.NO_ERROR and not keep_open:
            self.closed = True

    @property
    def header_block_pending(self) -> bool:
        """A header block has begun and is not complete: CONTINUATION frames are awaited, or a HEADERS frame
        has only partly arrived (Envoy's request_headers_timeout runs meanwhile)."""
        if self._continuation is not None:
            return True
        buf = self._buf
        return len(buf) >= 4 and buf[3] == fr.HEADERS and not self._preface_pending

    @property
    def active_streams(self) -> int:
        return len(self.streams)

    def _close_send(self, stream: Stream) -> None:
        stream.send_closed = True
        if stream.recv_closed:
            self._forget(stream, _ENDED)

    def _close_recv(self, stream: Stream) -> None:
        stream.recv_closed = True
        if stream.send_closed:
            self._forget(stream, _ENDED)

    def _forget(self, stream: Stream, reason: int) -> None:
        sid = stream.id
        if self.streams.pop(sid, None) is None:
            return
        if (sid & 1) == (1 if self.client_side else 0):
            self.open_local_streams -= 1
        else:
            self.open_remote_streams -= 1
        self._remember_closed(sid, reason)

    def _remember_closed(self, sid: int, reason: int) -> None:
        closed = self._closed_streams
        closed[sid] = reason
        if len(closed) > _MAX_CLOSED_REMEMBERED:
            closed.popitem(last=False)

    # ------------------------------------------------------------------------------------- receiving

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer; returns the events in order."""
        events: list[Event] = []
        if self.closed:
            return events
        buf = self._buf + data if self._buf else data
        pos = 0
        try:
            if self._preface_pending:
                if len(buf) < 24:
                    if not fr.PREFACE.startswith(buf):
                        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                    self._buf = buf
                    return events
                if buf[:24] != fr.PREFACE:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                self._preface_pending = False
                pos = 24
            end = len(buf)
            max_frame = self.local.max_frame_size
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = _FRAME_HEAD.unpack_from(buf, pos)
                length = (hi << 8) | lo
                if length > max_frame:
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR,
                                           f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
                if end - pos - 9 < length:
                    break
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                sid &= 0x7FFFFFFF
                if not self._settings_received and ftype != fr.SETTINGS:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "the first frame must be SETTINGS")
                if self._continuation is not None and ftype != fr.CONTINUATION:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION")
                try:
                    handler = self._dispatch.get(ftype)
                    if handler is not None:
                        handler(self, payload, flags, sid, events)
                except _StreamError as e:
                    self._stream_error(e, events)
                if self.closed:
                    break
            self._buf = buf[pos:] if pos < end else b""
        except _ConnectionError as e:
            self._connection_error(e.code, str(e), events)
        return events

    def _connection_error(self, code: ErrorCode, message: str, events: list[Event]) -> None:
        self._buf = b""
        if not self.closed:
            self.goaway_sent_last_id = self.highest_remote_stream_id
            self._out.append(fr.goaway_frame(self.highest_remote_stream_id, code, message.encode()[:256]))
            self.closed = True
        events.append(ConnectionTerminated(code, self.highest_remote_stream_id, message.encode(), True))

    def _stream_error(self, e: _StreamError, events: list[Event]) -> None:
        self._out.append(fr.rst_stream_frame(e.stream_id, e.code))
        stream = self.streams.get(e.stream_id)
        if stream is not None:
            self._forget(stream, _RESET_BY_US)
            events.append(StreamReset(e.stream_id, e.code, False))
        elif e.stream_id in self._closed_streams:
            # A closed stream: having sent RST_STREAM we must ignore its later frames (RFC 9113 5.1), rather
            # than answer each one with another RST_STREAM.
            self._closed_streams[e.stream_id] = _RESET_BY_US

    # ------------------------------------------------------------------------------------- frames

    def _on_data(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        flow_len = len(payload)
        if flags & fr.FLAG_PADDED:
            payload = self._strip_padding(payload)
        # Connection-level flow control applies whatever the stream's state.
        if flow_len > self.inbound_window:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection flow-control window exceeded")
        self.inbound_window -= flow_len
        stream = self.streams.get(sid)
        if stream is None or stream.recv_closed or not stream.recv_headers:
            # Return the connection window now: nobody will consume these bytes.
            self.acknowledge_received_data(flow_len, 0)
            if stream is None:
                self._late_frame(sid, "DATA")
                return
            if not stream.recv_headers:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "DATA before HEADERS")
            raise _StreamError(sid, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
        if flow_len > stream.inbound_window:
            self.acknowledge_received_data(flow_len, 0)
            raise _StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "stream flow-control window exceeded")
        stream.inbound_window -= flow_len
        end_stream = bool(flags & fr.FLAG_END_STREAM)
        n = len(payload)
        if n == 0 and not end_stream:
            self._empty_frames += 1
            if self._empty_frames > self.local.max_consecutive_empty_frames:
                raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many empty DATA frames")
        else:
            self._empty_frames = 0
        padding = flow_len - n
        if padding:
            self.acknowledge_received_data(padding, sid)
            flow_len = n
        if stream.content_length >= 0:
            stream.received_bytes += n
            if stream.received_bytes > stream.content_length or (
                    end_stream and stream.received_bytes != stream.content_length):
                self.acknowledge_received_data(flow_len, 0)
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body does not match content-length")
        if end_stream:
            self._close_recv(stream)
        events.append(DataReceived(sid, payload, flow_len, end_stream))

    def _late_frame(self, sid: int, what: str) -> None:
        """A frame for a stream we do not track: closed (remembered or not) or idle."""
        reason = self._closed_streams.get(sid)
        if reason == _RESET_BY_US:
            return  # RFC 9113 5.1: ignore frames on streams we reset
        if reason == _ENDED:
            # The peer sends on a stream after its own END_STREAM. RFC 9113 5.1 "closed" allows a stream or a
            # connection error; RFC 7540, h2 and h2spec (http2/5.1/11-12) want the connection error.
            raise _ConnectionError(ErrorCode.STREAM_CLOSED, f"{what} on stream {sid} after END_STREAM")
        if reason is not None:  # reset by the peer: a stream error (RFC 9113 5.1, h2spec http2/5.1/8-9)
            raise _StreamError(sid, ErrorCode.STREAM_CLOSED, f"{what} on a closed stream")
        if self._is_idle(sid):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        # Closed long ago (forgotten): treat as closed.
        raise _StreamError(sid, ErrorCode.STREAM_CLOSED, f"{what} on a closed stream")

    def _is_idle(self, sid: int) -> bool:
        if (sid & 1) == (1 if self.client_side else 0):  # our own stream ids
            return sid >= self._next_stream_id
        return sid > self.highest_remote_stream_id

    @staticmethod
    def _strip_padding(payload: bytes) -> bytes:
        if not payload:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PADDED frame without pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the frame payload")
        return payload[1:len(payload) - pad]

    def _on_headers(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & (fr.FLAG_PADDED | fr.FLAG_PRIORITY):
            start = 0
            pad = 0
            end = len(payload)
            if flags & fr.FLAG_PADDED:
                if not end:
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PADDED frame without pad length")
                pad = payload[0]
                start = 1
            dep = 0
            if flags & fr.FLAG_PRIORITY:
                if end - start < 5:
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS priority fields truncated")
                dep = _PRIORITY.unpack_from(payload, start)[0] & 0x7FFFFFFF
                start += 5
            # RFC 9113 6.2: padding that exceeds what remains for the fragment is a PROTOCOL_ERROR.
            if pad > end - start:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the frame payload")
            payload = payload[start:end - pad]
            if dep == sid:
                # Decode anyway to keep the HPACK state, then fail the stream.
                self._headers_block(sid, flags, payload, events, self_dependent=True)
                return
        self._headers_block(sid, flags, payload, events)

    def _headers_block(self, sid: int, flags: int, fragment: bytes, events: list[Event],
                       self_dependent: bool = False) -> None:
        end_stream = bool(flags & fr.FLAG_END_STREAM)
        if not flags & fr.FLAG_END_HEADERS:
            self._continuation = (sid, end_stream, [fragment])
            self._continuation_size = len(fragment)
            self._self_dependent = self_dependent
            return
        self._complete_headers(sid, end_stream, fragment, events, self_dependent)

    def _on_continuation(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        cont = self._continuation
        if cont is None or cont[0] != sid:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        if payload:
            cont[2].append(payload)
        # A header block we must decode to keep HPACK state, but which is absurdly large: give up on the
        # connection (CVE-2024-27316 style CONTINUATION floods). Each frame also costs its 9-octet header,
        # so a flood of empty CONTINUATION frames is bounded too (it used to be accepted forever).
        self._continuation_size += len(payload) + 9
        if self._continuation_size > max(4 * self.local.max_header_list_size, _MIN_HEADER_BLOCK_LIMIT):
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & fr.FLAG_END_HEADERS:
            self._continuation = None
            self._complete_headers(sid, cont[1], b"".join(cont[2]), events, self._self_dependent)

    def _complete_headers(self, sid: int, end_stream: bool, block: bytes, events: list[Event],
                          self_dependent: bool) -> None:
        too_large = False
        try:
            headers = self._decoder.decode(block)
        except HpackError as e:
            raise _ConnectionError(ErrorCode.COMPRESSION_ERROR, f"HPACK: {e}") from None
        except _HpackTooLarge:
            too_large = True
            headers = []
        stream = self.streams.get(sid)
        if stream is None:
            if self.client_side or (sid & 1) == 0:
                if self.client_side and sid & 1 and sid < self._next_stream_id:
                    self._late_frame(sid, "HEADERS")
                    return
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid} not allowed")
            if sid <= self.highest_remote_stream_id:
                if sid not in self._closed_streams:
                    # Never opened (implicitly closed by a higher id): RFC 9113 5.1.1 "unexpected stream
                    # identifier", a connection error (h2spec 5.1.1). A stream closed so long ago that it is
                    # no longer remembered lands here too: the client is broken either way.
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}: ids must increase")
                self._late_frame(sid, "HEADERS")
                return
            # A new stream from the client.
            self.highest_remote_stream_id = sid
            if self.goaway_sent_last_id is not None and sid > self.goaway_sent_last_id:
                # After our GOAWAY: ignored (RFC 9113 6.8), and so are its later frames (no RST_STREAM for
                # each of them: the GOAWAY already told the client these streams were not processed).
                self._remember_closed(sid, _RESET_BY_US)
                return
            stream = Stream(sid, self._stream_recv_window, self.remote_initial_window)
            stream.opened_at = monotonic()
            self.streams[sid] = stream
            self.open_remote_streams += 1
            self._streams_opened += 1
            if self_dependent:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
            if self.open_remote_streams > self.local.max_concurrent_streams:
                raise _StreamError(sid, ErrorCode.REFUSED_STREAM, "SETTINGS_MAX_CONCURRENT_STREAMS exceeded")
            if too_large:
                stream.recv_headers = True
                if end_stream:
                    self._close_recv(stream)
                events.append(HeaderListTooLarge(sid))
                return
            ev = HeadersReceived(sid, headers, end_stream, REQUEST)
            self._validate_request(ev)
            stream.recv_headers = True
            stream.content_length = self._content_length(sid, headers)
            if end_stream:
                if stream.content_length > 0:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body does not match content-length")
                self._close_recv(stream)
            events.append(ev)
            return
        if self_dependent:
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        if stream.recv_closed:
            raise _StreamError(sid, ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
        if too_large:
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "header list too large")
        if stream.recv_headers:  # trailers
            if not end_stream:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            for name, value in headers:
                if name[:1] == b":":
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "pseudo-header in trailers")
                self._check_field(sid, name, value)
            if stream.content_length >= 0 and stream.received_bytes != stream.content_length:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body does not match content-length")
            self._close_recv(stream)
            events.append(HeadersReceived(sid, headers, True, TRAILERS))
            return
        if not self.client_side:
            # Server side: the client sent HEADERS on a stream it already opened (which has no headers?)
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "unexpected HEADERS")
        ev = HeadersReceived(sid, headers, end_stream, RESPONSE)
        self._validate_response(ev)
        if ev.kind == INFORMATIONAL:
            if end_stream:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "1xx response with END_STREAM")
            events.append(ev)
            return
        stream.recv_headers = True
        length = self._content_length(sid, headers)
        # RFC 9113 8.1.1: a response without content (to HEAD, 204, 304) may declare a non-zero
        # content-length. HEAD: no content at all, as h2 does; 204/304: the declared length is not the body's.
        if stream.content_length == _HEAD_REQUEST:
            length = 0
        elif ev.status in (204, 304):
            length = -1
        stream.content_length = length
        if end_stream:
            self._close_recv(stream)
        events.append(ev)

    # ------------------------------------------------------------------------------------- validation

    def _check_field(self, sid: int, name: bytes, value: bytes) -> None:
        if not name or _BAD_NAME.search(name):
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, f"invalid header name {name[:64]!r}")
        if name in _CONNECTION_SPECIFIC:
            if name != b"te":
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, f"connection-specific header {name.decode()}")
            if value != b"trailers" and value.lower() != b"trailers":  # like h2: any case of "trailers"
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "te header other than 'trailers'")
        if value and _BAD_VALUE.search(value):
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, f"invalid value for header {name.decode()}")

    def _validate_request(self, ev: HeadersReceived) -> None:
        sid = ev.stream_id
        seen_regular = host_seen = False
        method = scheme = path = authority = None
        for name, value in ev.headers:
            if name[:1] == b":":
                if seen_regular:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "pseudo-header after regular header")
                if name == b":path":
                    if path is not None:
                        raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "duplicate :path")
                    path = value
                elif name == b":method":
                    if method is not None:
                        raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "duplicate :method")
                    method = value
                elif name == b":scheme":
                    if scheme is not None:
                        raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "duplicate :scheme")
                    scheme = value
                elif name == b":authority":
                    if authority is not None:
                        raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "duplicate :authority")
                    authority = value
                else:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, f"invalid pseudo-header {name[:32]!r}")
                if _BAD_VALUE.search(value):
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, f"invalid value for {name.decode()}")
                continue
            seen_regular = True
            self._check_field(sid, name, value)
            if name == b"host":
                # RFC 9113 8.3.1 (SHOULD): a Host naming another entity than :authority is malformed; h2
                # and oghttp2 also refuse a second Host. Routing uses :authority, the app might read Host.
                if host_seen:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "more than one host header")
                host_seen = True
                if authority is None:
                    authority = value
                elif value != authority:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "host header differs from :authority")
        if method is None:
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "missing :method")
        if method == b"CONNECT":
            if scheme is not None or path is not None or not authority:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "malformed CONNECT request")
        else:
            if scheme is None or path is None:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "missing :scheme or :path")
            if not path:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "empty :path")
            if authority is None:  # RFC 9110 7.2; h2 and nghttp2 refuse it too
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "no :authority and no host")
        ev.method = method
        ev.scheme = scheme or b""
        ev.path = path or b""
        ev.authority = authority or b""

    def _validate_response(self, ev: HeadersReceived) -> None:
        sid = ev.stream_id
        status: bytes | None = None
        seen_regular = False
        for name, value in ev.headers:
            if name[:1] == b":":
                if seen_regular or name != b":status" or status is not None:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "invalid response pseudo-headers")
                status = value
                continue
            seen_regular = True
            self._check_field(sid, name, value)
        if status is None or len(status) != 3 or not status.isdigit():
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "missing or invalid :status")
        code = int(status)
        ev.status = code
        if 100 <= code < 200:
            if code == 101:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "101 is not allowed in HTTP/2")
            ev.kind = INFORMATIONAL

    @staticmethod
    def _content_length(sid: int, headers: list[Header]) -> int:
        found = -1
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "invalid content-length")
                n = int(value)
                if found >= 0 and n != found:
                    raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "conflicting content-length")
                found = n
        return found

    # ------------------------------------------------------------------------------------- control frames

    def _on_priority(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise _StreamError(sid, ErrorCode.FRAME_SIZE_ERROR, "PRIORITY frame must be 5 bytes")
        self._priority_frames += 1
        if self._priority_frames > self.local.max_priority_per_stream * (self._streams_opened + 1):
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many PRIORITY frames")
        dep = _UINT32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        if dep == sid:
            if sid in self.streams:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
            self._out.append(fr.rst_stream_frame(sid, ErrorCode.PROTOCOL_ERROR))

    def _on_rst_stream(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM frame must be 4 bytes")
        stream = self.streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on idle stream")
            return
        code = _UINT32.unpack_from(payload, 0)[0]
        self._forget(stream, _RESET_BY_PEER)
        events.append(StreamReset(sid, code, True))
        if (not self.client_side and not stream.send_headers
                and monotonic() - stream.opened_at < self.local.premature_reset_min_stream_lifetime):
            self._premature_reset(events)

    def _premature_reset(self, events: list[Event]) -> None:
        """Envoy's rapid-reset defence (``ConnectionManagerImpl::maybeDrainDueToPrematureResets``): a reset is
        premature when the client sends it before our response headers and within the minimum lifetime of its
        stream. Once half of ``premature_reset_total_stream_count`` are premature, or once that many streams
        closed and at least half of them were, the connection has to go.

        Unlike Envoy, which aborts the connection, the GOAWAY is graceful: its last stream id is the highest
        one processed, those streams still complete, later ones are refused (RFC 9113 6.8, safe to retry) and
        the caller closes the connection once its streams are done (``drain_timeout`` at most). A proxy relays
        its clients' resets onto a shared upstream connection, so an abort there would fail other clients'
        calls in flight; the attacker gains nothing from the grace, since no new stream is accepted."""
        self._premature_resets += 1
        if self.premature_reset_goaway:
            return
        limit = self.local.premature_reset_total_stream_count
        closed = self._streams_opened - self.open_remote_streams
        if self._premature_resets * 2 < (limit if closed < limit else closed):
            return
        self.premature_reset_goaway = True
        debug = b"too many premature resets"
        self.send_goaway(ErrorCode.ENHANCE_YOUR_CALM, debug, keep_open=True)
        events.append(ConnectionTerminated(ErrorCode.ENHANCE_YOUR_CALM, self.highest_remote_stream_id, debug,
                                           True))

    def _on_settings(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & fr.FLAG_ACK:
            if payload:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if not self._local_settings_acked:
                self._apply_local_settings()
            return
        if len(payload) % 6:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        first = not self._settings_received
        self._settings_received = True
        window_delta = 0
        concurrency_changed = False
        for off in range(0, len(payload), 6):
            ident, value = _SETTING.unpack_from(payload, off)
            if ident == Setting.HEADER_TABLE_SIZE:
                self._encoder.set_max_table_size(value)
            elif ident == Setting.ENABLE_PUSH:
                if value > 1:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
                if self.client_side and value:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "server sent SETTINGS_ENABLE_PUSH=1")
                self.remote_enable_push = value
            elif ident == Setting.MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent_streams = value
                concurrency_changed = True
            elif ident == Setting.INITIAL_WINDOW_SIZE:
                if value > fr.MAX_WINDOW:
                    raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                window_delta += value - self.remote_initial_window
                self.remote_initial_window = value
            elif ident == Setting.MAX_FRAME_SIZE:
                if not fr.DEFAULT_MAX_FRAME_SIZE <= value <= fr.MAX_MAX_FRAME_SIZE:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid SETTINGS_MAX_FRAME_SIZE")
                self.remote_max_frame_size = value
            elif ident == Setting.ENABLE_CONNECT_PROTOCOL and value > 1:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid SETTINGS_ENABLE_CONNECT_PROTOCOL")
            # Unknown settings are ignored (RFC 9113 6.5.2).
        if window_delta:
            streams = self.streams.values()
            if window_delta > 0 and any(s.outbound_window + window_delta > fr.MAX_WINDOW for s in streams):
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")
            for stream in streams:
                stream.outbound_window += window_delta
        self._out.append(fr.settings_frame(ack=True))
        if concurrency_changed or first:
            events.append(RemoteSettingsChanged(self.remote_max_concurrent_streams))
        if window_delta > 0:
            events.append(WindowUpdated(0))

    def _apply_local_settings(self) -> None:
        """The peer acknowledged our (only) SETTINGS: the smaller window and table size now bind it."""
        self._local_settings_acked = True
        self._decoder.max_allowed_table_size = self.local.header_table_size
        delta = self.local.initial_window - self._stream_recv_window
        if delta:
            self._stream_recv_window = self.local.initial_window
            for stream in self.streams.values():
                stream.inbound_window += delta  # may go negative, as on the peer's side

    def _on_push_promise(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE is not allowed (push disabled)")

    def _on_ping(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING frame must be 8 bytes")
        if flags & fr.FLAG_ACK:
            events.append(PingAcknowledged(payload))
        else:
            self._out.append(fr.ping_frame(payload, ack=True))

    def _on_goaway(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if sid != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY frame too short")
        last, code = struct.unpack_from(">LL", payload, 0)
        last &= 0x7FFFFFFF
        self.goaway_received_last_id = last
        events.append(ConnectionTerminated(code, last, payload[8:], False))
        # Our streams the peer will never process: report them as refused (safe to retry elsewhere).
        if self.client_side:
            for stream_id in [s for s in self.streams if s > last and s & 1]:
                self._forget(self.streams[stream_id], _RESET_BY_PEER)
                events.append(StreamReset(stream_id, ErrorCode.REFUSED_STREAM, True))

    def _on_window_update(self, payload: bytes, flags: int, sid: int, events: list[Event]) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame must be 4 bytes")
        increment = _UINT32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        # Envoy's max_inbound_window_update_frames_per_data_frame_sent, with Envoy's formula: a peer may send
        # 5 + 2 * (streams + limit * our DATA frames) WINDOW_UPDATEs (a client opening a stream often raises its
        # window at once); beyond that it is flooding.
        self._window_update_frames += 1
        allowed = 5 + 2 * (self._streams_opened + self._local_streams_opened
                           + self.local.max_window_updates_per_data * self._data_frames_sent)
        if self._window_update_frames > allowed:
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many WINDOW_UPDATE frames")
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE with increment 0")
            window = self.outbound_window + increment
            if window > fr.MAX_WINDOW:  # checked before it is stored: windows never exceed 2^31-1
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            self.outbound_window = window
            events.append(WindowUpdated(0))
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream")
            return  # closed streams: ignore (RFC 9113 5.1)
        if increment == 0:
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE with increment 0")
        window = stream.outbound_window + increment
        if window > fr.MAX_WINDOW:
            raise _StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")
        stream.outbound_window = window
        events.append(WindowUpdated(sid))

    _dispatch = {
        fr.DATA: _on_data,
        fr.HEADERS: _on_headers,
        fr.PRIORITY: _on_priority,
        fr.RST_STREAM: _on_rst_stream,
        fr.SETTINGS: _on_settings,
        fr.PUSH_PROMISE: _on_push_promise,
        fr.PING: _on_ping,
        fr.GOAWAY: _on_goaway,
        fr.WINDOW_UPDATE: _on_window_update,
        fr.CONTINUATION: _on_continuation,
    }
