"""What the payment service does, without any gRPC: versions, the payment store, test hooks, echoes.

Versions (visible in every reply, so traffic shifts can be watched):

- ``v1`` charges no fee; its messages read ``v1: charged 12.34 EUR``.
- ``v2`` charges a fee of 2.9% + 30 (minor units) and runs a fraud check: amounts above
  :data:`FRAUD_THRESHOLD` are held in ``PENDING_REVIEW``. Messages read
  ``v2: charged 12.34 EUR + fee 0.66 EUR; fraud check passed``.

Test hooks (:class:`Hooks`) come from a request's ``Control`` block or from request metadata
(``x-payment-delay-ms``, ``x-payment-fail-code``, ``x-payment-fail-message``, ``x-payment-fail-at`` =
``before-headers|after-headers|after-first-reply``, ``x-payment-response-bytes``, ``x-payment-echo-payload``);
a non-zero field wins over the header.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from payment_service.proto import payment_pb2 as pb

VERSIONS = ("v1", "v2")
FRAUD_THRESHOLD = 1_000_000  # 10,000.00 in minor units
DEMO_PAYMENTS = 1000  # "pay-demo-1" .. "pay-demo-1000" exist on every instance
DEFAULT_CURRENCY = "EUR"
MAX_STORED = 10_000  # charges kept per instance (oldest forgotten first)
MAX_RESPONSE_BYTES = 64 * 1024 * 1024 - 64 * 1024  # leaves room for the other fields under 64 MiB

ECHO_PREFIX = "x-echo-"
TRAILER_ECHO_PREFIX = "x-echo-trailer-"

Metadata = Sequence[tuple[str, str | bytes]]


class BadRequestError(ValueError):
    """The request is invalid; the server answers INVALID_ARGUMENT with this message."""


class NotFoundError(LookupError):
    """The server answers NOT_FOUND with this message."""


# ------------------------------------------------------------------------------------------------ money


def fee_for(version: str, amount: int) -> int:
    """v1: none. v2: 2.9% (rounded half up) + 30."""
    if version == "v1":
        return 0
    return (amount * 29 + 500) // 1000 + 30


def format_money(amount: int, currency: str) -> str:
    sign = "-" if amount < 0 else ""
    units, cents = divmod(abs(amount), 100)
    return f"{sign}{units}.{cents:02d} {currency}"


def check_charge(amount: int, currency: str) -> str:
    """Validate a charge; returns the currency to use (default EUR)."""
    if amount <= 0:
        raise BadRequestError(f"amount must be positive, got {amount}")
    currency = currency or DEFAULT_CURRENCY
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise BadRequestError(f"currency must be a 3-letter ISO code like EUR, got {currency!r}")
    return currency


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    state: pb.PaymentState
    fee: int
    message: str


def charge_outcome(version: str, amount: int, currency: str) -> ChargeOutcome:
    fee = fee_for(version, amount)
    charged = f"{version}: charged {format_money(amount, currency)}"
    if version == "v1":
        return ChargeOutcome(pb.CAPTURED, fee, charged)
    held = amount > FRAUD_THRESHOLD
    note = "fraud check: held for manual review" if held else "fraud check passed"
    return ChargeOutcome(
        pb.PENDING_REVIEW if held else pb.CAPTURED, fee,
        f"{charged} + fee {format_money(fee, currency)}; {note}",
    )


# ------------------------------------------------------------------------------------------------ store


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    payment_id: str
    customer_id: str
    amount: int
    fee: int
    currency: str
    state: pb.PaymentState
    refunded_amount: int = 0


def demo_payment(payment_id: str, version: str) -> PaymentRecord | None:
    """The demo payments every instance knows, so reads work whichever version serves them."""
    prefix = "pay-demo-"
    if not payment_id.startswith(prefix) or not payment_id[len(prefix):].isdigit():
        return None
    n = int(payment_id[len(prefix):])
    if not 1 <= n <= DEMO_PAYMENTS:
        return None
    amount = 1000 + 37 * n
    return PaymentRecord(payment_id, f"cust-{n % 10}", amount, fee_for(version, amount), DEFAULT_CURRENCY,
                         pb.SETTLED)


class PaymentStore:
    """This instance's charges (bounded, oldest forgotten first) in front of the demo payments."""

    def __init__(self, version: str, max_stored: int = MAX_STORED) -> None:
        self._version = version
        self._max = max_stored
        self._lock = threading.Lock()
        self._records: OrderedDict[str, PaymentRecord] = OrderedDict()
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"pay-{self._version}-{next(self._ids)}"

    def add(self, record: PaymentRecord) -> None:
        with self._lock:
            self._records[record.payment_id] = record
            self._records.move_to_end(record.payment_id)
            while len(self._records) > self._max:
                self._records.popitem(last=False)

    def get(self, payment_id: str) -> PaymentRecord:
        with self._lock:
            record = self._records.get(payment_id)
        if record is None:
            record = demo_payment(payment_id, self._version)
        if record is None:
            raise NotFoundError(f"payment {payment_id!r} not found")
        return record

    def refund(self, payment_id: str, amount: int) -> PaymentRecord:
        """Record a refund of ``amount`` (at most the payment's amount); returns the updated payment."""
        if amount <= 0:
            raise BadRequestError(f"refund amount must be positive, got {amount}")
        record = self.get(payment_id)
        if amount > record.amount:
            raise BadRequestError(f"refund of {amount} exceeds the payment's amount {record.amount}")
        updated = replace(record, refunded_amount=record.refunded_amount + amount, state=pb.REFUNDED)
        if demo_payment(payment_id, self._version) is None:
            self.add(updated)  # demo payments stay as they are: every instance must agree on them
        return updated

    def recent(self, customer_id: str, limit: int) -> list[PaymentRecord]:
        """Newest charges of ``customer_id`` ("" = anyone), then demo payments, ``limit`` in all."""
        with self._lock:
            newest = [r for r in reversed(self._records.values())
                      if not customer_id or r.customer_id == customer_id]
        out = newest[:limit]
        for n in range(1, DEMO_PAYMENTS + 1):
            if len(out) >= limit:
                break
            demo = demo_payment(f"pay-demo-{n}", self._version)
            if demo is not None and (not customer_id or demo.customer_id == customer_id):
                out.append(demo)
        return out


# ------------------------------------------------------------------------------------------------ hooks

_FAIL_AT = {
    "before-headers": pb.FAIL_BEFORE_HEADERS,
    "after-headers": pb.FAIL_AFTER_HEADERS,
    "after-first-reply": pb.FAIL_AFTER_FIRST_REPLY,
}


@dataclass(frozen=True, slots=True)
class Hooks:
    delay_ms: int = 0
    fail_code: int = 0
    fail_message: str = ""
    fail_at: int = pb.FAIL_BEFORE_HEADERS
    echo_payload: bool = False
    response_bytes: int = 0

    def reply_payload(self, request_payload: bytes) -> bytes:
        if self.echo_payload:
            return request_payload
        return pattern_bytes(self.response_bytes) if self.response_bytes else b""


NO_HOOKS = Hooks()


def _header(metadata: Metadata, key: str) -> str | None:
    for k, v in metadata:
        if k == key:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None


def _int_header(metadata: Metadata, key: str) -> int:
    raw = _header(metadata, key)
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise BadRequestError(f"{key} must not be negative, got {value}")
    return value


def hooks_from(control: pb.Control | None, metadata: Metadata) -> Hooks:
    """Merge a request's ``Control`` (wins when non-zero) with the ``x-payment-*`` request headers."""
    fail_at_raw = _header(metadata, "x-payment-fail-at")
    if fail_at_raw is not None and fail_at_raw not in _FAIL_AT:
        raise BadRequestError(f"x-payment-fail-at must be one of {sorted(_FAIL_AT)}, got {fail_at_raw!r}")
    echo_raw = _header(metadata, "x-payment-echo-payload")
    hooks = Hooks(
        delay_ms=_int_header(metadata, "x-payment-delay-ms"),
        fail_code=_int_header(metadata, "x-payment-fail-code"),
        fail_message=_header(metadata, "x-payment-fail-message") or "",
        fail_at=_FAIL_AT[fail_at_raw] if fail_at_raw is not None else pb.FAIL_BEFORE_HEADERS,
        echo_payload=echo_raw is not None and echo_raw.lower() in ("1", "true", "yes"),
        response_bytes=_int_header(metadata, "x-payment-response-bytes"),
    )
    if control is not None:
        hooks = Hooks(
            delay_ms=control.delay_ms or hooks.delay_ms,
            fail_code=control.fail_with_code or hooks.fail_code,
            fail_message=control.fail_with_message or hooks.fail_message,
            fail_at=control.fail_at or hooks.fail_at,
            echo_payload=control.echo_payload or hooks.echo_payload,
            response_bytes=control.response_bytes or hooks.response_bytes,
        )
    if hooks.fail_code > 16:
        raise BadRequestError(f"fail_with_code must be a gRPC status code 1..16, got {hooks.fail_code}")
    if hooks.response_bytes > MAX_RESPONSE_BYTES:
        raise BadRequestError(f"response_bytes must be at most {MAX_RESPONSE_BYTES}, "
                              f"got {hooks.response_bytes}")
    return hooks


_PATTERN = bytes(range(256))


def pattern_bytes(n: int) -> bytes:
    """``n`` bytes of 0x00, 0x01, ... 0xff, 0x00, ...: easy to check after a trip through proxies."""
    reps, rest = divmod(n, 256)
    return _PATTERN * reps + _PATTERN[:rest]


# ------------------------------------------------------------------------------------------------ echoes


def echo_headers(metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str | bytes]]:
    """Request headers ``x-echo-*`` as they came (order, repeats and ``-bin`` values kept)."""
    return [(k, v) for k, v in metadata if k.startswith(ECHO_PREFIX)]


def echo_trailers(metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str | bytes]]:
    """The same renamed ``x-echo-trailer-<rest>`` (``x-echo-a-bin`` -> ``x-echo-trailer-a-bin``)."""
    return [(TRAILER_ECHO_PREFIX + k[len(ECHO_PREFIX):], v) for k, v in metadata if k.startswith(ECHO_PREFIX)]
