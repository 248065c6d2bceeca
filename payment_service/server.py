"""``payment-server``: the demo payment service, a plain insecure gRPC server that knows nothing of meshes.

    payment-server --version v1|v2 --listen HOST:PORT [--error-rate F] [--error-at WHERE] [--latency MS]
                   [--name NAME] [--workers N] [--grace S] [--seed N] [--metrics-address HOST:PORT]
    python -m payment_service.server ...

Prints ``payment-server v1 listening on HOST:PORT`` once it accepts calls (the real port if PORT was 0),
stops gracefully on SIGTERM/SIGINT (in-flight calls get ``--grace`` seconds) and exits 0.

What every reply carries:

- the version and the workload name, in the reply (``version``, ``served_by``) and in the response headers
  ``x-payment-version: v1|v2`` and ``x-served-by: NAME``. A trailers-only error response carries both
  headers in its only header block (grpc exposes it as trailing metadata).

Header echo (for checking that proxies relay metadata untouched): every request header whose name starts
with ``x-echo-`` (``-bin`` ones included) is sent back

- as it came, in the response headers (initial metadata), and
- renamed ``x-echo-trailer-<rest>`` in the trailers (``x-echo-a`` -> ``x-echo-trailer-a``,
  ``x-echo-b-bin`` -> ``x-echo-trailer-b-bin``),

in request order, repeated keys repeated. When a call fails before any header was sent (trailers-only),
both sets are in the trailers.

Failures on request: ``Control.fail_with_code`` (1..16) + ``fail_with_message`` (sent verbatim as
grpc-message) + ``fail_at`` (``FAIL_BEFORE_HEADERS`` = trailers-only, ``FAIL_AFTER_HEADERS``,
``FAIL_AFTER_FIRST_REPLY``); or the headers ``x-payment-fail-code``, ``x-payment-fail-message`` (ASCII),
``x-payment-fail-at: before-headers|after-headers|after-first-reply``. ``delay_ms`` /
``x-payment-delay-ms`` sleeps before replying. ``--error-rate F`` fails that fraction of calls with
UNAVAILABLE ``injected by payment-server``: trailers-only by default (``--error-at before-headers``), or
with ``--error-at after-headers`` after the response headers were sent, the status in trailers (a gRPC app
that fails late: Envoy neither retries it nor counts it for outlier detection); ``--latency MS`` delays
every call.
``GetServerStats`` is exempt from both.

Cancellation: a call that ends before its handler finished (client cancel, RST_STREAM, deadline) is logged
as one line ``CANCELLED method=/payment.PaymentService/<Method> reason=client|deadline`` and counted in
``GetServerStats``.

Application metrics (``--metrics-address HOST:PORT``; off without it): ``GET /metrics`` there serves
go-grpc-prometheus's ``grpc_server_started_total``, ``grpc_server_handled_total{grpc_code}``,
``grpc_server_handling_seconds`` and the business counter ``payments_processed_total{version,outcome}``
(:mod:`payment_service.metrics`); the process prints ``payment-server v1 metrics on http://HOST:PORT/metrics``.

Messages up to 64 MB both ways. SO_REUSEPORT is off (a port clash is an error, not a silent share), and
keepalive pings from a sidecar never get the connection closed (no ping strikes).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from payment_service.api import MAX_MESSAGE_BYTES
from payment_service.behaviour import VERSIONS
from payment_service.metrics import GrpcMetrics, PaymentMetrics, ServerMetricsInterceptor
from payment_service.metrics import serve as serve_metrics
from payment_service.servicer import ERROR_AT, PaymentServicer, ServerConfig
from payment_service.tracking import Log, stdout_log

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.http2.max_ping_strikes", 0),
]


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces) -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: [{host}]:{port_s}")
    return host or "0.0.0.0", int(port_s)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_address(value: str) -> tuple[str, int]:
    try:
        return split_host_port(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {f}")
    return f


def _non_negative(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if f < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {f}")
    return f


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payment-server", description="The minimesh demo payment service.")
    p.add_argument("--version", required=True, choices=VERSIONS, help="behaviour to serve")
    p.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT",
                   help="address to listen on (plain HTTP/2, no TLS); port 0 picks a free one")
    p.add_argument("--error-rate", type=_fraction, default=0.0, metavar="F",
                   help="fraction of calls failed with UNAVAILABLE (default 0)")
    p.add_argument("--error-at", choices=ERROR_AT, default="before-headers",
                   help="where --error-rate failures happen: before-headers (trailers-only, the default) or "
                        "after-headers (headers sent, then the status in trailers)")
    p.add_argument("--latency", type=_non_negative, default=0.0, metavar="MS",
                   help="milliseconds added to every call (default 0)")
    p.add_argument("--name", default=None, help="workload name in replies (default payment-VERSION-HOST-PID)")
    p.add_argument("--workers", type=int, default=32, help="handler threads = concurrent calls (default 32)")
    p.add_argument("--grace", type=_non_negative, default=5.0, metavar="S",
                   help="seconds in-flight calls get on shutdown (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed for --error-rate (default: random)")
    p.add_argument("--metrics-address", type=_listen_address, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics (GET /metrics) here; port 0 picks a free one (default: off)")
    return p


def build_server(config: ServerConfig, host: str, port: int, workers: int = 32,
                 log: Log = stdout_log, registry: CollectorRegistry | None = None
                 ) -> tuple[grpc.Server, int, PaymentServicer]:
    """A started-ready (not started) server bound to host:port; returns it with the bound port. With
    ``registry``, the server's calls and charges are counted there (:mod:`payment_service.metrics`)."""
    interceptors: list[grpc.ServerInterceptor[Any, Any]] = []
    business = None
    if registry is not None:
        interceptors.append(ServerMetricsInterceptor(GrpcMetrics(registry, "server")))
        business = PaymentMetrics(registry)
    servicer = PaymentServicer(config, log, business)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="payment"),
                         interceptors=interceptors, options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((servicer.handler(),))
    try:
        bound = server.add_insecure_port(join_host_port(host, port))
    except RuntimeError as e:
        raise OSError(f"cannot listen on {join_host_port(host, port)}: {e}") from e
    if bound == 0:
        raise OSError(f"cannot listen on {join_host_port(host, port)}")
    return server, bound, servicer


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        build_parser().error("--workers must be at least 1")
    host, port = args.listen
    name = args.name or f"payment-{args.version}-{socket.gethostname()}-{os.getpid()}"
    config = ServerConfig(version=args.version, name=name, error_rate=args.error_rate,
                          latency_ms=args.latency, seed=args.seed, error_at=args.error_at)
    registry = CollectorRegistry() if args.metrics_address is not None else None
    try:
        server, bound, _ = build_server(config, host, port, args.workers, registry=registry)
        metrics_at = None
        if registry is not None:
            metrics_host, metrics_port = args.metrics_address
            try:
                _, metrics_bound = serve_metrics(registry, metrics_host, metrics_port)
            except OSError as e:
                raise OSError(f"--metrics-address: cannot listen on {join_host_port(metrics_host, metrics_port)}: "
                              f"{e.strerror or e}") from e
            metrics_at = join_host_port(metrics_host, metrics_bound)
    except OSError as e:
        print(f"payment-server: {e}", file=sys.stderr, flush=True)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    stdout_log(f"payment-server {args.version} listening on {join_host_port(host, bound)}")
    if metrics_at is not None:
        stdout_log(f"payment-server {args.version} metrics on http://{metrics_at}/metrics")
    stdout_log(f"payment-server {args.version} name={name} error_rate={args.error_rate} "
               f"error_at={args.error_at} "
               f"latency_ms={args.latency:g} workers={args.workers}")
    while not stop.wait(0.5):
        pass
    stdout_log(f"payment-server {args.version} stopping (grace {args.grace:g}s)")
    server.stop(args.grace).wait()
    stdout_log(f"payment-server {args.version} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
