"""The payment service's pure rules (payment_service.behaviour): versions, store, hooks, echoes."""

from __future__ import annotations

import pytest

from payment_service.behaviour import (
    BadRequestError,
    NotFoundError,
    PaymentRecord,
    PaymentStore,
    charge_outcome,
    check_charge,
    echo_headers,
    echo_trailers,
    fee_for,
    format_money,
    hooks_from,
    pattern_bytes,
)
from payment_service.proto import payment_pb2 as pb


def test_versions_differ_visibly() -> None:
    v1 = charge_outcome("v1", 1234, "EUR")
    v2 = charge_outcome("v2", 1234, "EUR")
    assert (v1.fee, v1.state, v1.message) == (0, pb.CAPTURED, "v1: charged 12.34 EUR")
    assert (v2.fee, v2.state) == (66, pb.CAPTURED)  # 2.9% of 1234 = 35.8 -> 36, + 30
    assert v2.message == "v2: charged 12.34 EUR + fee 0.66 EUR; fraud check passed"
    held = charge_outcome("v2", 2_000_000, "EUR")
    assert held.state == pb.PENDING_REVIEW and "manual review" in held.message
    assert charge_outcome("v1", 2_000_000, "EUR").state == pb.CAPTURED


def test_money() -> None:
    assert fee_for("v1", 10**9) == 0
    assert fee_for("v2", 0) == 30
    assert fee_for("v2", 1000) == 59
    assert format_money(5, "USD") == "0.05 USD"
    assert format_money(-123456, "EUR") == "-1234.56 EUR"
    assert check_charge(1, "") == "EUR"
    for amount, currency in [(0, "EUR"), (-1, "EUR"), (1, "eur"), (1, "EURO"), (1, "\u20ac\u20ac\u20ac")]:
        with pytest.raises(BadRequestError):
            check_charge(amount, currency)


def test_store_demo_payments_and_bounds() -> None:
    store = PaymentStore("v1", max_stored=3)
    demo = store.get("pay-demo-7")
    assert (demo.amount, demo.customer_id, demo.fee) == (1259, "cust-7", 0)
    assert PaymentStore("v2").get("pay-demo-7").fee == fee_for("v2", 1259)  # same payment, v2's rules
    for bad in ("pay-demo-0", "pay-demo-1001", "pay-demo-x", "nope"):
        with pytest.raises(NotFoundError):
            store.get(bad)
    ids = [store.new_id() for _ in range(4)]
    assert ids == ["pay-v1-1", "pay-v1-2", "pay-v1-3", "pay-v1-4"]
    for i in ids:
        store.add(PaymentRecord(i, "c", 100, 0, "EUR", pb.CAPTURED))
    with pytest.raises(NotFoundError):
        store.get(ids[0])  # the oldest was forgotten
    assert [r.payment_id for r in store.recent("c", 2)] == ["pay-v1-4", "pay-v1-3"]
    assert len(store.recent("", 10)) == 10  # topped up with demo payments
    refunded = store.refund(ids[3], 40)
    assert (refunded.refunded_amount, refunded.state) == (40, pb.REFUNDED)
    assert store.get(ids[3]).refunded_amount == 40
    with pytest.raises(BadRequestError):
        store.refund(ids[3], 101)
    store.refund("pay-demo-1", 10)
    assert store.get("pay-demo-1").refunded_amount == 0  # demo payments are the same everywhere


def test_hooks_from_control_and_headers() -> None:
    assert hooks_from(None, ()) == hooks_from(pb.Control(), ())
    headers = (
        ("x-payment-delay-ms", "20"),
        ("x-payment-fail-code", "14"),
        ("x-payment-fail-message", "m"),
        ("x-payment-fail-at", "after-headers"),
        ("x-payment-response-bytes", "10"),
        ("x-payment-echo-payload", "true"),
    )
    h = hooks_from(None, headers)
    assert (h.delay_ms, h.fail_code, h.fail_message, h.fail_at, h.response_bytes, h.echo_payload) == (
        20,
        14,
        "m",
        pb.FAIL_AFTER_HEADERS,
        10,
        True,
    )
    control = pb.Control(
        delay_ms=5, fail_with_code=9, fail_with_message="\u00e9 100%", fail_at=pb.FAIL_AFTER_FIRST_REPLY
    )
    h = hooks_from(control, headers)  # fields win when set
    assert (h.delay_ms, h.fail_code, h.fail_message, h.fail_at) == (
        5,
        9,
        "\u00e9 100%",
        pb.FAIL_AFTER_FIRST_REPLY,
    )
    assert h.response_bytes == 10  # not set in the control: the header's value
    for bad in [
        (("x-payment-delay-ms", "soon"),),
        (("x-payment-fail-code", "-1"),),
        (("x-payment-fail-code", "17"),),
        (("x-payment-fail-at", "later"),),
        (("x-payment-response-bytes", str(64 * 1024 * 1024)),),
    ]:
        with pytest.raises(BadRequestError):
            hooks_from(None, bad)


def test_reply_payload() -> None:
    assert hooks_from(pb.Control(echo_payload=True, response_bytes=5), ()).reply_payload(b"abc") == b"abc"
    assert hooks_from(pb.Control(response_bytes=5), ()).reply_payload(b"abc") == b"\x00\x01\x02\x03\x04"
    assert hooks_from(None, ()).reply_payload(b"abc") == b""
    data = pattern_bytes(1000)
    assert len(data) == 1000 and data[255] == 255 and data[256] == 0 and data[999] == 999 % 256


def test_echo_scheme_keeps_order_repeats_and_binary() -> None:
    metadata = (
        ("x-echo-a", "1"),
        ("user-agent", "grpc"),
        ("x-echo-b-bin", b"\x00\xff"),
        ("x-echo-a", "2"),
        ("x-echoes", "no"),
    )
    assert echo_headers(metadata) == [("x-echo-a", "1"), ("x-echo-b-bin", b"\x00\xff"), ("x-echo-a", "2")]
    assert echo_trailers(metadata) == [
        ("x-echo-trailer-a", "1"),
        ("x-echo-trailer-b-bin", b"\x00\xff"),
        ("x-echo-trailer-a", "2"),
    ]
