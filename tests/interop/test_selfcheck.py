"""The interop cases can fail: break one server feature at a time and the case that covers it must fail.

A harness whose cases always pass would prove nothing about a proxy. Each mutant below is the kind of
damage a proxy can do (drop a trailer, lose the status message, strip the compressed flag, truncate a
message, invent one), applied to an in-process interop server; the matching client cases are run
in-process against it and must report failure. The unmutated server passes the same cases in
``test_interop.py::test_control_direct``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc
import pytest

from tests.interop import client, server
from tests.interop.proto import messages_pb2
from tests.interop.wire import Received

StreamingOutIn = Received[messages_pb2.StreamingOutputCallRequest]
Responses = Iterator[messages_pb2.StreamingOutputCallResponse]


def _no_compression(*_: object) -> bool:
    return False


def _ignore(*_: object) -> None:
    return None


def _short_payload(size: int, context: grpc.ServicerContext) -> messages_pb2.Payload:
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\x00" * max(0, size - 1))


_real_full_duplex = server.TestService.full_duplex_call


def _one_extra_response(
    self: server.TestService, requests: Iterable[StreamingOutIn], ctx: grpc.ServicerContext
) -> Responses:
    yield from _real_full_duplex(self, requests, ctx)
    yield messages_pb2.StreamingOutputCallResponse()


_real_unary = server.TestService.unary_call


def _never_compress_unary(
    self: server.TestService, received: server.SimpleIn, ctx: grpc.ServicerContext
) -> messages_pb2.SimpleResponse:
    response = _real_unary(self, received, ctx)
    ctx.set_compression(grpc.Compression.NoCompression)
    return response


MUTANTS: dict[str, tuple[object, str, Callable[..., object], list[str]]] = {
    "metadata not echoed": (server, "_echo_metadata", _ignore, ["custom_metadata"]),
    "status not echoed": (
        server,
        "_echo_status",
        _ignore,
        ["status_code_and_message", "special_status_message"],
    ),
    "compressed flag ignored": (
        server,
        "_check_compression",
        _ignore,
        ["client_compressed_unary", "client_compressed_streaming"],
    ),
    "response never compressed (stream)": (
        server,
        "_wants_compression",
        _no_compression,
        ["server_compressed_streaming"],
    ),
    "response never compressed (unary)": (
        server.TestService,
        "unary_call",
        _never_compress_unary,
        ["server_compressed_unary"],
    ),
    "payload one byte short": (
        server,
        "_payload",
        _short_payload,
        ["large_unary", "server_streaming", "ping_pong", "rpc_soak", "channel_soak"],
    ),
    "one response too many": (
        server.TestService,
        "full_duplex_call",
        _one_extra_response,
        ["empty_stream", "ping_pong"],
    ),
}


@pytest.fixture
def mutant_port(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    owner, name, replacement, _ = MUTANTS[request.param]
    monkeypatch.setattr(owner, name, replacement)
    grpc_server = server.build_server(max_workers=8)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield port
    finally:
        grpc_server.stop(grace=None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mutant_port", list(MUTANTS), indirect=True)
def test_case_detects_the_broken_feature(mutant_port: int, request: pytest.FixtureRequest) -> None:
    mutant = request.node.callspec.params["mutant_port"]
    for case in MUTANTS[mutant][3]:
        argv = [
            "--server_host=127.0.0.1",
            f"--server_port={mutant_port}",
            f"--test_case={case}",
            "--rpc_timeout_s=5",
        ]
        assert client.main(argv) == 1, f"{case} passed against a server with {mutant!r}"
