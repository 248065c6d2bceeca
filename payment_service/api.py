"""Typed access to ``payment.PaymentService``: method paths, server registration, client stubs.

The code grpcio-tools generates for services (``proto/payment_pb2_grpc.py``) is untyped, so under
``mypy --strict`` everything it touches would turn into ``Any``. This module builds the same objects from
grpc's generic API and the typed message classes, driven by one table (:data:`METHODS`). The generated
module stays committed for anyone who prefers it; both produce identical wire traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import grpc.aio

from payment_service.proto import payment_pb2 as pb

SERVICE = "payment.PaymentService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Kind = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    kind: Kind
    request: type[Any]
    response: type[Any]

    @property
    def path(self) -> str:
        """The HTTP/2 ``:path`` of the method, e.g. ``/payment.PaymentService/Charge``."""
        return f"/{SERVICE}/{self.name}"


METHODS: tuple[Method, ...] = (
    Method("Charge", "unary_unary", pb.ChargeRequest, pb.ChargeReply),
    Method("Refund", "unary_unary", pb.RefundRequest, pb.RefundReply),
    Method("GetPayment", "unary_unary", pb.GetPaymentRequest, pb.Payment),
    Method("ListPayments", "unary_stream", pb.ListPaymentsRequest, pb.Payment),
    Method("WatchPayment", "unary_stream", pb.WatchPaymentRequest, pb.PaymentEvent),
    Method("ChargeBatch", "stream_unary", pb.ChargeRequest, pb.BatchSummary),
    Method("ChargeStream", "stream_stream", pb.ChargeRequest, pb.ChargeReply),
    Method("GetServerStats", "unary_unary", pb.ServerStatsRequest, pb.ServerStats),
)
METHODS_BY_NAME = {m.name: m for m in METHODS}


def path(name: str) -> str:
    return METHODS_BY_NAME[name].path


# ------------------------------------------------------------------------------------------------ server

_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def generic_handler(behaviours: dict[str, Callable[..., Any]]) -> grpc.GenericRpcHandler[Any, Any]:
    """A handler for ``server.add_generic_rpc_handlers`` serving ``behaviours[name]`` for each method."""
    missing = {m.name for m in METHODS} - behaviours.keys()
    if missing:
        raise ValueError(f"no behaviour for {sorted(missing)}")
    handlers = {
        m.name: _HANDLER_FACTORIES[m.kind](
            behaviours[m.name],
            request_deserializer=m.request.FromString,
            response_serializer=m.response.SerializeToString,
        )
        for m in METHODS
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


# ------------------------------------------------------------------------------------------------ client


def _callables(channel: grpc.Channel | grpc.aio.Channel) -> dict[str, Any]:
    factories: dict[str, Any] = {
        "unary_unary": channel.unary_unary,
        "unary_stream": channel.unary_stream,
        "stream_unary": channel.stream_unary,
        "stream_stream": channel.stream_stream,
    }
    return {
        m.name: factories[m.kind](m.path, request_serializer=m.request.SerializeToString,
                                  response_deserializer=m.response.FromString)
        for m in METHODS
    }


class Stub:
    """Blocking client for a ``grpc.Channel`` (what ``payment_pb2_grpc.PaymentServiceStub`` gives, typed)."""

    def __init__(self, channel: grpc.Channel) -> None:
        c = _callables(channel)
        self.Charge: grpc.UnaryUnaryMultiCallable[pb.ChargeRequest, pb.ChargeReply] = c["Charge"]
        self.Refund: grpc.UnaryUnaryMultiCallable[pb.RefundRequest, pb.RefundReply] = c["Refund"]
        self.GetPayment: grpc.UnaryUnaryMultiCallable[pb.GetPaymentRequest, pb.Payment] = c["GetPayment"]
        self.ListPayments: grpc.UnaryStreamMultiCallable[pb.ListPaymentsRequest, pb.Payment] = (
            c["ListPayments"])
        self.WatchPayment: grpc.UnaryStreamMultiCallable[pb.WatchPaymentRequest, pb.PaymentEvent] = (
            c["WatchPayment"])
        self.ChargeBatch: grpc.StreamUnaryMultiCallable[pb.ChargeRequest, pb.BatchSummary] = c["ChargeBatch"]
        self.ChargeStream: grpc.StreamStreamMultiCallable[pb.ChargeRequest, pb.ChargeReply] = (
            c["ChargeStream"])
        self.GetServerStats: grpc.UnaryUnaryMultiCallable[pb.ServerStatsRequest, pb.ServerStats] = (
            c["GetServerStats"])


class AioStub:
    """The same for a ``grpc.aio.Channel``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        c = _callables(channel)
        self.Charge: grpc.aio.UnaryUnaryMultiCallable[pb.ChargeRequest, pb.ChargeReply] = c["Charge"]
        self.Refund: grpc.aio.UnaryUnaryMultiCallable[pb.RefundRequest, pb.RefundReply] = c["Refund"]
        self.GetPayment: grpc.aio.UnaryUnaryMultiCallable[pb.GetPaymentRequest, pb.Payment] = c["GetPayment"]
        self.ListPayments: grpc.aio.UnaryStreamMultiCallable[pb.ListPaymentsRequest, pb.Payment] = (
            c["ListPayments"])
        self.WatchPayment: grpc.aio.UnaryStreamMultiCallable[pb.WatchPaymentRequest, pb.PaymentEvent] = (
            c["WatchPayment"])
        self.ChargeBatch: grpc.aio.StreamUnaryMultiCallable[pb.ChargeRequest, pb.BatchSummary] = (
            c["ChargeBatch"])
        self.ChargeStream: grpc.aio.StreamStreamMultiCallable[pb.ChargeRequest, pb.ChargeReply] = (
            c["ChargeStream"])
        self.GetServerStats: grpc.aio.UnaryUnaryMultiCallable[pb.ServerStatsRequest, pb.ServerStats] = (
            c["GetServerStats"])


def channel_options(authority: str | None = None) -> list[tuple[str, int | str]]:
    """Client channel options: 64 MB messages both ways, optional ``:authority`` override, and reconnects
    within a second (grpc's default back-off grows to 120 s: too slow when a sidecar restarts under load)."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if authority:
        options.append(("grpc.default_authority", authority))
    return options
