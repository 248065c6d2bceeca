"""The management API server: close() lets its caller's cancellation through (it only absorbs its own server
task's end); the Guard lets no WebSocket through unchecked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse

from mesh_ctl.xds.web import ApiServer, allowed_hosts, build_app


def _endless_app(streaming: asyncio.Event) -> FastAPI:
    app = FastAPI()

    async def forever() -> AsyncIterator[bytes]:
        streaming.set()
        yield b"x"
        await asyncio.Event().wait()  # a client that keeps its connection open: close() must wait for it

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(forever())

    return app


async def _cancel_close_while_it_waits() -> tuple[bool, bool]:
    streaming = asyncio.Event()
    server = ApiServer(_endless_app(streaming))
    host, port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(streaming.wait(), 10.0)
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    closing = asyncio.create_task(server.close())
    for _ in range(10):  # let close() reach its wait for the server (graceful shutdown lasts 2 s)
        await asyncio.sleep(0)
    assert not closing.done()
    closing.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(closing), 10.0)
    except asyncio.CancelledError:
        pass
    writer.close()
    return closing.cancelled(), server._task is not None and server._task.done()


def test_a_cancelled_close_propagates_the_cancellation() -> None:
    cancelled, server_stopped = asyncio.run(_cancel_close_while_it_waits())
    assert cancelled, "close() swallowed its caller's cancellation"
    assert server_stopped


async def _websocket_handshake_status() -> bytes:
    app = build_app("t", "0", allowed_hosts("127.0.0.1"), "secret")

    @app.websocket("/ui/events")
    async def accepted(ws: WebSocket) -> None:  # a route someone might add one day
        await ws.accept()
        await ws.close()

    server = ApiServer(app)
    host, port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /ui/events HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10.0)
        writer.close()
        return status
    finally:
        await server.close()


def test_a_websocket_never_passes_the_guard_unchecked() -> None:
    """The Guard checks HTTP requests; a WebSocket upgrade (no Origin rule, no credential) is refused outright."""
    status = asyncio.run(_websocket_handshake_status())
    assert status.split()[1:2] == [b"403"], status
