"""The management API's HTTP server: FastAPI on uvicorn, in the control plane's own event loop (port 15014).

Only the mesh's owner controls the mesh (issue 9.1). Every request passes, in this order:

1. **Host**: the ``Host`` header must name this server (its bound address, ``localhost``, ``127.0.0.1`` or
   ``[::1]``): a web page that rebinds a DNS name to 127.0.0.1 is refused (Starlette's TrustedHostMiddleware).
2. **Origin**: a request carrying an ``Origin`` header comes from a browser page, never from the CLI: 403.
   Together with (4) a page in the owner's browser can neither read from nor write to the API.
3. **Size**: a body over :data:`MAX_BODY` (3 MiB, the Kubernetes API server's request limit) is refused with 413
   before it is read in full.
4. **Content type**: a body must be ``application/json`` (415 otherwise: a browser's form or ``text/plain``
   "simple request" cannot reach a handler).
5. **Credential**: ``Authorization: Bearer <token>``, where the token is the content of the control plane's
   credential file (``<run dir>/api-token``, mode 0600, :mod:`mesh_ctl.credential`: in the spirit of a kubeconfig or
   Docker's socket, only the user who started the mesh can read it; the CLI sends it without the user
   noticing). 401 otherwise. ``/ready`` (for the supervisor's probe) and ``/openapi.json`` (the API's
   published description) need no credential and tell nothing about the mesh.

The service graph's pages (``/ui/``, :mod:`mesh_ctl.graph`) are for a browser, which cannot send the
credential: a GET or HEAD under ``/ui/`` is also let in with a valid session cookie (``/ui/login`` with a
one-time code makes one: :mod:`mesh_ctl.graph.access`), and (2) lets through an ``Origin`` that is this very
server (the page's own event stream). The cookie opens nothing else: no API path, no other method.

Audit: every request that changes something (any method but GET) is logged on ``mesh_ctl.audit`` with who
asked: the peer address, the peer's uid (read from ``/proc/net/tcp``: the socket's owner, which the kernel
knows and the caller cannot forge), and the ``User-Agent`` the CLI fills with the command, user and pid.
Handlers add what they changed (see :func:`caller`).

Errors become responses in one place: :class:`HttpError` (``{"error": message, **extra}``), request validation
errors (400, with the field), and anything else (500, logged with its traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

log = logging.getLogger("mesh_ctl.api")
audit = logging.getLogger("mesh_ctl.audit")

MAX_BODY = 3 * 1024 * 1024  # the Kubernetes API server's request limit
PUBLIC_PATHS = frozenset({"/ready", "/openapi.json"})
TOO_LARGE = "the request body is larger than 3 MiB (the Kubernetes API server's limit)"
UI_PREFIX = "/ui/"
UI_LOGIN = "/ui/login"
UI_UNAUTHORIZED = ("the service graph needs a session: open it with `mesh_ctl dashboard` (it prints a one-time "
                   "login URL; --open opens it), run by the user who started the mesh")
UNAUTHORIZED = ("this control plane needs its owner's credential (Authorization: Bearer <the content of the run "
                "dir's api-token file>); mesh_ctl sends it when the user running it can read that file")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="?")


def caller() -> str:
    """Who made the current request, for the audit lines handlers write (``uid 1000 (mesh_ctl apply, ...)``)."""
    return _caller.get()


class HttpError(Exception):
    """Raised by a handler: answered as ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


# ------------------------------------------------------------------------------------------------ who asked


def peer_uid(host: str, port: int, local_port: int) -> int | None:
    """The uid owning the TCP socket ``host:port`` connected to our ``local_port`` (loopback peers only: the
    kernel's socket table, ``/proc/net/tcp`` and ``tcp6``). None where that cannot be told."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 8:
                    continue
                local, remote, uid = fields[1], fields[2], fields[7]
                if _port(local) == port and _port(remote) == local_port and _matches(local, address):
                    return int(uid)
    return None


def _port(hex_address: str) -> int:
    return int(hex_address.rsplit(":", 1)[1], 16)


def _matches(hex_address: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    raw = bytes.fromhex(hex_address.rsplit(":", 1)[0])
    if len(raw) == 4:
        return bool(raw[::-1] == address.packed)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc prints IPv6 as 4 little-endian words
    mapped = b"\0" * 10 + b"\xff\xff" + address.packed  # an IPv4 peer on an IPv6 socket
    return bool(words == address.packed or (address.version == 4 and words == mapped))


def _describe_caller(scope: Scope) -> str:
    client = scope.get("client") or ("?", 0)
    server = scope.get("server") or ("?", 0)
    uid = peer_uid(str(client[0]), int(client[1]), int(server[1])) if client[0] != "?" else None
    agent = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"user-agent"), "-")
    who = f"uid {uid}" if uid is not None else "uid unknown"
    return f"{who} ({agent}) from {client[0]}:{client[1]}"


# ------------------------------------------------------------------------------------------------ middleware


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                  headers: dict[str, str] | None = None) -> None:
    await JSONResponse({"error": message}, status, headers=headers)(scope, receive, send)


class Guard:
    """Checks (2) to (5) of the module docstring, and the audit line of each changing request."""

    def __init__(self, app: ASGIApp, token: str, sessions: Callable[[str | None], bool] | None = None,
                 cookie: str = "") -> None:
        self.app = app
        self.token = token.encode()
        self.sessions = sessions  # session id -> valid? (the UI's cookie; None: no UI)
        self.cookie = cookie

    def _ui_read(self, method: str, path: str) -> bool:
        return self.sessions is not None and method in ("GET", "HEAD") and path.startswith(UI_PREFIX)

    def _session(self, headers: dict[str, str]) -> str | None:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and value:
                return value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # fail closed: no route takes one, and none would be guarded here
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method, path = scope["method"], scope["path"]
        same_origin = headers.get("origin") == f"http://{headers.get('host', '')}"
        if "origin" in headers and not (same_origin and self._ui_read(method, path)):
            await _refuse(scope, receive, send, 403, f"cross-origin request from {headers['origin']!r} refused: "
                          "the management API serves the mesh_ctl CLI, not web pages")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _refuse(scope, receive, send, 413, TOO_LARGE)
            return
        has_body = method not in ("GET", "HEAD") and (length not in (None, "0") or "transfer-encoding" in headers)
        if has_body and headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            await _refuse(scope, receive, send, 415, "a request body must be JSON (Content-Type: application/json)")
            return
        if path not in PUBLIC_PATHS:
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            bearer = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)
            ui = self._ui_read(method, path) and (path == UI_LOGIN or bool(
                self.sessions and self.sessions(self._session(headers))))
            if not bearer and not ui:
                if self._ui_read(method, path):
                    await _refuse(scope, receive, send, 401, UI_UNAUTHORIZED)
                    return
                await _refuse(scope, receive, send, 401, UNAUTHORIZED, {"www-authenticate": 'Bearer realm="minimesh"'})
                return
        who = _describe_caller(scope) if method != "GET" else "-"  # only changes are audited; GETs are frequent
        token = _caller.set(who)
        status = 0

        received = 0

        async def counting_receive() -> Message:  # a chunked body has no Content-Length to check up front
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise HttpError(413, TOO_LARGE)
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            _caller.reset(token)
            if method != "GET":
                audit.info("%s %s -> %s by %s", method, path, status or "no answer", who)


# ------------------------------------------------------------------------------------------------ the app


def build_app(title: str, version: str, allowed_hosts: list[str], token: str,
              sessions: Callable[[str | None], bool] | None = None, cookie: str = "") -> FastAPI:
    """The FastAPI application: routers are included by the caller (``app.include_router``). ``sessions``
    says whether a UI session cookie named ``cookie`` is valid (None: no UI, the credential only)."""
    app = FastAPI(title=title, version=version, docs_url=None, redoc_url=None,
                  description="The minimesh control plane's management API (istiod's port 15014): what the "
                              "mesh_ctl CLI calls. Every endpoint but /ready and /openapi.json needs "
                              "`Authorization: Bearer <run dir>/api-token`.")

    @app.exception_handler(HttpError)
    async def http_error(_: Request, e: HttpError) -> JSONResponse:
        return JSONResponse({"error": e.message, **e.extra}, e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, 500)

    app.add_middleware(Guard, token=token, sessions=sessions, cookie=cookie)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)  # outermost: checked first
    return app


def allowed_hosts(bound_host: str) -> list[str]:
    hosts = {"localhost", "127.0.0.1", "::1", "[::1]", bound_host}
    return sorted(h for h in hosts if h not in ("0.0.0.0", "::"))


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the control plane handles SIGTERM/SIGINT itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """uvicorn serving ``app`` on a socket bound before it starts (port 0: any free port)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=5, timeout_graceful_shutdown=2, limit_concurrency=64,
                                server_header=False,
                                h11_max_incomplete_event_size=16 * 1024)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="management-api")
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raise what stopped it
        if not self._server.started:
            raise OSError(f"the management API did not start on {host}:{port}")
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        # uvicorn gives open connections timeout_graceful_shutdown (2 s); a task still running after that is
        # cancelled: stopping the control plane never hangs on a client that keeps its connection open.
        try:
            await asyncio.wait_for(self._task, 5.0)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # close() itself was cancelled: that must reach whoever cancelled it
            # else the server's task was cancelled by someone else: it is stopped, which is all close() wants
