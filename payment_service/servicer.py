"""The ``payment.PaymentService`` handlers (grpcio, synchronous, one worker thread per call).

Every method except ``GetServerStats`` goes through the same steps, in this order:

1. ``--latency`` ms of sleep;
2. ``--error-rate``: that fraction of calls ends UNAVAILABLE ``injected by payment-server``, trailers-only
   (as a mesh expects of a retriable failure), or with ``--error-at after-headers`` after the response
   headers, the status in trailers (what Envoy's retries and outlier detection do not see);
3. the test hooks of the call (``Control`` / ``x-payment-*`` headers, see :mod:`payment_service.behaviour`):
   ``delay_ms``, then ``fail_with_code`` at its ``fail_at`` point;
4. the method itself; response headers go out with the first reply.

Streams take their hooks from the request (server-streaming) or from the headers at the start
and then from each request message as it is read (client- and bidi-streaming).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from payment_service import api
from payment_service.behaviour import (
    NO_HOOKS,
    BadRequestError,
    Hooks,
    NotFoundError,
    PaymentRecord,
    PaymentStore,
    charge_outcome,
    check_charge,
    format_money,
    hooks_from,
)
from payment_service.metrics import PaymentMetrics
from payment_service.proto import payment_pb2 as pb
from payment_service.tracking import CallEndedError, Log, ServerCall, ServerCounters, stdout_log

Req = TypeVar("Req")
Resp = TypeVar("Resp")
INJECTED_MESSAGE = "injected by payment-server"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    version: str
    name: str
    error_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None
    error_at: str = "before-headers"  # where --error-rate failures happen: ERROR_AT


ERROR_AT = ("before-headers", "after-headers")


class PaymentServicer:
    def __init__(self, config: ServerConfig, log: Log = stdout_log, metrics: PaymentMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.counters = ServerCounters()
        self.store = PaymentStore(config.version)
        self._log = log
        self._rng = random.Random(config.seed)
        self._identity = (("x-payment-version", config.version), ("x-served-by", config.name))
        self._refund_ids = itertools.count(1)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return api.generic_handler({
            "Charge": self._unary("Charge", self._charge),
            "Refund": self._unary("Refund", self._refund),
            "GetPayment": self._unary("GetPayment", self._get_payment),
            "ListPayments": self._server_stream("ListPayments", self._list_payments),
            "WatchPayment": self._server_stream("WatchPayment", self._watch_payment),
            "ChargeBatch": self._client_stream("ChargeBatch", self._charge_batch),
            "ChargeStream": self._bidi_stream("ChargeStream", self._charge_stream),
            "GetServerStats": self._unary("GetServerStats", self._server_stats, plain=True),
        })

    # ------------------------------------------------------------------------------------- call steps

    def _call(self, name: str, context: grpc.ServicerContext) -> ServerCall:
        return ServerCall(api.path(name), context, self._identity, self.counters, self._log)

    def _prelude(self, call: ServerCall, hooks: Hooks, streaming: bool) -> None:
        """Steps 1-3 above. Fails with AFTER_FIRST_REPLY are left to the stream (unary: after headers)."""
        call.sleep(self.config.latency_ms / 1000)
        if self.config.error_rate > 0 and self._rng.random() < self.config.error_rate:
            self.counters.error_injected()
            if self.config.error_at == "after-headers":
                call.send_headers()
            call.fail(grpc.StatusCode.UNAVAILABLE, INJECTED_MESSAGE)
        self._apply(call, hooks, streaming)

    def _apply(self, call: ServerCall, hooks: Hooks, streaming: bool) -> None:
        call.sleep(hooks.delay_ms / 1000)
        if hooks.fail_code and not (streaming and hooks.fail_at == pb.FAIL_AFTER_FIRST_REPLY):
            self.counters.failure_requested()
            if hooks.fail_at != pb.FAIL_BEFORE_HEADERS:
                call.send_headers()
            call.fail(hooks.fail_code, hooks.fail_message)

    def _fail_after_reply(self, call: ServerCall, hooks: Hooks) -> None:
        if hooks.fail_code and hooks.fail_at == pb.FAIL_AFTER_FIRST_REPLY:
            self.counters.failure_requested()
            call.fail(hooks.fail_code, hooks.fail_message)

    @staticmethod
    def _rescue(call: ServerCall, error: Exception) -> None:
        """Map our typed errors to statuses; anything else propagates (grpc answers UNKNOWN)."""
        if isinstance(error, CallEndedError):
            call.abandon()
        if isinstance(error, BadRequestError):
            call.fail(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if isinstance(error, NotFoundError):
            call.fail(grpc.StatusCode.NOT_FOUND, str(error))

    # ----------------------------------------------------------------------------------- call kinds

    def _unary(self, name: str, fn: Callable[[Req, Hooks, ServerCall], Resp],
               plain: bool = False) -> Callable[[Req, grpc.ServicerContext], Resp]:
        def behaviour(request: Req, context: grpc.ServicerContext) -> Resp:
            call = self._call(name, context)
            try:
                hooks = NO_HOOKS
                if not plain:
                    hooks = hooks_from(getattr(request, "control", None), call.metadata)
                    self._prelude(call, hooks, streaming=False)
                reply = fn(request, hooks, call)
                call.send_headers()
                call.set_ok_trailers()
                return reply
            except (CallEndedError, BadRequestError, NotFoundError) as e:
                self._rescue(call, e)
                raise
            finally:
                call.finish()

        return behaviour

    def _server_stream(self, name: str, fn: Callable[[Req, Hooks, ServerCall], Iterator[Resp]]
                       ) -> Callable[[Req, grpc.ServicerContext], Iterator[Resp]]:
        def behaviour(request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
            call = self._call(name, context)
            try:
                hooks = hooks_from(getattr(request, "control", None), call.metadata)
                self._prelude(call, hooks, streaming=True)
                for i, reply in enumerate(fn(request, hooks, call)):
                    call.send_headers()
                    yield reply
                    if i == 0:
                        self._fail_after_reply(call, hooks)
                call.send_headers()
                call.set_ok_trailers()
            except (CallEndedError, BadRequestError, NotFoundError) as e:
                self._rescue(call, e)
                raise
            finally:
                call.finish()

        return behaviour

    def _client_stream(self, name: str, fn: Callable[[Iterator[Req], ServerCall], Resp]
                       ) -> Callable[[Iterator[Req], grpc.ServicerContext], Resp]:
        def behaviour(requests: Iterator[Req], context: grpc.ServicerContext) -> Resp:
            call = self._call(name, context)
            try:
                self._prelude(call, hooks_from(None, call.metadata), streaming=False)
                reply = fn(requests, call)
                call.send_headers()
                call.set_ok_trailers()
                return reply
            except (CallEndedError, BadRequestError, NotFoundError) as e:
                self._rescue(call, e)
                raise
            finally:
                call.finish()

        return behaviour

    def _bidi_stream(self, name: str, fn: Callable[[Iterator[Req], ServerCall], Iterator[Resp]]
                     ) -> Callable[[Iterator[Req], grpc.ServicerContext], Iterator[Resp]]:
        def behaviour(requests: Iterator[Req], context: grpc.ServicerContext) -> Iterator[Resp]:
            call = self._call(name, context)
            try:
                hooks = hooks_from(None, call.metadata)
                self._prelude(call, hooks, streaming=True)
                for i, reply in enumerate(fn(requests, call)):
                    call.send_headers()
                    yield reply
                    if i == 0:
                        self._fail_after_reply(call, hooks)
                call.send_headers()
                call.set_ok_trailers()
            except (CallEndedError, BadRequestError, NotFoundError) as e:
                self._rescue(call, e)
                raise
            finally:
                call.finish()

        return behaviour

    # -------------------------------------------------------------------------------------- methods

    @property
    def _version(self) -> str:
        return self.config.version

    def _do_charge(self, request: pb.ChargeRequest, hooks: Hooks) -> pb.ChargeReply:
        currency = check_charge(request.amount, request.currency)
        outcome = charge_outcome(self._version, request.amount, currency)
        payment_id = request.payment_id or self.store.new_id()
        self.store.add(PaymentRecord(payment_id, request.customer_id, request.amount, outcome.fee, currency,
                                     outcome.state))
        if self.metrics is not None:
            self.metrics.charged(self._version, pb.PaymentState.Name(outcome.state))
        return pb.ChargeReply(
            payment_id=payment_id, state=outcome.state, amount=request.amount, fee=outcome.fee,
            currency=currency, message=outcome.message, version=self._version, served_by=self.config.name,
            payload=hooks.reply_payload(request.payload),
        )

    def _charge(self, request: pb.ChargeRequest, hooks: Hooks, call: ServerCall) -> pb.ChargeReply:
        return self._do_charge(request, hooks)

    def _refund(self, request: pb.RefundRequest, hooks: Hooks, call: ServerCall) -> pb.RefundReply:
        record = self.store.refund(request.payment_id, request.amount)
        return pb.RefundReply(
            refund_id=f"ref-{self._version}-{next(self._refund_ids)}", payment_id=record.payment_id,
            amount=request.amount, currency=record.currency,
            message=f"{self._version}: refunded {format_money(request.amount, record.currency)}"
                    f" of payment {record.payment_id}",
            version=self._version, served_by=self.config.name, payload=hooks.reply_payload(request.payload),
        )

    def _payment(self, record: PaymentRecord, payload: bytes) -> pb.Payment:
        return pb.Payment(
            payment_id=record.payment_id, customer_id=record.customer_id, amount=record.amount,
            fee=record.fee, currency=record.currency, state=record.state,
            refunded_amount=record.refunded_amount,
            message=f"{self._version}: payment {record.payment_id} is {pb.PaymentState.Name(record.state)}",
            version=self._version, served_by=self.config.name, payload=payload,
        )

    def _get_payment(self, request: pb.GetPaymentRequest, hooks: Hooks, call: ServerCall) -> pb.Payment:
        return self._payment(self.store.get(request.payment_id), hooks.reply_payload(request.payload))

    def _list_payments(self, request: pb.ListPaymentsRequest, hooks: Hooks, call: ServerCall
                       ) -> Iterator[pb.Payment]:
        limit = request.limit or 5
        if limit > 100_000:
            raise BadRequestError(f"limit must be at most 100000, got {limit}")
        payload = hooks.reply_payload(request.payload)
        for i, record in enumerate(self.store.recent(request.customer_id, limit)):
            if i:
                call.sleep(request.interval_ms / 1000)
            yield self._payment(record, payload)

    def _watch_payment(self, request: pb.WatchPaymentRequest, hooks: Hooks, call: ServerCall
                       ) -> Iterator[pb.PaymentEvent]:
        if not request.payment_id:
            raise BadRequestError("payment_id is required")
        updates = request.updates or 3
        interval = (request.interval_ms or 100) / 1000
        if updates > 1_000_000 or interval > 60:
            raise BadRequestError("updates must be at most 1000000 and interval_ms at most 60000")
        payload = hooks.reply_payload(request.payload)
        states = (pb.AUTHORIZED, pb.CAPTURED, pb.SETTLED)
        for seq in range(updates):
            if seq:
                call.sleep(interval)
            state = states[min(seq, len(states) - 1)]
            yield pb.PaymentEvent(
                payment_id=request.payment_id, seq=seq, state=state,
                message=f"{self._version}: payment {request.payment_id} {pb.PaymentState.Name(state)}",
                version=self._version, served_by=self.config.name, payload=payload,
            )

    def _message_hooks(self, call: ServerCall, request: pb.ChargeRequest, streaming: bool) -> Hooks:
        """Hooks of one message in a request stream, applied as it is read. With one reply (``streaming``
        false) FAIL_AFTER_FIRST_REPLY fails at once, after the headers."""
        if not request.HasField("control"):
            return NO_HOOKS
        hooks = hooks_from(request.control, ())
        self._apply(call, hooks, streaming)
        return hooks

    def _charge_batch(self, requests: Iterator[pb.ChargeRequest], call: ServerCall) -> pb.BatchSummary:
        summary = pb.BatchSummary(version=self._version, served_by=self.config.name)
        for request in requests:
            hooks = self._message_hooks(call, request, streaming=False)
            reply = self._do_charge(request, hooks)
            if summary.currency and reply.currency != summary.currency:
                raise BadRequestError(
                    f"one batch, one currency: got {reply.currency} after {summary.currency}")
            summary.currency = reply.currency
            summary.count += 1
            summary.total_amount += reply.amount
            summary.total_fee += reply.fee
            summary.payment_ids.append(reply.payment_id)
            if reply.payload:
                summary.payload = reply.payload
        total = format_money(summary.total_amount, summary.currency or "EUR")
        summary.message = f"{self._version}: charged {summary.count} payments, {total}"
        if self._version != "v1":
            summary.message += f" + fees {format_money(summary.total_fee, summary.currency or 'EUR')}"
        return summary

    def _charge_stream(self, requests: Iterator[pb.ChargeRequest], call: ServerCall
                       ) -> Iterator[pb.ChargeReply]:
        for request in requests:
            hooks = self._message_hooks(call, request, streaming=True)
            yield self._do_charge(request, hooks)
            if hooks.fail_code:  # FAIL_AFTER_FIRST_REPLY: after this message's reply
                call.send_headers()
                self.counters.failure_requested()
                call.fail(hooks.fail_code, hooks.fail_message)

    def _server_stats(self, request: pb.ServerStatsRequest, hooks: Hooks, call: ServerCall) -> pb.ServerStats:
        return self.counters.snapshot(self._version, self.config.name, reset=request.reset)
