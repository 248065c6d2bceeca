"""The interop test cases, as specified in grpc/grpc ``doc/interop-test-descriptions.md``.

Request contents and assertions follow the spec; the mechanics (pipes for bidi calls, futures for
cancellation, ``with_call`` for metadata) follow the official Python client's ``methods.py``. Every RPC has a
deadline (``--rpc_timeout_s``, a hang guard far above any expected latency) except where the case sets its
own. ``client_compressed_streaming`` needs per-message compression control, which grpcio's client API lacks,
so it speaks HTTP/2 directly (:mod:`tests.interop.rawh2`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import grpc

from tests.interop import rawh2, soak
from tests.interop.calls import (
    InspectingClient,
    Pipe,
    TestServiceClient,
    check,
    check_payload,
    expect_status,
    metadata_value,
    zeros,
)
from tests.interop.proto import empty_pb2, messages_pb2

REQUEST_SIZES = (27182, 8, 1828, 45904)
RESPONSE_SIZES = (31415, 9, 2653, 58979)
LARGE_REQUEST, LARGE_RESPONSE = 271828, 314159
INITIAL_KEY, INITIAL_VALUE = "x-grpc-test-echo-initial", "test_initial_metadata_value"
TRAILING_KEY, TRAILING_VALUE = "x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"

StreamingOut = messages_pb2.StreamingOutputCallRequest


@dataclass
class CaseContext:
    """What a case gets: channels to the target (closed afterwards) and the client's flags."""

    args: argparse.Namespace
    open_channel: Callable[[bool], grpc.Channel]  # (inspect_compression) -> a new channel
    rpc_timeout: float
    log: Callable[[str], None]
    _channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self, inspect_compression: bool = False) -> grpc.Channel:
        channel = self.open_channel(inspect_compression)
        self._channels.append(channel)
        return channel

    @cached_property
    def stub(self) -> TestServiceClient:
        return TestServiceClient(self.channel())

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


def large_request(**fields: object) -> messages_pb2.SimpleRequest:
    return messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_size=LARGE_RESPONSE,
        payload=zeros(LARGE_REQUEST),
        **fields,  # type: ignore[arg-type]
    )


def empty_unary(ctx: CaseContext) -> None:
    response = ctx.stub.empty_call(empty_pb2.Empty(), timeout=ctx.rpc_timeout)
    check(isinstance(response, empty_pb2.Empty), f"response is {type(response)}, want grpc.testing.Empty")


def large_unary(ctx: CaseContext) -> None:
    response = ctx.stub.unary_call(large_request(), timeout=ctx.rpc_timeout)
    check_payload(response.payload, LARGE_RESPONSE)


def client_compressed_unary(ctx: CaseContext) -> None:
    def request(expect: bool) -> messages_pb2.SimpleRequest:
        return large_request(expect_compressed=messages_pb2.BoolValue(value=expect))

    stub, timeout = ctx.stub, ctx.rpc_timeout
    expect_status(
        lambda: stub.unary_call(request(True), timeout=timeout, compression=grpc.Compression.NoCompression),
        grpc.StatusCode.INVALID_ARGUMENT,
        what="probe (uncompressed request, expect_compressed=true)",
    )
    response = stub.unary_call(request(True), timeout=timeout, compression=grpc.Compression.Gzip)
    check_payload(response.payload, LARGE_RESPONSE, "compressed request")
    response = stub.unary_call(request(False), timeout=timeout, compression=grpc.Compression.NoCompression)
    check_payload(response.payload, LARGE_RESPONSE, "uncompressed request")


def server_compressed_unary(ctx: CaseContext) -> None:
    client = InspectingClient(ctx.channel(inspect_compression=True))
    for compressed in (True, False):
        request = large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        received = client.unary_call(request, timeout=ctx.rpc_timeout)
        check(
            received.compressed == compressed,
            f"response_compressed={compressed}: the response's compressed flag is {received.compressed}",
        )
        check_payload(received.message.payload, LARGE_RESPONSE, f"response_compressed={compressed}")


def client_streaming(ctx: CaseContext) -> None:
    requests = (messages_pb2.StreamingInputCallRequest(payload=zeros(size)) for size in REQUEST_SIZES)
    response = ctx.stub.streaming_input_call(requests, timeout=ctx.rpc_timeout)
    check(
        response.aggregated_payload_size == 74922,
        f"aggregated_payload_size {response.aggregated_payload_size}",
    )


def client_compressed_streaming(ctx: CaseContext) -> None:
    rawh2.client_compressed_streaming(ctx.args, ctx.rpc_timeout)


def server_streaming(ctx: CaseContext) -> None:
    request = StreamingOut(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=size) for size in RESPONSE_SIZES],
    )
    responses = list(ctx.stub.streaming_output_call(request, timeout=ctx.rpc_timeout))
    check(len(responses) == len(RESPONSE_SIZES), f"{len(responses)} responses, want {len(RESPONSE_SIZES)}")
    for index, (response, size) in enumerate(zip(responses, RESPONSE_SIZES, strict=True)):
        check_payload(response.payload, size, f"response {index}")


def server_compressed_streaming(ctx: CaseContext) -> None:
    client = InspectingClient(ctx.channel(inspect_compression=True))
    plan = ((True, 31415), (False, 92653))
    request = StreamingOut(
        response_parameters=[
            messages_pb2.ResponseParameters(compressed=messages_pb2.BoolValue(value=c), size=s)
            for c, s in plan
        ]
    )
    received = list(client.streaming_output_call(request, timeout=ctx.rpc_timeout))
    check(len(received) == len(plan), f"{len(received)} responses, want {len(plan)}")
    for index, (got, (compressed, size)) in enumerate(zip(received, plan, strict=True)):
        check(
            got.compressed == compressed,
            f"response {index}: compressed flag {got.compressed}, want {compressed}",
        )
        check_payload(got.message.payload, size, f"response {index}")


def _ping(response_size: int, payload_size: int) -> StreamingOut:
    return StreamingOut(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
        payload=zeros(payload_size),
    )


def ping_pong(ctx: CaseContext) -> None:
    with Pipe[StreamingOut]() as pipe:
        call = ctx.stub.full_duplex_call(pipe, timeout=ctx.rpc_timeout)
        responses = iter(call)
        for index, (response_size, payload_size) in enumerate(
            zip(RESPONSE_SIZES, REQUEST_SIZES, strict=True)
        ):
            pipe.add(_ping(response_size, payload_size))
            check_payload(next(responses).payload, response_size, f"response {index}")
        pipe.close()
        rest = list(responses)
        check(not rest, f"{len(rest)} responses after the last ping, want none")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}, want OK")


def empty_stream(ctx: CaseContext) -> None:
    with Pipe[StreamingOut]() as pipe:
        call = ctx.stub.full_duplex_call(pipe, timeout=ctx.rpc_timeout)
        pipe.close()
        responses = list(call)
        check(not responses, f"{len(responses)} responses, want 0")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}, want OK")


def timeout_on_sleeping_server(ctx: CaseContext) -> None:
    with Pipe[StreamingOut]() as pipe:
        call = ctx.stub.full_duplex_call(pipe, timeout=0.001)
        pipe.add(StreamingOut(response_type=messages_pb2.COMPRESSABLE, payload=zeros(27182)))
        expect_status(lambda: next(iter(call)), grpc.StatusCode.DEADLINE_EXCEEDED)


def cancel_after_begin(ctx: CaseContext) -> None:
    with Pipe[messages_pb2.StreamingInputCallRequest]() as pipe:
        future = ctx.stub.streaming_input_call.future(pipe, timeout=ctx.rpc_timeout)
        future.cancel()  # type: ignore[no-untyped-call]
        check(future.cancelled(), "the call does not report itself cancelled")
        check(future.code() == grpc.StatusCode.CANCELLED, f"status {future.code()}, want CANCELLED")


def cancel_after_first_response(ctx: CaseContext) -> None:
    with Pipe[StreamingOut]() as pipe:
        call = ctx.stub.full_duplex_call(pipe, timeout=ctx.rpc_timeout)
        responses = iter(call)
        pipe.add(_ping(RESPONSE_SIZES[0], REQUEST_SIZES[0]))
        next(responses)
        call.cancel()  # type: ignore[no-untyped-call]
        expect_status(lambda: next(responses), grpc.StatusCode.CANCELLED, what="next message after cancel")


def _check_echoed_metadata(initial: object, trailing: object, what: str) -> None:
    got_initial = metadata_value(initial, INITIAL_KEY)
    check(got_initial == INITIAL_VALUE, f"{what}: initial metadata {INITIAL_KEY}={got_initial!r}")
    got_trailing = metadata_value(trailing, TRAILING_KEY)
    check(got_trailing == TRAILING_VALUE, f"{what}: trailing metadata {TRAILING_KEY}={got_trailing!r}")


def custom_metadata(ctx: CaseContext) -> None:
    metadata = ((INITIAL_KEY, INITIAL_VALUE), (TRAILING_KEY, TRAILING_VALUE))
    response, call = ctx.stub.unary_call.with_call(
        large_request(), timeout=ctx.rpc_timeout, metadata=metadata
    )
    check_payload(response.payload, LARGE_RESPONSE, "UnaryCall")
    _check_echoed_metadata(call.initial_metadata(), call.trailing_metadata(), "UnaryCall")
    with Pipe[StreamingOut]() as pipe:
        stream = ctx.stub.full_duplex_call(pipe, timeout=ctx.rpc_timeout, metadata=metadata)
        pipe.add(_ping(LARGE_RESPONSE, LARGE_REQUEST))
        pipe.close()
        responses = list(stream)
    check(len(responses) == 1, f"FullDuplexCall: {len(responses)} responses, want 1")
    check_payload(responses[0].payload, LARGE_RESPONSE, "FullDuplexCall")
    _check_echoed_metadata(stream.initial_metadata(), stream.trailing_metadata(), "FullDuplexCall")


def _echo_status_cases(ctx: CaseContext, message: str, with_stream: bool) -> None:
    status = messages_pb2.EchoStatus(code=2, message=message)
    stub, timeout = ctx.stub, ctx.rpc_timeout
    expect_status(
        lambda: stub.unary_call(messages_pb2.SimpleRequest(response_status=status), timeout=timeout),
        grpc.StatusCode.UNKNOWN,
        message,
        what="UnaryCall",
    )
    if not with_stream:
        return
    with Pipe[StreamingOut]() as pipe:
        call = stub.full_duplex_call(pipe, timeout=timeout)
        pipe.add(StreamingOut(response_status=status))
        pipe.close()
        expect_status(lambda: list(call), grpc.StatusCode.UNKNOWN, message, what="FullDuplexCall")


def status_code_and_message(ctx: CaseContext) -> None:
    _echo_status_cases(ctx, "test status message", with_stream=True)


def special_status_message(ctx: CaseContext) -> None:
    _echo_status_cases(ctx, SPECIAL_MESSAGE, with_stream=False)


def unimplemented_method(ctx: CaseContext) -> None:
    expect_status(
        lambda: ctx.stub.unimplemented_call(empty_pb2.Empty(), timeout=ctx.rpc_timeout),
        grpc.StatusCode.UNIMPLEMENTED,
        what="grpc.testing.TestService/UnimplementedCall",
    )


def unimplemented_service(ctx: CaseContext) -> None:
    expect_status(
        lambda: ctx.stub.unimplemented_service_call(empty_pb2.Empty(), timeout=ctx.rpc_timeout),
        grpc.StatusCode.UNIMPLEMENTED,
        what="grpc.testing.UnimplementedService/UnimplementedCall",
    )


def rpc_soak(ctx: CaseContext) -> None:
    soak.run_soak(ctx.args, ctx.open_channel, new_channel_per_rpc=False, log=ctx.log)


def channel_soak(ctx: CaseContext) -> None:
    soak.run_soak(ctx.args, ctx.open_channel, new_channel_per_rpc=True, log=ctx.log)


CASES: dict[str, Callable[[CaseContext], None]] = {
    "empty_unary": empty_unary,
    "large_unary": large_unary,
    "client_compressed_unary": client_compressed_unary,
    "server_compressed_unary": server_compressed_unary,
    "client_streaming": client_streaming,
    "client_compressed_streaming": client_compressed_streaming,
    "server_streaming": server_streaming,
    "server_compressed_streaming": server_compressed_streaming,
    "ping_pong": ping_pong,
    "empty_stream": empty_stream,
    "timeout_on_sleeping_server": timeout_on_sleeping_server,
    "cancel_after_begin": cancel_after_begin,
    "cancel_after_first_response": cancel_after_first_response,
    "custom_metadata": custom_metadata,
    "status_code_and_message": status_code_and_message,
    "special_status_message": special_status_message,
    "unimplemented_method": unimplemented_method,
    "unimplemented_service": unimplemented_service,
    "rpc_soak": rpc_soak,
    "channel_soak": channel_soak,
}
