"""Per-call bookkeeping on the server: counters, cancellation, response headers, failures on request.

A :class:`ServerCall` wraps one RPC's ``grpc.ServicerContext``:

- it counts the call, and registers a termination callback. If the RPC ends (client cancel, RST_STREAM,
  deadline) before the handler has finished, that is a cancellation: it is counted and logged once as
  ``CANCELLED method=/payment.PaymentService/<Method> reason=client|deadline``;
- :meth:`ServerCall.sleep` waits, but wakes up at once when the call ends, so cancelled calls free their
  worker thread;
- response headers (``x-payment-version``, ``x-served-by`` and the ``x-echo-*`` echoes) are sent once,
  just before the first reply message;
- :meth:`ServerCall.fail` ends the call with a status. Before any header was sent the response is
  trailers-only (the identity and the echoes then travel in that single header block); after, the
  status arrives in trailers.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import NoReturn

import grpc

from payment_service.behaviour import Metadata, echo_headers, echo_trailers
from payment_service.proto import payment_pb2 as pb

Log = Callable[[str], None]
_log_lock = threading.Lock()


def stdout_log(line: str) -> None:
    """One whole line to stdout, flushed (several threads log)."""
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


STATUS_BY_CODE = {code.value[0]: code for code in grpc.StatusCode}


class ServerCounters:
    """Thread-safe counters behind ``GetServerStats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.calls: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.deadline_cancellations = 0
        self.injected_errors = 0
        self.requested_failures = 0

    def call_started(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1

    def call_cancelled(self, method: str, deadline: bool) -> None:
        with self._lock:
            self.cancelled[method] += 1
            self.deadline_cancellations += deadline

    def error_injected(self) -> None:
        with self._lock:
            self.injected_errors += 1

    def failure_requested(self) -> None:
        with self._lock:
            self.requested_failures += 1

    def snapshot(self, version: str, served_by: str, reset: bool = False) -> pb.ServerStats:
        with self._lock:
            stats = pb.ServerStats(
                version=version, served_by=served_by, uptime_s=time.monotonic() - self._started,
                total_calls=sum(self.calls.values()), calls_by_method=dict(self.calls),
                cancellations=sum(self.cancelled.values()), cancelled_by_method=dict(self.cancelled),
                deadline_cancellations=self.deadline_cancellations, injected_errors=self.injected_errors,
                requested_failures=self.requested_failures,
            )
            if reset:
                self._reset()
        return stats


class CallEndedError(Exception):
    """The RPC is over (cancelled or timed out) while the handler was still working on it."""


class ServerCall:
    """One RPC as the handler sees it. Call :meth:`finish` when the handler is done (in ``finally``)."""

    def __init__(self, method: str, context: grpc.ServicerContext, identity: Metadata,
                 counters: ServerCounters, log: Log) -> None:
        self.method = method
        self.context = context
        self.metadata: Metadata = tuple(context.invocation_metadata())
        self._identity = identity
        self._counters = counters
        self._log = log
        self._lock = threading.Lock()
        self._finished = False
        self._ended = threading.Event()
        self.headers_sent = False
        counters.call_started(method)
        if not context.add_callback(self._on_terminated):
            self._on_terminated()  # already over before we could watch it

    def _on_terminated(self) -> None:
        with self._lock:
            cancelled = not self._finished
            self._finished = True
        self._ended.set()
        if cancelled:
            remaining = self.context.time_remaining()
            deadline = remaining is not None and remaining <= 0.001
            self._counters.call_cancelled(self.method, deadline)
            self._log(f"CANCELLED method={self.method} reason={'deadline' if deadline else 'client'}")

    def finish(self) -> None:
        with self._lock:
            self._finished = True

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; raise :class:`CallEndedError` at once if the call ends meanwhile."""
        if seconds > 0 and self._ended.wait(seconds):
            raise CallEndedError
        if self._ended.is_set():
            raise CallEndedError

    def send_headers(self) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            self.context.send_initial_metadata((*self._identity, *echo_headers(self.metadata)))

    def set_ok_trailers(self) -> None:
        trailers = echo_trailers(self.metadata)
        if trailers:
            self.context.set_trailing_metadata(tuple(trailers))

    def fail(self, code: int | grpc.StatusCode, message: str) -> NoReturn:
        status = code if isinstance(code, grpc.StatusCode) else STATUS_BY_CODE[code]
        trailers = echo_trailers(self.metadata)
        if not self.headers_sent:  # trailers-only: this is the only header block the client gets
            trailers = [*self._identity, *echo_headers(self.metadata), *trailers]
        self.context.set_trailing_metadata(tuple(trailers))
        self.context.abort(status, message)

    def abandon(self) -> NoReturn:
        """Give up on a call that already ended; grpc sends nothing and logs nothing."""
        self.context.abort(grpc.StatusCode.CANCELLED, "call ended")
