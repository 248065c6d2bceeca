"""``payment-client``: load generator for the payment service (directly or through a sidecar).

    payment-client --target HOST:PORT [--rps N] [--duration S] [--concurrency C] [--count N]
                   [--method charge|refund|get|list|batch|exchange|mix] [--deadline-ms D]
                   [--payload-bytes B] [--echo-payload] [--metadata k=v ...] [--authority A]
                   [--json] [--interval S] [--metrics-address HOST:PORT]

``--rps 0`` = as fast as ``--concurrency`` workers go (closed loop); ``--duration 0`` = until SIGINT or
SIGTERM (or ``--count``). All calls share ONE channel, i.e. one HTTP/2 connection. ``--authority`` sets
``:authority`` (needed when ``--target`` is a sidecar's address). ``--metadata k=v`` adds a request
header (repeatable; for ``-bin`` keys the value's UTF-8 bytes are sent). Exit status 0 when the run
happened, even if calls failed; 2 on bad arguments; 1 when the metrics address cannot be bound.

Output: a text summary, or with ``--json`` one JSON object per line on stdout:

- with ``--interval S``, every S seconds::

    {"type": "interval", "elapsed_s": 2.0, "interval_s": 1.0,
     "requests": 50, "by_version": {"v1": 40, "v2": 10}, "by_status": {"OK": 50},
     "latency_ms": {"p50": 1.2, "p90": 2.0, "p99": 4.1, "max": 4.3, "mean": 1.3}, "rps": 50.0,
     "cumulative": {"requests": 100, "by_version": {...}, "by_status": {...}, "latency_ms": {...},
                    "rps": 50.0}}

  (the top-level counts are for that interval; ``cumulative`` for the run so far);
- at the end::

    {"type": "final", "target": "127.0.0.1:15001", "method": "charge", "rps_target": 50.0,
     "concurrency": 4, "elapsed_s": 10.0, "requests": 500, "by_version": {...}, "by_status": {...},
     "latency_ms": {...}, "rps": 50.0, "skipped": 0, "errors": {"UNAVAILABLE": "injected by payment-server"}}

``by_version`` keys are the ``x-payment-version`` values (``unknown`` when a reply carried none);
``by_status`` keys are gRPC status names (``OK``, ``UNAVAILABLE``, ...); latencies are whole-call
milliseconds (``null`` when there were no requests); ``rps`` = requests / elapsed seconds; ``skipped`` =
rate slots dropped because all workers were busy; ``errors`` = first grpc-message seen per failing status
(in interval reports and their ``cumulative`` only when a call failed); ``hints`` (only when there is one) =
what such a message means, e.g. for ``UNAVAILABLE: ... Socket closed``: the server closed the connection
during the handshake, as a TLS-only port (a sidecar under mTLS STRICT) does to a plaintext client.

With ``--metrics-address HOST:PORT`` the client serves its own application metrics there (``GET /metrics``:
go-grpc-prometheus's ``grpc_client_started_total``, ``grpc_client_handled_total{grpc_code}``,
``grpc_client_handling_seconds``; see :mod:`payment_service.metrics`) and says where on stderr.

With ``--interval``, the client also says on stderr, in words, when its calls start failing (status, count,
first message, hint) and when they succeed again, so its log tells what happened without decoding JSON::

    payment-client: [12.0s] calls to 127.0.0.10:15006 FAIL: 5 of 5 in the last 1.0 s: UNAVAILABLE: failed to
      connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.10:15006: Socket closed
      (the server closed the connection during the handshake, before any HTTP/2 response: ...)
    payment-client: [20.0s] calls to 127.0.0.10:15006 succeed again: 5 of 5 OK in the last 1.0 s
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from payment_service.loadgen import METHOD_CHOICES, LoadConfig, LoadResult, MetadataPairs, run_load
from payment_service.metrics import ClientMetricsInterceptor, GrpcMetrics
from payment_service.metrics import serve as serve_metrics
from payment_service.server import join_host_port, split_host_port


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
        return number

    return parse


def _positive_int(value: str) -> int:
    number: int = _non_negative(int)(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _target(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _address(value: str) -> tuple[str, int]:
    try:
        return split_host_port(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _metadata(value: str) -> tuple[str, str | bytes]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {value!r}")
    valid_chars = all(c.isalnum() or c in "-_." for c in key)
    if key != key.lower() or key.startswith((":", "grpc-")) or not valid_chars:
        raise argparse.ArgumentTypeError(f"invalid header name {key!r} (lower case, no ':' or grpc- prefix)")
    if key.endswith("-bin"):
        return key, val.encode()
    if not val.isascii() or not val.isprintable():
        raise argparse.ArgumentTypeError(f"header {key!r}: value must be printable ASCII (or use a -bin key)")
    return key, val


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payment-client", description="Load generator for the payment service.")
    p.add_argument("--target", required=True, type=_target, metavar="HOST:PORT")
    p.add_argument("--rps", type=_non_negative(float), default=10.0, help="calls per second; 0 = as fast as "
                   "possible (default 10)")
    p.add_argument("--duration", type=_non_negative(float), default=10.0, metavar="S",
                   help="seconds to run; 0 = until SIGINT/SIGTERM or --count (default 10)")
    p.add_argument("--concurrency", type=_positive_int, default=4, metavar="C",
                   help="workers = maximum calls in flight (default 4)")
    p.add_argument("--count", type=_non_negative(int), default=0, metavar="N",
                   help="stop after N calls (default: no limit)")
    p.add_argument("--method", choices=METHOD_CHOICES, default="charge")
    p.add_argument("--deadline-ms", type=_non_negative(float), default=0.0, metavar="D",
                   help="per-call deadline; 0 = none (default)")
    p.add_argument("--payload-bytes", type=_non_negative(int), default=0, metavar="B",
                   help="request payload size (default 0)")
    p.add_argument("--echo-payload", action="store_true", help="ask the server to echo the payload back")
    p.add_argument("--metadata", type=_metadata, action="append", default=[], metavar="k=v",
                   help="request header, repeatable")
    p.add_argument("--authority", default=None, metavar="A", help=":authority to send")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--interval", type=_non_negative(float), default=0.0, metavar="S",
                   help="print a progress line every S seconds (default: only at the end)")
    p.add_argument("--metrics-address", type=_address, default=None, metavar="HOST:PORT",
                   help="serve the client's Prometheus metrics (GET /metrics) here (default: off)")
    return p


def parse_config(argv: Sequence[str] | None = None) -> tuple[LoadConfig, bool]:
    """Arguments -> (LoadConfig, json?); exits with status 2 on bad arguments."""
    config, as_json, _ = parse_args(argv)
    return config, as_json


def parse_args(argv: Sequence[str] | None = None) -> tuple[LoadConfig, bool, tuple[str, int] | None]:
    """Arguments -> (LoadConfig, json?, metrics address or None); exits with status 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    metadata: MetadataPairs = tuple(args.metadata)
    try:
        config = LoadConfig(
            target=args.target, method=args.method, rps=args.rps, duration_s=args.duration, count=args.count,
            concurrency=args.concurrency, deadline_ms=args.deadline_ms, payload_bytes=args.payload_bytes,
            echo_payload=args.echo_payload, metadata=metadata, authority=args.authority,
            interval_s=args.interval,
        )
    except ValueError as e:
        parser.error(str(e))
    return config, args.json, args.metrics_address


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _counts(counts: dict[str, int], total: int) -> str:
    return "  ".join(f"{k}={v} ({_percent(v, total)})" for k, v in counts.items()) or "-"


def _latency(latency: dict[str, float | None]) -> str:
    return " ".join(f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in latency.items())


def format_interval(report: dict[str, Any]) -> str:
    return (f"[{report['elapsed_s']:7.1f}s] {report['requests']} calls ({report['rps']:.1f} rps)  "
            f"versions: {_counts(report['by_version'], report['requests'])}  "
            f"statuses: {_counts(report['by_status'], report['requests'])}  "
            f"ms: {_latency(report['latency_ms'])}")


def format_final(result: LoadResult) -> str:
    r = result.to_json()
    lines = [
        f"payment-client: {r['requests']} calls in {r['elapsed_s']:.2f} s ({r['rps']:.1f} rps, target "
        f"{'max' if not r['rps_target'] else r['rps_target']}) to {r['target']} method={r['method']} "
        f"concurrency={r['concurrency']}",
        f"  by version: {_counts(r['by_version'], r['requests'])}",
        f"  by status:  {_counts(r['by_status'], r['requests'])}",
        f"  latency ms: {_latency(r['latency_ms'])}",
    ]
    if r["skipped"]:
        lines.append(f"  skipped:    {r['skipped']} rate slots (all workers busy)")
    for status, message in r["errors"].items():
        lines.append(f"  first {status}: {message}")
        if status in r.get("hints", {}):
            lines.append(f"    ({r['hints'][status]})")
    return "\n".join(lines)


class Transitions:
    """Interval reports -> a line in words each time the calls start failing or succeed again."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.failing = False

    def observe(self, report: dict[str, Any]) -> list[str]:
        by_status: dict[str, int] = report.get("by_status") or {}
        total = sum(by_status.values())
        failed = total - by_status.get("OK", 0)
        when = f"payment-client: [{report.get('elapsed_s', 0.0):.1f}s] calls to {self.target}"
        span = f"in the last {report.get('interval_s', 0.0):.1f} s"
        if failed and not self.failing:
            self.failing = True
            errors: dict[str, str] = report.get("errors") or {}
            hints: dict[str, str] = report.get("hints") or {}
            lines = [f"{when} FAIL: {failed} of {total} {span}"]
            for status, message in errors.items():
                lines.append(f"  {status} x{by_status.get(status, 0)}: {message}")
                if status in hints:
                    lines.append(f"  ({hints[status]})")
            return lines
        if total and not failed and self.failing:
            self.failing = False
            return [f"{when} succeed again: {total} of {total} OK {span}"]
        return []


def main(argv: Sequence[str] | None = None) -> int:
    config, as_json, metrics_address = parse_args(argv)
    interceptors = []
    if metrics_address is not None:
        registry = CollectorRegistry()
        host, port = metrics_address
        try:
            _, bound = serve_metrics(registry, host, port)
        except OSError as e:
            print(f"payment-client: --metrics-address: cannot listen on {join_host_port(host, port)}: "
                  f"{e.strerror or e}", file=sys.stderr, flush=True)
            return 1
        interceptors.append(ClientMetricsInterceptor(GrpcMetrics(registry, "client")))
        print(f"payment-client: metrics on http://{join_host_port(host, bound)}/metrics", file=sys.stderr,
              flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    transitions = Transitions(config.target)

    def on_interval(report: dict[str, Any]) -> None:
        print(json.dumps(report) if as_json else format_interval(report), flush=True)
        for line in transitions.observe(report):
            print(line, file=sys.stderr, flush=True)

    result = run_load(config, stop=stop, on_interval=on_interval, interceptors=interceptors)
    print(json.dumps(result.to_json()) if as_json else format_final(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
