"""Typed client stubs for ``grpc.testing`` and the small helpers the interop cases share.

The stubs are built from the service descriptors in the generated ``test_pb2`` (so method paths cannot
drift from the proto) with plain protobuf serialisers, or with the compression-inspecting deserialisers of
:mod:`tests.interop.wire` where a case must see the compressed flag of each response.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from tests.interop.proto import empty_pb2, messages_pb2, test_pb2
from tests.interop.wire import Received, inspecting_deserializer, serialize

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class InteropError(AssertionError):
    """A test case's assertion did not hold (the message says which and what was seen)."""


def method_path(service: str, method: str) -> str:
    """``/grpc.testing.<service>/<method>`` as declared in test.proto (KeyError for an unknown method)."""
    descriptor = test_pb2.DESCRIPTOR.services_by_name[service]
    return f"/{descriptor.full_name}/{descriptor.methods_by_name[method].name}"


def _parser(cls: type[M]) -> Callable[[bytes], M]:
    return cls.FromString


class TestServiceClient:
    """``grpc.testing.TestService`` (and ``UnimplementedService``) on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        def path(method: str) -> str:
            return method_path("TestService", method)

        simple_response = _parser(messages_pb2.SimpleResponse)
        out_response = _parser(messages_pb2.StreamingOutputCallResponse)
        self.empty_call: grpc.UnaryUnaryMultiCallable[empty_pb2.Empty, empty_pb2.Empty] = channel.unary_unary(
            path("EmptyCall"), serialize, _parser(empty_pb2.Empty)
        )
        self.unary_call: grpc.UnaryUnaryMultiCallable[
            messages_pb2.SimpleRequest, messages_pb2.SimpleResponse
        ] = channel.unary_unary(path("UnaryCall"), serialize, simple_response)
        self.streaming_output_call: grpc.UnaryStreamMultiCallable[
            messages_pb2.StreamingOutputCallRequest, messages_pb2.StreamingOutputCallResponse
        ] = channel.unary_stream(path("StreamingOutputCall"), serialize, out_response)
        self.streaming_input_call: grpc.StreamUnaryMultiCallable[
            messages_pb2.StreamingInputCallRequest, messages_pb2.StreamingInputCallResponse
        ] = channel.stream_unary(
            path("StreamingInputCall"), serialize, _parser(messages_pb2.StreamingInputCallResponse)
        )
        self.full_duplex_call: grpc.StreamStreamMultiCallable[
            messages_pb2.StreamingOutputCallRequest, messages_pb2.StreamingOutputCallResponse
        ] = channel.stream_stream(path("FullDuplexCall"), serialize, out_response)
        self.unimplemented_call: grpc.UnaryUnaryMultiCallable[empty_pb2.Empty, empty_pb2.Empty] = (
            channel.unary_unary(path("UnimplementedCall"), serialize, _parser(empty_pb2.Empty))
        )
        self.unimplemented_service_call: grpc.UnaryUnaryMultiCallable[empty_pb2.Empty, empty_pb2.Empty] = (
            channel.unary_unary(
                method_path("UnimplementedService", "UnimplementedCall"), serialize, _parser(empty_pb2.Empty)
            )
        )


class InspectingClient:
    """The calls whose responses must carry their compressed flag (channel needs ``NO_DECOMPRESSION``)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.unary_call: grpc.UnaryUnaryMultiCallable[
            messages_pb2.SimpleRequest, Received[messages_pb2.SimpleResponse]
        ] = channel.unary_unary(
            method_path("TestService", "UnaryCall"),
            serialize,
            inspecting_deserializer(messages_pb2.SimpleResponse),
        )
        self.streaming_output_call: grpc.UnaryStreamMultiCallable[
            messages_pb2.StreamingOutputCallRequest, Received[messages_pb2.StreamingOutputCallResponse]
        ] = channel.unary_stream(
            method_path("TestService", "StreamingOutputCall"),
            serialize,
            inspecting_deserializer(messages_pb2.StreamingOutputCallResponse),
        )


class Pipe(Iterator[T]):
    """A request iterator the test feeds one message at a time (gRPC pulls from it on its own thread).

    Closing it half-closes the call. Use it as a context manager so it is closed on every path; a closed
    pipe never leaves gRPC's sending thread blocked.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[T] = []
        self._open = True

    def __next__(self) -> T:
        with self._cond:
            while not self._items and self._open:
                self._cond.wait()
            if self._items:
                return self._items.pop(0)
            raise StopIteration

    def add(self, item: T) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._cond.notify_all()

    def __enter__(self) -> Pipe[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def zeros(size: int) -> messages_pb2.Payload:
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\x00" * size)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InteropError(message)


def check_payload(payload: messages_pb2.Payload, size: int, what: str = "response") -> None:
    check(
        payload.type == messages_pb2.COMPRESSABLE, f"{what}: payload type {payload.type}, want COMPRESSABLE"
    )
    check(len(payload.body) == size, f"{what}: payload body is {len(payload.body)} bytes, want {size}")
    check(payload.body == b"\x00" * size, f"{what}: payload body is not all zeros")


def expect_status(
    call: Callable[[], object], code: grpc.StatusCode, details: str | None = None, what: str = "call"
) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code`` (and exactly ``details`` if given)."""
    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"{what}: status {error.code()} ({error.details()!r}), want {code}")
        if details is not None:
            check(error.details() == details, f"{what}: status message {error.details()!r}, want {details!r}")
        return error
    raise InteropError(f"{what}: succeeded, want status {code}")


def metadata_value(metadata: object, key: str) -> str | bytes | None:
    """The value of ``key`` in a gRPC metadata sequence (None when absent)."""
    assert isinstance(metadata, tuple | list)
    for item in metadata:
        if item[0] == key:
            value = item[1]
            assert isinstance(value, str | bytes)
            return value
    return None
