"""The protocol suite's gRPC backend: grpcio generic handlers on raw bytes, run as its own process.

``python -m tests.protocol.backend --port N`` serves, on plain HTTP/2 (h2c):

- ``/test.Echo/Unary``: returns the request message; request headers named ``x-echo-*`` come back as
  response headers (this is how the suite checks that a proxy decoded a header block correctly).
- ``/test.Echo/Stream``: server streaming, ``x-stream-count`` messages of ``x-stream-size`` bytes each;
  generated lazily, so a client that never reads holds the backend back through flow control.
- ``/test.Echo/Seen``: b"1" if a request carrying ``x-test-id: <request body>`` reached this process,
  else b"0" (how the suite checks that a proxy did not forward a request it should have rejected).
- ``/test.Echo/Count``: the number of requests handled so far, as ASCII digits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from types import FrameType

import grpc

MAX_STREAM_COUNT = 1 << 20
MAX_STREAM_SIZE = 4 << 20


class _Ledger:
    """Which x-test-id values reached the backend, and how many requests it handled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.count = 0

    def record(self, context: grpc.ServicerContext) -> dict[str, str]:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.count += 1
            if "x-test-id" in metadata:
                self._seen.add(metadata["x-test-id"])
        return metadata

    def seen(self, test_id: str) -> bool:
        with self._lock:
            return test_id in self._seen


LEDGER = _Ledger()


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    metadata = LEDGER.record(context)
    echo = tuple((k, v) for k, v in metadata.items() if k.startswith("x-echo-"))
    if echo:
        context.send_initial_metadata(echo)
    return request


def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    metadata = LEDGER.record(context)
    try:
        count = min(int(metadata.get("x-stream-count", "1")), MAX_STREAM_COUNT)
        size = min(int(metadata.get("x-stream-size", "16")), MAX_STREAM_SIZE)
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x-stream-count / x-stream-size must be integers")
    chunk = b"s" * size
    for _ in range(count):
        if not context.is_active():
            return
        yield chunk


def seen(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"1" if LEDGER.seen(request.decode(errors="replace")) else b"0"


def count(request: bytes, context: grpc.ServicerContext) -> bytes:
    return str(LEDGER.count).encode()


class EchoHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if method == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(unary)
        if method == "/test.Echo/Stream":
            return grpc.unary_stream_rpc_method_handler(stream)
        if method == "/test.Echo/Seen":
            return grpc.unary_unary_rpc_method_handler(seen)
        if method == "/test.Echo/Count":
            return grpc.unary_unary_rpc_method_handler(count)
        return None


def serve(host: str, port: int) -> int:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 16 << 20),
            # Big but legal header blocks must reach the handler: the proxy, not the backend, enforces limits.
            ("grpc.max_metadata_size", 1 << 20),
            ("grpc.absolute_max_metadata_size", 1 << 20),
        ],
    )
    server.add_generic_rpc_handlers((EchoHandler(),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        print(f"backend: cannot bind {host}:{port}", file=sys.stderr, flush=True)
        return 1
    server.start()
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"backend listening on {host}:{port}", flush=True)
    stopped.wait()
    server.stop(grace=0).wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
