"""The benchmark's gRPC server: one generic unary method on raw bytes, h2c on loopback.

``python -m bench.server --port P [--threads 64] [--response-size 100]``

``/bench.Echo/Call`` answers every request with the same ``--response-size`` bytes; no protobuf, no
serialisation, so the server's cost is grpcio's own. The thread pool is larger than any concurrency the
benchmark uses (nginx opens one upstream connection per request in flight), so no call ever queues for a
thread. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc

SERVICE = "bench.Echo"
METHOD = "Call"
PATH = f"/{SERVICE}/{METHOD}"


def build_server(port: int, threads: int, response_size: int, host: str = "127.0.0.1") -> grpc.Server:
    response = b"r" * response_size

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(call)}  # no (de)serializers: raw bytes
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1000)],
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"{host}:{port}") != port:
        raise SystemExit(f"bench.server: cannot bind {host}:{port}")
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--response-size", type=int, default=100)
    args = parser.parse_args(argv)

    server = build_server(args.port, args.threads, args.response_size, args.host)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"bench.server listening on {args.host}:{args.port}", flush=True)
    stopped.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
