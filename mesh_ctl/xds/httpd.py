"""A very small HTTP/1.1 JSON server on asyncio, for the control plane's management API (port 15014).

One request per connection (``Connection: close``), a body only with ``Content-Length``, JSON in and out.
That is all the CLI (:mod:`mesh_ctl.client`, on ``http.client``) and ``curl`` need, and it keeps the
control plane free of a web framework. Bounded: request head 16 KiB, body 16 MiB, 30 s to send them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("mesh_ctl.api")

MAX_HEAD = 16 * 1024
MAX_BODY = 16 * 1024 * 1024
READ_TIMEOUT = 30.0


class HttpError(Exception):
    """Raised by a handler: answered as ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise HttpError(400, f"the body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "the body must be a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or str for text/plain
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if isinstance(self.body, str) and not self.content_type.startswith("application/json"):
            payload = self.body.encode()
        else:
            payload = (json.dumps(self.body, indent=1, default=str) + "\n").encode()
        reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else ""
        head = [f"HTTP/1.1 {self.status} {reason}", f"Content-Type: {self.content_type}",
                f"Content-Length: {len(payload)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._server: asyncio.Server | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
                response = await self.dispatch(request)
            except HttpError as e:
                response = Response(e.status, {"error": e.message, **e.extra})
            except TimeoutError:
                response = Response(408, {"error": "request not received in time"})
            writer.write(response.encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left; nothing to answer
        finally:
            writer.close()

    async def dispatch(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                raise HttpError(405, f"{request.method} not allowed on {request.path}")
            raise HttpError(404, f"no such endpoint: {request.path}",
                            endpoints=sorted(f"{m} {p}" for m, p in self._routes))
        try:
            return await handler(request)
        except HttpError:
            raise
        except Exception as e:
            log.exception("%s %s failed", request.method, request.path)
            raise HttpError(500, f"internal error: {type(e).__name__}: {e}") from None


async def _read_request(reader: asyncio.StreamReader) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    if len(head) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise HttpError(400, f"bad request line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length < 0 or length > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return Request(method.upper(), url.path, dict(parse_qsl(url.query)), body)
