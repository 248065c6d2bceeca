"""The load generator's engine: ``concurrency`` worker threads sharing ONE channel (one HTTP/2 connection).

- ``rps > 0``: open loop. Workers take slots from a :class:`~payment_service.rate.RateSchedule` and start
  each call when its slot is due (so a slow server does not slow the offered rate down, up to
  ``concurrency`` calls in flight).
- ``rps == 0``: closed loop, each worker starts its next call as soon as the previous one ends.

A run ends when ``duration_s`` is over, ``count`` calls were started, or ``stop`` is set (whichever comes
first; none of them means "until stop"). Calls still in flight then get until their deadline (or 5 s)
to finish; any left are cancelled and counted as CANCELLED.

Library use (blocking; from trio use ``trio.to_thread.run_sync``)::

    result = run_calls("127.0.0.1:50051", 100, method="charge", concurrency=4)
    result.stats.by_version   # Counter({'v1': 80, 'v2': 20})

Each call's version is read from the ``x-payment-version`` response header (initial metadata, or the
trailers of a trailers-only response), then from the reply's ``version`` field; else ``unknown``.

Why threads and the blocking API rather than grpc.aio: when a server ends a client-streaming or bidi
call before the client half-closed (as an injected error does), grpc.aio reports ``INTERNAL: Internal
error from Core`` instead of the server's status (grpc/grpc#36066, open as of grpcio 1.85); the blocking
API reports the real status. The GIL is released while a call waits, so threads cost little here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from payment_service import api
from payment_service.behaviour import pattern_bytes
from payment_service.proto import payment_pb2 as pb
from payment_service.rate import RateSchedule
from payment_service.stats import Stats

METHOD_CHOICES = ("charge", "refund", "get", "list", "batch", "exchange", "mix")
MIX = ("charge", "charge", "charge", "charge", "get", "get", "refund", "list", "batch", "exchange")
STREAM_MESSAGES = 3  # messages per list / batch / exchange call
DEFAULT_DRAIN_S = 5.0

MetadataPairs = tuple[tuple[str, str | bytes], ...]
IntervalCallback = Callable[[dict[str, Any]], None]


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LoadConfig:
    target: str
    method: str = "charge"
    rps: float = 0.0  # 0: closed loop, as fast as `concurrency` workers go
    duration_s: float = 0.0  # 0: no time limit
    count: int = 0  # 0: no call limit
    concurrency: int = 1
    deadline_ms: float = 0.0  # 0: no deadline
    payload_bytes: int = 0
    echo_payload: bool = False
    metadata: MetadataPairs = ()
    authority: str | None = None
    interval_s: float = 0.0  # > 0: call on_interval every interval_s seconds
    connect_timeout_s: float = 5.0  # wait this long for the connection before starting the clock

    def __post_init__(self) -> None:
        if self.method not in METHOD_CHOICES:
            raise ValueError(f"method must be one of {METHOD_CHOICES}, got {self.method!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for name in ("rps", "duration_s", "count", "deadline_ms", "payload_bytes", "interval_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.payload_bytes > api.MAX_MESSAGE_BYTES - 64 * 1024:
            raise ValueError(f"payload_bytes must be at most {api.MAX_MESSAGE_BYTES - 64 * 1024}")


@dataclass
class LoadResult:
    config: LoadConfig
    stats: Stats
    elapsed_s: float
    skipped: int = 0  # rate slots dropped because every worker was busy (see RateSchedule)
    intervals: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``"type": "final"`` object of the JSON schema in :mod:`payment_service.client`."""
        return {
            "type": "final",
            "target": self.config.target,
            "method": self.config.method,
            "rps_target": self.config.rps,
            "concurrency": self.config.concurrency,
            "elapsed_s": round(self.elapsed_s, 3),
            **self.stats.summary(self.elapsed_s),
            "skipped": self.skipped,
            **errors_of(self.stats, always=True),
        }


def errors_of(stats: Stats, *, always: bool = False) -> dict[str, dict[str, str]]:
    """``errors``: the first grpc-message seen per failing status (only when a call failed, unless ``always``);
    ``hints``: what it means, for the statuses whose message :func:`explain` recognises (only when there is
    one)."""
    errors = dict(sorted(stats.first_error.items()))
    hints = {status: hint for status, message in errors.items() if (hint := explain(status, message))}
    out = {"errors": errors} if errors or always else {}
    return {**out, "hints": hints} if hints else out


def explain(status: str, message: str) -> str:
    """What a transport failure means, in words (empty when the message is not one we recognise).

    gRPC reports a connection that the server closed before its HTTP/2 handshake completed as ``failed to
    connect to all addresses; last error: UNAVAILABLE: ipv4:HOST:PORT: Socket closed`` (or ``Connection reset
    by peer``). That is what a TLS-only server does to a plaintext client: it reads the HTTP/2 preface as a
    broken TLS record and hangs up. A sidecar whose PeerAuthentication is STRICT behaves exactly so.
    """
    if status != "UNAVAILABLE" or "failed to connect" not in message:
        return ""
    if "Socket closed" in message or "reset by peer" in message:
        return ("the server closed the connection during the handshake, before any HTTP/2 response: what a "
                "TLS-only port does to a plaintext client, e.g. a sidecar under mTLS STRICT")
    if "Connection refused" in message:
        return "nothing accepts connections at that address"
    return ""


def version_of(*sources: Iterable[Any] | None, reply_version: str = "") -> str:
    """``x-payment-version`` from the first metadata (sequence of key/value pairs) that has it."""
    for metadata in sources:
        for key, value in metadata or ():
            if key == "x-payment-version":
                return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return reply_version or "unknown"


class _Calls:
    """One call of each kind; each returns the version that served it and raises grpc.RpcError."""

    def __init__(self, config: LoadConfig, stub: api.Stub,
                 track: Callable[[_Cancellable | None], None]) -> None:
        self.stub = stub
        self.track = track  # remembers the call in flight on this thread, so it can be cancelled
        self.timeout = config.deadline_ms / 1000 if config.deadline_ms else None
        self.metadata = config.metadata
        self.payload = pattern_bytes(config.payload_bytes)
        self.control = pb.Control(echo_payload=True) if config.echo_payload else None

    def charge_request(self, seq: int) -> pb.ChargeRequest:
        return pb.ChargeRequest(customer_id=f"cust-{seq % 10}", amount=1000 + seq % 9000,
                                currency="EUR", description="payment-client", payload=self.payload,
                                control=self.control)

    def _unary(self, future: grpc.CallFuture[Any]) -> str:
        self.track(future)
        reply = future.result()
        return version_of(future.initial_metadata(), reply_version=reply.version)

    def _streamed(self, call: Any) -> str:
        self.track(call)
        versions = [reply.version for reply in call]
        return version_of(call.initial_metadata(), reply_version=versions[0] if versions else "")

    def charge(self, seq: int) -> str:
        return self._unary(self.stub.Charge.future(self.charge_request(seq), timeout=self.timeout,
                                                   metadata=self.metadata))

    def refund(self, seq: int) -> str:
        request = pb.RefundRequest(payment_id=f"pay-demo-{seq % 1000 + 1}", amount=100,
                                   reason="payment-client", payload=self.payload, control=self.control)
        return self._unary(self.stub.Refund.future(request, timeout=self.timeout, metadata=self.metadata))

    def get(self, seq: int) -> str:
        request = pb.GetPaymentRequest(payment_id=f"pay-demo-{seq % 1000 + 1}", payload=self.payload,
                                       control=self.control)
        return self._unary(self.stub.GetPayment.future(request, timeout=self.timeout, metadata=self.metadata))

    def list(self, seq: int) -> str:
        request = pb.ListPaymentsRequest(limit=STREAM_MESSAGES, payload=self.payload, control=self.control)
        return self._streamed(self.stub.ListPayments(request, timeout=self.timeout, metadata=self.metadata))

    def batch(self, seq: int) -> str:
        requests = [self.charge_request(seq + i) for i in range(STREAM_MESSAGES)]
        return self._unary(self.stub.ChargeBatch.future(iter(requests), timeout=self.timeout,
                                                        metadata=self.metadata))

    def exchange(self, seq: int) -> str:
        requests = [self.charge_request(seq + i) for i in range(STREAM_MESSAGES)]
        return self._streamed(self.stub.ChargeStream(iter(requests), timeout=self.timeout,
                                                     metadata=self.metadata))


class _Runner:
    def __init__(self, config: LoadConfig, stub: api.Stub, stop: threading.Event,
                 on_interval: IntervalCallback | None) -> None:
        self.config = config
        self.stop = stop
        self.on_interval = on_interval
        self.lock = threading.Lock()
        self.stats = Stats()
        self.interval_stats = Stats()
        self.intervals: list[dict[str, Any]] = []
        self.started = 0
        self.start = 0.0
        self.last_done = 0.0
        self.stopped_at: float | None = None  # when the stop event was noticed
        self.end = float("inf")
        self.schedule: RateSchedule | None = None
        self.stopping = threading.Event()  # no new calls
        self.in_flight: dict[int, _Cancellable] = {}  # thread id -> call
        calls = _Calls(config, stub, self._track)
        self.calls: dict[str, Callable[[int], str]] = {
            "charge": calls.charge, "refund": calls.refund, "get": calls.get, "list": calls.list,
            "batch": calls.batch, "exchange": calls.exchange,
        }

    def _track(self, call: _Cancellable | None) -> None:
        with self.lock:
            if call is None:
                self.in_flight.pop(threading.get_ident(), None)
            else:
                self.in_flight[threading.get_ident()] = call

    def _one_call(self, seq: int) -> None:
        method = self.config.method if self.config.method != "mix" else MIX[seq % len(MIX)]
        began = time.monotonic()
        status, message = "OK", ""
        try:
            version = self.calls[method](seq)
        except grpc.FutureCancelledError:
            status, message, version = "CANCELLED", "cancelled by payment-client", "unknown"
        except grpc.RpcError as e:
            status, message = e.code().name, e.details() or ""
            call: Any = e  # the raised error is also the finished grpc.Call
            version = version_of(call.initial_metadata(), call.trailing_metadata())
        finally:
            self._track(None)
        done = time.monotonic()
        latency = done - began
        with self.lock:
            self.last_done = max(self.last_done, done)
            self.stats.record(status, version, latency, message)
            self.interval_stats.record(status, version, latency, message)

    def _claim(self) -> tuple[int, float] | None:
        """(sequence number, due time) of the next call, or None when the run is over."""
        with self.lock:
            if self.stopping.is_set() or (self.config.count and self.started >= self.config.count):
                return None
            now = time.monotonic()
            due = now if self.schedule is None else self.schedule.next_slot(now)
            if due >= self.end:
                return None
            self.started += 1
            return self.started - 1, due

    def _worker(self) -> None:
        while (claim := self._claim()) is not None:
            seq, due = claim
            delay = due - time.monotonic()
            if delay > 0 and self.stopping.wait(delay):
                with self.lock:
                    self.started -= 1
                return
            self._one_call(seq)

    def _reporter(self) -> None:
        assert self.on_interval is not None
        last, k = self.start, 1
        while not self.stopping.wait(max(0.0, self.start + k * self.config.interval_s - time.monotonic())):
            now = time.monotonic()
            with self.lock:
                interval, self.interval_stats = self.interval_stats, Stats()
                report = {"type": "interval", "elapsed_s": round(now - self.start, 3),
                          "interval_s": round(now - last, 3), **interval.summary(now - last),
                          **errors_of(interval),
                          "cumulative": {**self.stats.summary(now - self.start), **errors_of(self.stats)}}
            self.intervals.append(report)
            self.on_interval(report)
            last, k = now, k + 1

    def run(self) -> LoadResult:
        self.start = time.monotonic()
        if self.config.duration_s:
            self.end = self.start + self.config.duration_s
        if self.config.rps:
            self.schedule = RateSchedule(self.config.rps, self.start)
        workers = [threading.Thread(target=self._worker, name=f"payment-client-{i}", daemon=True)
                   for i in range(self.config.concurrency)]
        helpers = []
        if self.on_interval is not None and self.config.interval_s:
            helpers.append(threading.Thread(target=self._reporter, name="payment-client-report", daemon=True))
        for thread in workers + helpers:
            thread.start()
        while any(w.is_alive() for w in workers):
            if self.stop.wait(0.05):
                self.stopped_at = time.monotonic()
                break
        self.stopping.set()
        drain_until = time.monotonic() + (self.config.deadline_ms / 1000 + 1 if self.config.deadline_ms
                                          else DEFAULT_DRAIN_S)
        for w in workers:
            w.join(max(0.0, drain_until - time.monotonic()))
        with self.lock:
            leftovers = list(self.in_flight.values())
        for call in leftovers:
            call.cancel()
        for thread in workers + helpers:
            thread.join(5.0)
        return self._result()

    def _result(self) -> LoadResult:
        # rps = requests / elapsed_s, where elapsed_s is: until the stop, for a stopped run; the duration,
        # for a run that reached it (calls it started before the end and that ended just after count);
        # until the last call ended, for a --count run, but with a rate no less than its n slots / rate.
        skipped = self.schedule.skipped if self.schedule is not None else 0
        if self.stopped_at is not None:
            elapsed = self.stopped_at - self.start
        elif self.config.duration_s and not (self.config.count and self.started >= self.config.count):
            elapsed = self.config.duration_s
        else:
            elapsed = (self.last_done or time.monotonic()) - self.start
            if self.config.rps:
                elapsed = max(elapsed, (self.started + skipped) / self.config.rps)
        with self.lock:
            return LoadResult(self.config, self.stats, elapsed, skipped, self.intervals)


def run_load(config: LoadConfig, *, stop: threading.Event | None = None,
             on_interval: IntervalCallback | None = None,
             interceptors: Sequence[grpc.UnaryUnaryClientInterceptor[Any, Any]] = ()) -> LoadResult:
    """Run ``config`` (blocking); see the module docstring for when it ends. ``interceptors`` wrap every call
    (e.g. :class:`payment_service.metrics.ClientMetricsInterceptor`)."""
    if not (config.duration_s or config.count or stop is not None):
        raise ValueError("the run would never end: give duration_s, count or a stop event")
    channel = grpc.insecure_channel(config.target, options=api.channel_options(config.authority))
    try:
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=config.connect_timeout_s)
        except grpc.FutureTimeoutError:
            ready.cancel()  # start anyway: the calls will say what is wrong (UNAVAILABLE)
        calls = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        return _Runner(config, api.Stub(calls), stop or threading.Event(), on_interval).run()
    finally:
        channel.close()


def run_calls(target: str, count: int, **options: Any) -> LoadResult:
    """Make ``count`` calls to ``target`` (other :class:`LoadConfig` fields as keywords); blocking."""
    return run_load(LoadConfig(target=target, count=count, **options))
