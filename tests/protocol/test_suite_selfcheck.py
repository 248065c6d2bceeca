"""Checks of the suite's own tools, independent of the target: the generated configs are valid, the backend
and the reference server answer, and the h2spec-style verdicts fail when they must (a checker that cannot
fail checks nothing). These tests do not use the ``target`` fixture, so they run before pyproxy exists.
"""

from __future__ import annotations

import shutil
import socket
import struct
import threading
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - registers the type URL
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,  # noqa: F401 - registers the type URL
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - registers the type URL
from google.protobuf import json_format

from tests.protocol.flood import drain
from tests.protocol.grpc_shapes import check_serving, grpc_message, grpc_messages
from tests.protocol.h2peer import (
    PREFACE,
    Closed,
    ErrorCode,
    ExpectationError,
    FrameType,
    H2Peer,
    raw_frame,
)
from tests.protocol.targets import (
    MAX_CONCURRENT_STREAMS,
    Backend,
    envoy_bootstrap,
    nginx_config,
    nginx_syntax_ok,
    start_target,
)
from tests.support.procs import ProcessGroup

SERVER_SETTINGS = raw_frame(FrameType.SETTINGS, 0, 0)
SETTINGS_ACK = raw_frame(FrameType.SETTINGS, 0x1, 0)


def test_bootstrap_is_a_valid_envoy_v3_bootstrap() -> None:
    """The generated bootstrap parses as ``envoy.config.bootstrap.v3.Bootstrap`` (unknown fields rejected)."""
    text = yaml.safe_dump(envoy_bootstrap(10000, 10001, 10002))
    bootstrap = json_format.ParseDict(yaml.safe_load(text), bootstrap_pb2.Bootstrap())
    listener = bootstrap.static_resources.listeners[0]
    assert listener.address.socket_address.port_value == 10000
    assert bootstrap.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert listener.filter_chains[0].filters[0].typed_config.type_url.endswith("HttpConnectionManager")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, 10000, 10002))
    result = nginx_syntax_ok(conf)
    assert result.returncode == 0, result.stderr


def test_backend_answers_directly(procs: ProcessGroup) -> None:
    """Unary echo (message and x-echo-* headers), server streaming, Seen and Count, straight over grpcio."""
    backend = Backend(procs)
    try:
        with grpc.insecure_channel(f"{backend.host}:{backend.port}") as channel:
            unary = channel.unary_unary("/test.Echo/Unary", request_serializer=None, response_deserializer=None)
            reply, call = unary.with_call(b"ping", metadata=(("x-echo-a", "1"), ("x-test-id", "t-1")), timeout=5)
            assert reply == b"ping"
            assert ("x-echo-a", "1") in [tuple(m) for m in call.initial_metadata()]
            stream = channel.unary_stream("/test.Echo/Stream", request_serializer=None, response_deserializer=None)
            sizes = [len(m) for m in stream(b"", metadata=(("x-stream-count", "3"), ("x-stream-size", "7")), timeout=5)]
            assert sizes == [7, 7, 7]
        assert backend.seen("t-1")
        assert not backend.seen("t-2")
        assert backend.count() == 2  # Unary and Stream; Seen does not count itself
    finally:
        backend.close()


def test_reference_server_serves_grpc(procs: ProcessGroup) -> None:
    """The h2 reference server answers a gRPC echo and advertises the suite's concurrency limit."""
    target = start_target("h2server", procs, backend_port=0)
    assert check_serving(target.host, target.port) is None
    with H2Peer(target.host, target.port) as peer:
        peer.handshake()
        assert peer.server_settings[0x3] == MAX_CONCURRENT_STREAMS


def test_grpc_framing_round_trip() -> None:
    body = grpc_message(b"a") + grpc_message(b"") + grpc_message(b"xyz")
    assert grpc_messages(body) == [b"a", b"", b"xyz"]
    with pytest.raises(ValueError, match="truncated"):
        grpc_messages(body[:-1])


# ------------------------------------------------------------------------------------------- verdicts


class ScriptedServer:
    """Accepts one connection, reads the client preface + SETTINGS, writes the script, holds or closes."""

    def __init__(self, *parts: bytes, close: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.parts = parts
        self.close_after = close
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(3)
            received = b""
            while len(received) < len(PREFACE) + 9:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                received += chunk
            for part in self.parts:
                conn.sendall(part)
            if not self.close_after:
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass

    def peer(self) -> H2Peer:
        return H2Peer("127.0.0.1", self.port, timeout=0.5)

    def stop(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


def goaway(code: int) -> bytes:
    return raw_frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", 0, code))


def test_connection_error_verdicts() -> None:
    """GOAWAY with the right code passes; with another code fails at once; silence fails at the deadline."""
    right = ScriptedServer(SERVER_SETTINGS, SETTINGS_ACK, goaway(ErrorCode.PROTOCOL_ERROR))
    with right.peer() as peer:
        peer.handshake()
        peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
    right.stop()

    wrong = ScriptedServer(SERVER_SETTINGS, SETTINGS_ACK, goaway(ErrorCode.NO_ERROR))
    with wrong.peer() as peer:
        peer.handshake()
        with pytest.raises(ExpectationError, match="NO_ERROR"):
            peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
    wrong.stop()

    silent = ScriptedServer(SERVER_SETTINGS, SETTINGS_ACK)
    with silent.peer() as peer:
        peer.handshake()
        with pytest.raises(ExpectationError, match="Timeout"):
            peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
    silent.stop()


def test_stream_error_and_ping_verdicts() -> None:
    rst = raw_frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", ErrorCode.REFUSED_STREAM))
    server = ScriptedServer(SERVER_SETTINGS, SETTINGS_ACK, rst, raw_frame(FrameType.PING, 0x1, 0, b"other!!!"))
    with server.peer() as peer:
        peer.handshake()
        peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR, ErrorCode.REFUSED_STREAM, stream_id=1)
        with pytest.raises(ExpectationError, match="other"):
            peer.expect_ping_ack(b"expected")
    server.stop()


def test_handshake_fails_without_server_settings() -> None:
    server = ScriptedServer(b"HTTP/1.1 400 Bad Request\r\n\r\n", close=True)
    with server.peer() as peer, pytest.raises(ExpectationError):
        peer.handshake()
    server.stop()


def test_closed_event_keeps_unparsed_bytes() -> None:
    server = ScriptedServer(SERVER_SETTINGS, b"HTTP/1.1 400", close=True)
    with server.peer() as peer:
        peer.send_preface()
        assert peer.read_event().type == FrameType.SETTINGS  # type: ignore[union-attr]
        closed = peer.read_event()
        assert isinstance(closed, Closed) and closed.trailing == b"HTTP/1.1 400", closed
    server.stop()


def test_drain_counts_frames_and_goaway() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(raw_frame(FrameType.PING, 0x1, 0, b"\0" * 8) * 3 + goaway(ErrorCode.ENHANCE_YOUR_CALM))
        a.shutdown(socket.SHUT_WR)
        drained = drain(b, 2.0)
    assert drained.frames["PING"] == 3
    assert drained.goaways == [(0, ErrorCode.ENHANCE_YOUR_CALM)]
    assert drained.closed and drained.terminated
