"""A reference HTTP/2 server on the ``h2`` library (trio I/O) that answers gRPC-shaped requests itself.

``python -m tests.protocol.h2_reference_server --port N`` serves h2c with the same three methods as
:mod:`tests.protocol.backend` (``Unary``, ``Stream``; ``Seen`` always answers b"0": nothing is forwarded).
It exists to validate the protocol suite against a second, independent implementation
(``H2_TARGET=h2server``).

Resource handling: one task reads the socket and feeds h2; every write goes through one lock and waits for
the socket (``send_all``), so a peer that stops reading stops this server from reading it too (bounded
buffers). Response bodies respect h2's flow-control windows.

Defences a proxy should also have, kept deliberately simple: more than ``PREMATURE_RESET_LIMIT`` streams
reset by the client before their response completed, or more than ``EMPTY_FRAME_LIMIT`` consecutive empty
DATA frames, end the connection with GOAWAY(ENHANCE_YOUR_CALM). h2 itself refuses header lists over 64 KiB
and runs of more than 64 CONTINUATION frames.
"""

from __future__ import annotations

import argparse
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

PREMATURE_RESET_LIMIT = 100
EMPTY_FRAME_LIMIT = 100
MAX_BODY = 4 << 20
MAX_STREAM_COUNT = 1 << 20
MAX_STREAM_SIZE = 4 << 20

Headers = list[tuple[bytes, bytes]]


def grpc_message(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


class Connection:
    def __init__(self, stream: trio.SocketStream, max_concurrent_streams: int) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            },
        )
        self.send_lock = trio.Lock()
        self.window_changed = trio.Event()
        self.requests: dict[int, Headers] = {}
        self.bodies: dict[int, bytearray] = {}
        self.premature_resets = 0
        self.empty_frames = 0
        self.closing = False

    async def flush(self) -> None:
        async with self.send_lock:
            data = self.h2.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def run(self) -> None:
        self.h2.initiate_connection()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self.flush()
                    await self.read_loop(nursery)
                finally:
                    nursery.cancel_scope.cancel()  # never wait for response tasks stuck on a window
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away: nothing left to do for this connection
        except* Exception as group:
            for exc in group.exceptions:
                print(f"h2 reference server: connection failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            with trio.move_on_after(1):
                await self.stream.aclose()

    async def read_loop(self, nursery: trio.Nursery) -> None:
        while not self.closing:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closing = True  # h2 has queued the GOAWAY
                events = []
            for event in events:
                if self.closing:
                    break
                self.handle(event, nursery)
            await self.flush()

    def handle(self, event: h2.events.Event, nursery: trio.Nursery) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.empty_frames = 0
            self.requests[event.stream_id] = list(event.headers or [])
            self.bodies[event.stream_id] = bytearray()
        elif isinstance(event, h2.events.DataReceived):
            self.on_data(event)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.requests:
            nursery.start_soon(self.respond, event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.on_reset(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.wake_senders()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closing = True

    def on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id or 0
        data = event.data or b""
        if event.flow_controlled_length:
            try:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            except h2.exceptions.StreamClosedError:
                pass
        if not data and event.stream_ended is None:
            self.empty_frames += 1
            if self.empty_frames > EMPTY_FRAME_LIMIT:
                self.calm_down(b"too many empty DATA frames")
            return
        self.empty_frames = 0
        body = self.bodies.get(sid)
        if body is None:
            return
        body += data
        if len(body) > MAX_BODY:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.forget(sid)

    def on_reset(self, stream_id: int) -> None:
        # The response task is not cancelled: it may be inside flush() holding bytes already taken from h2
        # (a cancelled send_all loses them). It is woken instead and finds the stream closed on its next call.
        self.wake_senders()
        if stream_id in self.requests:
            self.premature_resets += 1
            self.forget(stream_id)
            if self.premature_resets > PREMATURE_RESET_LIMIT:
                self.calm_down(b"too many streams reset before completion")

    def wake_senders(self) -> None:
        self.window_changed.set()
        self.window_changed = trio.Event()

    def calm_down(self, why: bytes) -> None:
        if self.closing:
            return
        self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, additional_data=why)
        self.closing = True

    def forget(self, stream_id: int) -> None:
        self.requests.pop(stream_id, None)
        self.bodies.pop(stream_id, None)

    async def respond(self, stream_id: int) -> None:
        try:
            await self.answer(stream_id, dict(self.requests[stream_id]), bytes(self.bodies[stream_id]))
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError, ValueError):
            pass  # the stream was reset or the connection ended under us; nothing to answer any more
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.forget(stream_id)

    async def answer(self, stream_id: int, headers: dict[bytes, bytes], body: bytes) -> None:
        path = headers.get(b":path", b"")
        if headers.get(b":method") != b"POST" or not headers.get(b"content-type", b"").startswith(b"application/grpc"):
            await self.send_headers(stream_id, [(b":status", b"415")], end_stream=True)
            return
        ok = [(b":status", b"200"), (b"content-type", b"application/grpc")]
        if path in {b"/test.Echo/Unary", b"/test.Echo/Seen"}:
            if len(body) < 5:
                await self.send_headers(
                    stream_id,
                    [*ok, (b"grpc-status", b"13"), (b"grpc-message", b"no request message")],
                    end_stream=True,
                )
                return
            reply = body[5:] if path == b"/test.Echo/Unary" else b"0"
            echo = [(k, v) for k, v in headers.items() if k.startswith(b"x-echo-")]
            await self.send_headers(stream_id, [*ok, *echo])
            await self.send_data(stream_id, grpc_message(reply))
        elif path == b"/test.Echo/Stream":
            count = min(int(headers.get(b"x-stream-count", b"1")), MAX_STREAM_COUNT)
            chunk = grpc_message(b"s" * min(int(headers.get(b"x-stream-size", b"16")), MAX_STREAM_SIZE))
            await self.send_headers(stream_id, ok)
            for _ in range(count):
                await self.send_data(stream_id, chunk)
        else:
            await self.send_headers(stream_id, [*ok, (b"grpc-status", b"12")], end_stream=True)
            return
        await self.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)

    async def send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool = False) -> None:
        self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        await self.flush()

    async def send_data(self, stream_id: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            size = min(self.h2.local_flow_control_window(stream_id), len(view), self.h2.max_outbound_frame_size)
            if size <= 0:
                await self.window_changed.wait()
                continue
            self.h2.send_data(stream_id, view[:size].tobytes())
            view = view[size:]
            await self.flush()


async def serve(host: str, port: int, max_concurrent_streams: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    print(f"h2 reference server listening on {host}:{port}", flush=True)

    async def handle(stream: trio.SocketStream) -> None:
        await Connection(stream, max_concurrent_streams).run()

    await trio.serve_listeners(handle, listeners)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-concurrent-streams", type=int, default=10)
    args = parser.parse_args()
    trio.run(serve, args.host, args.port, args.max_concurrent_streams)
    return 0


if __name__ == "__main__":
    sys.exit(main())
