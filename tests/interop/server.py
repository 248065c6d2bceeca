"""The gRPC interop test server (``grpc.testing.TestService``).

As specified in grpc/grpc ``doc/interop-test-descriptions.md`` ("Server" section), with the official
Python server's behaviour.

Usage: ``python -m tests.interop.server --port=PORT [--use_tls=true --tls_cert_file=.. --tls_key_file=..]``

Server features: EmptyCall, UnaryCall, CacheableUnaryCall, StreamingInputCall, StreamingOutputCall,
FullDuplexCall, HalfDuplexCall, CompressedRequest / CompressedResponse (gzip), Echo Status, Echo Metadata
and ResponseParameters.interval_us. ``UnimplementedCall`` and ``grpc.testing.UnimplementedService`` are
deliberately absent, so gRPC answers UNIMPLEMENTED.

The handlers are registered generically (not through the generated servicer) so that each request message
comes with its compressed flag (:mod:`tests.interop.wire`): the CompressedRequest feature has to reject a
request whose compression does not match ``expect_compressed``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from types import FrameType
from typing import Any, NoReturn

import grpc

from tests.interop.proto import empty_pb2, messages_pb2
from tests.interop.wire import NO_DECOMPRESSION, Received, inspecting_deserializer, serialize

INITIAL_METADATA_KEY = "x-grpc-test-echo-initial"
TRAILING_METADATA_KEY = "x-grpc-test-echo-trailing-bin"
SERVICE = "grpc.testing.TestService"
_US_PER_SECOND = 1_000_000
_STATUS_BY_CODE = {code.value[0]: code for code in grpc.StatusCode}

SimpleIn = Received[messages_pb2.SimpleRequest]
StreamingOutIn = Received[messages_pb2.StreamingOutputCallRequest]
StreamingInIn = Received[messages_pb2.StreamingInputCallRequest]


def parse_bool(value: str) -> bool:
    """The interop flags' booleans: ``true``/``false`` (also ``1``/``0``, ``yes``/``no``)."""
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def _payload(size: int, context: grpc.ServicerContext) -> messages_pb2.Payload:
    if size < 0:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"negative payload size {size}")
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\x00" * size)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("unreachable: ServicerContext.abort() raises")


def _echo_metadata(context: grpc.ServicerContext) -> None:
    """Echo Metadata: the initial key back as initial metadata, the -bin key back as trailing metadata."""
    received = context.invocation_metadata()
    initial = tuple((k, v) for k, v in received if k == INITIAL_METADATA_KEY)
    trailing = tuple((k, v) for k, v in received if k == TRAILING_METADATA_KEY)
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def _echo_status(has_status: bool, status: messages_pb2.EchoStatus, context: grpc.ServicerContext) -> None:
    """Echo Status: close the call with the requested code and message (nothing more is processed)."""
    if has_status and status.code != 0:
        _abort(context, _STATUS_BY_CODE.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


def _check_compression(
    has_expect: bool, expected: bool, received: bool, context: grpc.ServicerContext
) -> None:
    """CompressedRequest: the request's compressed flag must match ``expect_compressed`` when it is set."""
    if not has_expect:
        return
    if expected and not received:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Expected compressed request, got uncompressed")
    if not expected and received:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Expected uncompressed request, got compressed")


def _streaming_responses(
    request: messages_pb2.StreamingOutputCallRequest, context: grpc.ServicerContext, compression_on: bool
) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
    """One response per ResponseParameters, honouring ``interval_us`` and per-message ``compressed``."""
    for params in request.response_parameters:
        if params.interval_us:
            time.sleep(params.interval_us / _US_PER_SECOND)
        if compression_on and not (params.HasField("compressed") and params.compressed.value):
            context.disable_next_message_compression()
        yield messages_pb2.StreamingOutputCallResponse(payload=_payload(params.size, context))


def _wants_compression(request: messages_pb2.StreamingOutputCallRequest) -> bool:
    return any(p.HasField("compressed") and p.compressed.value for p in request.response_parameters)


class TestService:
    """The handlers; each takes the request(s) as :class:`Received` and the servicer context."""

    def empty_call(
        self, request: Received[empty_pb2.Empty], context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        _echo_metadata(context)
        return empty_pb2.Empty()

    def unary_call(self, received: SimpleIn, context: grpc.ServicerContext) -> messages_pb2.SimpleResponse:
        request = received.message
        _echo_metadata(context)
        _check_compression(
            request.HasField("expect_compressed"),
            request.expect_compressed.value,
            received.compressed,
            context,
        )
        _echo_status(request.HasField("response_status"), request.response_status, context)
        if request.HasField("response_compressed"):
            on = request.response_compressed.value
            context.set_compression(grpc.Compression.Gzip if on else grpc.Compression.NoCompression)
        return messages_pb2.SimpleResponse(payload=_payload(request.response_size, context))

    def cacheable_unary_call(
        self, received: SimpleIn, context: grpc.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        context.send_initial_metadata((("cache-control", "max-age=60"),))
        body = str(time.time_ns()).encode()
        return messages_pb2.SimpleResponse(
            payload=messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=body)
        )

    def streaming_output_call(
        self, received: StreamingOutIn, context: grpc.ServicerContext
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        request = received.message
        _echo_status(request.HasField("response_status"), request.response_status, context)
        compression_on = _wants_compression(request)
        if compression_on:
            context.set_compression(grpc.Compression.Gzip)
        yield from _streaming_responses(request, context, compression_on)

    def streaming_input_call(
        self, requests: Iterable[StreamingInIn], context: grpc.ServicerContext
    ) -> messages_pb2.StreamingInputCallResponse:
        total = 0
        for received in requests:
            request = received.message
            _check_compression(
                request.HasField("expect_compressed"),
                request.expect_compressed.value,
                received.compressed,
                context,
            )
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def full_duplex_call(
        self, requests: Iterable[StreamingOutIn], context: grpc.ServicerContext
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        _echo_metadata(context)
        compression_on = False
        for received in requests:
            request = received.message
            _echo_status(request.HasField("response_status"), request.response_status, context)
            if _wants_compression(request) and not compression_on:
                compression_on = True
                context.set_compression(grpc.Compression.Gzip)
            yield from _streaming_responses(request, context, compression_on)

    def half_duplex_call(
        self, requests: Iterable[StreamingOutIn], context: grpc.ServicerContext
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        yield from self.full_duplex_call(list(requests), context)


def generic_handler(service: TestService) -> grpc.GenericRpcHandler[Any, Any]:
    simple = inspecting_deserializer(messages_pb2.SimpleRequest)
    streaming_out = inspecting_deserializer(messages_pb2.StreamingOutputCallRequest)
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "EmptyCall": grpc.unary_unary_rpc_method_handler(
            service.empty_call, inspecting_deserializer(empty_pb2.Empty), serialize
        ),
        "UnaryCall": grpc.unary_unary_rpc_method_handler(service.unary_call, simple, serialize),
        "CacheableUnaryCall": grpc.unary_unary_rpc_method_handler(
            service.cacheable_unary_call, simple, serialize
        ),
        "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
            service.streaming_output_call, streaming_out, serialize
        ),
        "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
            service.streaming_input_call,
            inspecting_deserializer(messages_pb2.StreamingInputCallRequest),
            serialize,
        ),
        "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
            service.full_duplex_call, streaming_out, serialize
        ),
        "HalfDuplexCall": grpc.stream_stream_rpc_method_handler(
            service.half_duplex_call, streaming_out, serialize
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def build_server(max_workers: int = 32) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="interop"),
        handlers=[generic_handler(TestService())],
        options=NO_DECOMPRESSION,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.interop.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="the port to listen on (0: pick one)")
    parser.add_argument("--use_tls", type=parse_bool, default=False, help="serve TLS (ALPN h2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--tls_cert_file", help="PEM certificate chain for --use_tls")
    parser.add_argument("--tls_key_file", help="PEM private key for --use_tls")
    args = parser.parse_args(argv)
    if args.use_tls and not (args.tls_cert_file and args.tls_key_file):
        parser.error("--use_tls=true needs --tls_cert_file and --tls_key_file")
    return args


def serve(args: argparse.Namespace) -> None:
    server = build_server()
    address = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    if args.use_tls:
        with open(args.tls_key_file, "rb") as key, open(args.tls_cert_file, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"could not bind {address}")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.start()
    sys.stdout.write(
        f"interop server listening on {args.host}:{port} ({'tls' if args.use_tls else 'plaintext'})\n"
    )
    sys.stdout.flush()
    stopping.wait()
    server.stop(grace=1.0).wait()


def main(argv: Sequence[str] | None = None) -> None:
    serve(parse_args(argv))


if __name__ == "__main__":
    main()
