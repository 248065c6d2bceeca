"""gRPC-shaped requests and responses for the protocol suite, on top of :mod:`tests.protocol.h2peer`.

A valid request is what a gRPC client sends: ``POST``, ``content-type: application/grpc``, ``te: trailers``,
a body of length-prefixed messages. The backend (:mod:`tests.protocol.backend`) and the reference server
implement three methods on these bytes (no protobuf): ``/test.Echo/Unary`` echoes the message and every
``x-echo-*`` request header, ``/test.Echo/Stream`` returns ``x-stream-count`` messages of ``x-stream-size``
bytes, ``/test.Echo/Seen`` answers whether a request carrying ``x-test-id: <body>`` ever reached the backend.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.protocol.h2peer import (
    DEFAULT_TIMEOUT,
    Closed,
    H2Peer,
    Header,
    ReadError,
    TimedOut,
    code_name,
    describe,
)

UNARY = "/test.Echo/Unary"
STREAM = "/test.Echo/Stream"
SEEN = "/test.Echo/Seen"


def grpc_message(payload: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return struct.pack(">BI", 0, len(payload)) + payload


def grpc_messages(body: bytes) -> list[bytes]:
    """Split a gRPC body into messages; a truncated tail raises ValueError."""
    out: list[bytes] = []
    i = 0
    while i < len(body):
        if len(body) - i < 5:
            raise ValueError(f"truncated gRPC message prefix at offset {i}")
        (length,) = struct.unpack(">I", body[i + 1 : i + 5])
        if len(body) - i - 5 < length:
            raise ValueError(f"truncated gRPC message at offset {i}")
        out.append(body[i + 5 : i + 5 + length])
        i += 5 + length
    return out


def request_headers(authority: str, path: str = UNARY, extra: Iterable[Header] = ()) -> list[Header]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def replace_header(headers: Sequence[Header], name: str, value: str) -> list[Header]:
    return [(n, value if n == name else v) for n, v in headers]


def drop_header(headers: Sequence[Header], name: str) -> list[Header]:
    return [(n, v) for n, v in headers if n != name]


@dataclass(slots=True)
class Response:
    """Everything the server sent on one stream, once it ended (or was reset / the connection closed)."""

    stream_id: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reset: int | None = None
    closed: Closed | None = None

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    @property
    def status(self) -> str | None:
        return self.header(":status")

    @property
    def grpc_status(self) -> str | None:
        """grpc-status from the trailers, or from the headers of a trailers-only response."""
        for n, v in [*self.trailers, *self.headers]:
            if n == "grpc-status":
                return v
        return None

    @property
    def ok(self) -> bool:
        return self.reset is None and self.status == "200" and self.grpc_status == "0"

    def summary(self) -> str:
        reset = f" RST_STREAM({code_name(self.reset)})" if self.reset is not None else ""
        closed = f" {describe(self.closed)}" if self.closed else ""
        fields = f"headers={self.headers} trailers={self.trailers} body={len(self.body)}B"
        return f"stream {self.stream_id}: {fields}{reset}{closed}"


def send_request(
    peer: H2Peer,
    stream_id: int,
    payload: bytes = b"hello",
    *,
    path: str = UNARY,
    extra: Iterable[Header] = (),
    end_stream: bool = True,
) -> None:
    """A complete gRPC request: HEADERS, then one DATA frame holding one message (END_STREAM on the DATA)."""
    peer.send_headers(stream_id, request_headers(peer.authority, path, extra))
    peer.send_data(stream_id, grpc_message(payload), end_stream=end_stream)


def read_response(peer: H2Peer, stream_id: int, timeout: float | None = None) -> Response:
    """Read until ``stream_id`` ends, is reset, or the connection closes; raise AssertionError on timeout."""
    deadline = time.monotonic() + (peer.timeout if timeout is None else timeout)
    record = peer.stream(stream_id)
    while not record.ended and record.reset is None and peer.closed is None:
        event = peer.read_event(deadline - time.monotonic())
        if isinstance(event, TimedOut | ReadError):
            raise AssertionError(f"no complete response on stream {stream_id}: {describe(event)}")
    blocks = record.header_blocks
    return Response(
        stream_id=stream_id,
        headers=blocks[0] if blocks else [],
        trailers=blocks[-1] if len(blocks) > 1 else [],
        body=bytes(record.data),
        reset=record.reset,
        closed=peer.closed if not record.ended and record.reset is None else None,
    )


def assert_echo(response: Response, payload: bytes) -> None:
    """The response is a successful unary echo of ``payload``."""
    assert response.ok, f"expected a successful gRPC response, got {response.summary()}"
    assert (response.header("content-type") or "").startswith("application/grpc"), response.summary()
    assert grpc_messages(response.body) == [payload], response.summary()


def expect_grpc_ok(peer: H2Peer, stream_id: int, payload: bytes = b"hello", timeout: float | None = None) -> Response:
    response = read_response(peer, stream_id, timeout)
    assert_echo(response, payload)
    return response


def unary_call(
    host: str,
    port: int,
    payload: bytes,
    *,
    extra: Iterable[Header] = (),
    timeout: float = 5 * DEFAULT_TIMEOUT / 2,
    path: str = UNARY,
) -> Response:
    """One well-behaved gRPC call on a fresh connection."""
    with H2Peer(host, port, timeout=timeout) as peer:
        peer.handshake()
        send_request(peer, 1, payload, path=path, extra=extra)
        return read_response(peer, 1, timeout)


def check_serving(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None if a fresh, well-behaved connection gets a correct echo; otherwise what went wrong."""
    payload = f"health-{time.monotonic_ns()}".encode()
    try:
        response = unary_call(host, port, payload, timeout=timeout)
        assert_echo(response, payload)
    except (AssertionError, OSError, ValueError) as exc:
        return f"a fresh well-behaved connection did not get a correct gRPC response: {exc}"
    return None


def partial_message(payload: bytes = b"0123456789") -> bytes:
    """The first octets of a gRPC message: a body no backend can answer yet (h2spec sends b"test" here).

    Used before a malformed trailer section, so that the verdict cannot race a response.
    """
    return grpc_message(payload)[:7]


def dummy_headers(count: int, size: int = 4000) -> list[Header]:
    """h2spec's DummyHeaders: ``x-dummyN: xxx...`` with h2spec's default max header length (4000)."""
    return [(f"x-dummy{i}", "x" * size) for i in range(count)]
