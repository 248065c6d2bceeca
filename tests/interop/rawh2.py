"""A minimal gRPC-over-HTTP/2 client (h2 + blocking sockets) for the one case grpcio cannot express.

``client_compressed_streaming`` sends, in one call, a gzip-compressed message followed by an uncompressed
one; grpcio's Python API chooses compression per call, not per message. This client writes the frames
itself (gRPC length-prefixed messages with their own compressed flag, ``grpc-encoding: gzip``), honours
HTTP/2 flow control and reads the response, trailers-only answers included. Plaintext (h2c with prior
knowledge) or TLS with ALPN ``h2``, like the grpcio client of the same run.
"""

from __future__ import annotations

import argparse
import gzip
import socket
import ssl
import struct
import time
import urllib.parse
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from tests.interop.calls import InteropError, check, method_path
from tests.interop.proto import messages_pb2

_READ_SIZE = 65536


@dataclass
class RawResponse:
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset_code: int | None = None

    @property
    def status(self) -> int | None:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)

    @property
    def status_message(self) -> str:
        raw = self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))
        return urllib.parse.unquote(raw)

    def messages(self) -> list[bytes]:
        out: list[bytes] = []
        data, offset = bytes(self.body), 0
        while offset < len(data):
            flag, length = struct.unpack_from(">BI", data, offset)
            payload = data[offset + 5 : offset + 5 + length]
            if len(payload) != length:
                raise InteropError(f"truncated gRPC message: {len(payload)} of {length} bytes")
            out.append(gzip.decompress(payload) if flag == 1 else payload)
            offset += 5 + length
        return out


def frame(message: bytes, compress: bool) -> bytes:
    """One gRPC length-prefixed message; ``compress`` gzips it and sets the compressed flag."""
    payload = gzip.compress(message) if compress else message
    return struct.pack(">BI", 1 if compress else 0, len(payload)) + payload


def _connect(args: argparse.Namespace, timeout: float) -> socket.socket:
    sock = socket.create_connection((args.server_host, args.server_port), timeout=timeout)
    if not args.use_tls:
        return sock
    context = ssl.create_default_context(cafile=args.ca_file if args.use_test_ca else None)
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(sock, server_hostname=args.server_host_override or args.server_host)
    if tls.selected_alpn_protocol() != "h2":
        tls.close()
        raise InteropError(f"TLS peer did not negotiate h2 (ALPN {tls.selected_alpn_protocol()!r})")
    return tls


def unary_stream_call(
    args: argparse.Namespace,
    path: str,
    frames: list[bytes],
    extra_headers: list[tuple[str, str]],
    timeout: float,
) -> RawResponse:
    """Send ``frames`` as the request body of one call (then half-close) and collect the whole response."""
    deadline = time.monotonic() + timeout
    sock = _connect(args, timeout)
    try:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        authority = args.server_host_override or f"{args.server_host}:{args.server_port}"
        conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "https" if args.use_tls else "http"),
                (":path", path),
                (":authority", authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-accept-encoding", "identity,gzip"),
                ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
                ("user-agent", "minimesh-interop-rawh2"),
                *extra_headers,
            ],
        )
        sock.sendall(conn.data_to_send())
        response = RawResponse()
        pending: memoryview | None = memoryview(b"".join(frames))
        done = False
        while not done:
            if pending is not None:
                pending = _send_what_fits(conn, stream_id, pending)
            sock.sendall(conn.data_to_send())
            if time.monotonic() > deadline:
                raise InteropError(f"raw h2 call {path}: no complete response within {timeout} s")
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(_READ_SIZE)
            if not data:
                raise InteropError(f"raw h2 call {path}: connection closed before the response ended")
            for event in conn.receive_data(data):
                done = _apply(event, stream_id, conn, response) or done
            sock.sendall(conn.data_to_send())
        conn.close_connection()
        sock.sendall(conn.data_to_send())
        return response
    finally:
        sock.close()


def _send_what_fits(
    conn: h2.connection.H2Connection, stream_id: int, pending: memoryview
) -> memoryview | None:
    """Send as much of ``pending`` as flow control allows (ending the stream with the last byte)."""
    while True:
        window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if window <= 0 and len(pending) > 0:
            return pending
        chunk, rest = pending[:window], pending[window:]
        conn.send_data(stream_id, bytes(chunk), end_stream=len(rest) == 0)
        if len(rest) == 0:
            return None
        pending = rest


def _apply(
    event: h2.events.Event, stream_id: int, conn: h2.connection.H2Connection, response: RawResponse
) -> bool:
    """Record one h2 event; True when the stream is over."""
    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
        response.headers.update(_decode(event.headers))
    elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == stream_id:
        response.trailers.update(_decode(event.headers))
    elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
        response.body += event.data
        conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
    elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
        response.reset_code = int(event.error_code)
        return True
    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
        return True
    elif isinstance(event, h2.events.ConnectionTerminated):
        raise InteropError(
            f"connection terminated by the peer: {event.error_code!r} {event.additional_data!r}"
        )
    return False


def _decode(headers: object) -> dict[str, str]:
    assert isinstance(headers, list)
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in headers
    }


def _expect(response: RawResponse, status: int, what: str) -> None:
    check(response.reset_code is None, f"{what}: stream reset with error code {response.reset_code}")
    check(response.headers.get(":status") == "200", f"{what}: HTTP status {response.headers.get(':status')}")
    check(
        response.status == status,
        f"{what}: grpc-status {response.status} ({response.status_message!r}), want {status}",
    )


def client_compressed_streaming(args: argparse.Namespace, timeout: float) -> None:
    """The spec's procedure: an uncompressed probe that must be rejected, then compressed + uncompressed."""
    path = method_path("TestService", "StreamingInputCall")

    def request(expect: bool, size: int) -> bytes:
        return messages_pb2.StreamingInputCallRequest(
            expect_compressed=messages_pb2.BoolValue(value=expect),
            payload=messages_pb2.Payload(body=b"\x00" * size),
        ).SerializeToString()

    probe = unary_stream_call(args, path, [frame(request(True, 27182), compress=False)], [], timeout)
    _expect(probe, 3, "probe (uncompressed message, expect_compressed=true)")
    response = unary_stream_call(
        args,
        path,
        [frame(request(True, 27182), compress=True), frame(request(False, 45904), compress=False)],
        [("grpc-encoding", "gzip")],
        timeout,
    )
    _expect(response, 0, "compressed + uncompressed messages")
    messages = response.messages()
    check(len(messages) == 1, f"{len(messages)} response messages, want 1")
    aggregated = messages_pb2.StreamingInputCallResponse.FromString(messages[0]).aggregated_payload_size
    check(aggregated == 73086, f"aggregated_payload_size {aggregated}, want 73086")
