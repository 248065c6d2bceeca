"""A small gRPC client on pyproxy's own HTTP/2 engine and transports, for talking to the control plane.

Why not grpcio here: the proxy already has an HTTP/2 client and a trio event loop; grpcio would add its own
threads and ~10 MB to every sidecar for one long-lived stream. This client does what ADS and the CA need:
bidirectional streaming calls with length-prefixed messages (no compression), metadata, deadlines left to the
caller, grpc-status/grpc-message from trailers (or trailers-only responses), flow control in both directions.

Resource handling: :meth:`GrpcChannel.run` owns the transport and must run in a task while calls are used;
when it returns every open call is failed with :class:`GrpcError` (UNAVAILABLE). Error handling: protocol
errors and connection loss surface as GrpcError from :meth:`GrpcCall.receive` / :meth:`GrpcCall.send`.
"""

from __future__ import annotations

import struct
from collections import deque
from urllib.parse import unquote

import trio

from pyproxy.http2.connection import H2Connection, H2Settings, StreamStateError
from pyproxy.http2.events import (
    RESPONSE,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    HeadersReceived,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from pyproxy.io.transport import Transport, TransportClosed

_PREFIX = struct.Struct(">BL")
MAX_MESSAGE = 64 << 20

UNAVAILABLE = 14
INTERNAL = 13
CANCELLED = 1


class GrpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"grpc status {code}: {message}")
        self.code = code
        self.message = message


class GrpcCall:
    """One call. ``send`` queues a message (never blocks: control-plane messages are small and few),
    ``receive`` waits for the next one (None when the server ended the call with OK)."""

    def __init__(self, channel: GrpcChannel, sid: int) -> None:
        self._channel = channel
        self.sid = sid
        self._buffer = bytearray()
        self._messages: deque[bytes] = deque()
        self._outgoing: deque[bytes] = deque()
        self._event = trio.Event()
        self._error: GrpcError | None = None
        self._ended = False
        self._send_closed = False
        self.initial_metadata: list[Header] = []
        self.trailing_metadata: list[Header] = []

    # ------------------------------------------------------------------------------------------ API

    def send(self, message: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._send_closed:
            raise GrpcError(INTERNAL, "send after close_send")
        self._outgoing.append(_PREFIX.pack(0, len(message)) + message)
        self._pump()

    def close_send(self) -> None:
        self._send_closed = True
        self._pump()

    async def receive(self) -> bytes | None:
        while True:
            if self._messages:
                return self._messages.popleft()
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            await self._event.wait()
            self._event = trio.Event()

    def cancel(self) -> None:
        channel = self._channel
        if self.sid in channel.engine.streams:
            channel.engine.reset_stream(self.sid, ErrorCode.CANCEL)
            channel.flush()
        self._fail(GrpcError(CANCELLED, "cancelled"))

    # ------------------------------------------------------------------------------------------ plumbing

    def _pump(self) -> None:
        engine = self._channel.engine
        sid = self.sid
        try:
            while self._outgoing:
                room = engine.max_send(sid)
                if room <= 0:
                    break
                chunk = self._outgoing[0]
                if len(chunk) <= room:
                    self._outgoing.popleft()
                    engine.send_data(sid, chunk)
                else:
                    engine.send_data(sid, chunk[:room])
                    self._outgoing[0] = chunk[room:]
                    break
            if self._send_closed and not self._outgoing and sid in engine.streams and \
                    not engine.streams[sid].send_closed:
                engine.end_stream(sid)
        except StreamStateError:
            self._outgoing.clear()
        self._channel.flush()

    def _on_data(self, data: bytes, flow: int) -> None:
        self._buffer += data
        self._channel.engine.acknowledge_received_data(flow, self.sid)
        buf = self._buffer
        while len(buf) >= 5:
            compressed, length = _PREFIX.unpack_from(buf, 0)
            if length > MAX_MESSAGE:
                self._fail(GrpcError(INTERNAL, f"message of {length} bytes is too large"))
                return
            if len(buf) < 5 + length:
                break
            if compressed:
                self._fail(GrpcError(INTERNAL, "compressed messages are not supported"))
                return
            self._messages.append(bytes(buf[5:5 + length]))
            del buf[:5 + length]
        self._event.set()

    def _on_headers(self, ev: HeadersReceived) -> None:
        if ev.kind == RESPONSE and not ev.end_stream:
            if ev.status != 200:
                self._fail(GrpcError(UNAVAILABLE, f"HTTP status {ev.status}"))
            self.initial_metadata = ev.headers
            return
        # Trailers, or a trailers-only response.
        self.trailing_metadata = ev.headers
        status = UNAVAILABLE if ev.kind == RESPONSE and ev.status != 200 else None
        message = ""
        for name, value in ev.headers:
            if name == b"grpc-status":
                try:
                    status = int(value)
                except ValueError:
                    status = INTERNAL
            elif name == b"grpc-message":
                message = unquote(value.decode("latin-1"))
        if status is None:
            status = INTERNAL
            message = message or "trailers without grpc-status"
        if status != 0:
            self._fail(GrpcError(status, message))
        else:
            self._ended = True
            self._event.set()

    def _fail(self, error: GrpcError) -> None:
        if self._error is None and not self._ended:
            self._error = error
        self._event.set()


class GrpcChannel:
    """One HTTP/2 connection to a gRPC server."""

    def __init__(self, transport: Transport, authority: str) -> None:
        self.transport = transport
        self.authority = authority.encode()
        self.engine = H2Connection(client_side=True, settings=H2Settings(
            initial_window=4 << 20, initial_connection_window=16 << 20, max_header_list_size=1 << 20))
        self.engine.initiate_connection()
        self.calls: dict[int, GrpcCall] = {}
        self.closed = False

    def flush(self) -> None:
        data = self.engine.data_to_send()
        if data:
            self.transport.write(data)

    def open_call(self, path: str, metadata: list[tuple[str, str]] | None = None) -> GrpcCall:
        if self.closed or not self.engine.can_open_stream():
            raise GrpcError(UNAVAILABLE, "connection to the control plane is closed")
        headers: list[Header] = [
            (b":method", b"POST"), (b":scheme", b"https" if self.transport.secure else b"http"),
            (b":path", path.encode()), (b":authority", self.authority),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"user-agent", b"pyproxy-xds"),
        ]
        for k, v in metadata or ():
            headers.append((k.lower().encode(), v.encode()))
        sid = self.engine.get_next_stream_id()
        self.engine.send_headers(sid, headers)
        call = GrpcCall(self, sid)
        self.calls[sid] = call
        self.flush()
        return call

    async def run(self) -> None:
        """Read loop; returns when the connection ends (calls still open fail with UNAVAILABLE)."""
        reason = "connection to the control plane closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.transport.run_writer)
                try:
                    while True:
                        data = await self.transport.receive()
                        if not data:
                            break
                        for ev in self.engine.receive_data(data):
                            self._dispatch(ev)
                        self.flush()
                        if self.engine.closed:
                            reason = "HTTP/2 connection error with the control plane"
                            break
                except TransportClosed as e:
                    reason = f"connection to the control plane lost: {e}"
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self.transport.close()
            for call in self.calls.values():
                call._fail(GrpcError(UNAVAILABLE, reason))
            self.calls.clear()

    def _dispatch(self, ev: object) -> None:
        t = type(ev)
        if t is DataReceived:
            assert isinstance(ev, DataReceived)
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call._on_data(ev.data, ev.flow_controlled_length)
            else:
                self.engine.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif t is HeadersReceived:
            assert isinstance(ev, HeadersReceived)
            call = self.calls.get(ev.stream_id)
            if call is not None and ev.kind in (RESPONSE, TRAILERS):
                call._on_headers(ev)
                if ev.end_stream:
                    self.calls.pop(ev.stream_id, None)
        elif t is StreamReset:
            assert isinstance(ev, StreamReset)
            call = self.calls.pop(ev.stream_id, None)
            if call is not None:
                call._fail(GrpcError(UNAVAILABLE, f"stream reset by the server (code {ev.error_code})"))
        elif t is WindowUpdated:
            for call in list(self.calls.values()):
                call._pump()
        elif t is ConnectionTerminated:
            assert isinstance(ev, ConnectionTerminated)
            for sid, call in list(self.calls.items()):
                if sid > ev.last_stream_id:
                    self.calls.pop(sid, None)
                    call._fail(GrpcError(UNAVAILABLE, "the control plane is going away"))
