"""The per-type SotW state machine alone (no I/O): Envoy's ACK/NACK/nonce/subscription rules."""

from __future__ import annotations

from mesh_ctl.translate.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from mesh_ctl.xds.protocol import Received, TypeState, receive
from mesh_ctl.xds.status import sync_status


def _req(state: TypeState, version: str = "", nonce: str = "", names: tuple[str, ...] = (),
         error: str | None = None) -> tuple[Received, bool]:
    d = receive(state, version_info=version, nonce=nonce, names=names, error_message=error, now=100.0)
    return d.received, d.respond


def test_first_request_without_names_is_a_wildcard_for_lds_and_cds_only() -> None:
    for type_url in (LISTENER_TYPE, CLUSTER_TYPE):
        s = TypeState(type_url)
        assert _req(s) == (Received.FIRST, True)
        assert s.wildcard and s.subscribed is None
    for type_url in (ROUTE_TYPE, ENDPOINT_TYPE):
        s = TypeState(type_url)
        assert _req(s) == (Received.FIRST, True)
        assert not s.wildcard and s.subscribed == frozenset()


def test_explicit_names_and_the_star() -> None:
    s = TypeState(CLUSTER_TYPE)
    _req(s, names=("a", "b"))
    assert not s.wildcard and s.subscribed == frozenset({"a", "b"})
    s = TypeState(LISTENER_TYPE)
    _req(s, names=("*", "x"))
    assert s.wildcard and s.names == {"x"}


def test_ack_records_the_sent_version_and_needs_no_response() -> None:
    s = TypeState(CLUSTER_TYPE)
    _req(s)
    s.record_sent("v1", "n1", ["c"], now=1.0)
    assert sync_status(s, "v1") == "STALE"  # awaiting its ACK
    assert _req(s, version="v1", nonce="n1") == (Received.ACK, False)
    assert s.acked_version == "v1" and not s.awaiting_ack
    assert sync_status(s, "v1") == "SYNCED"
    assert sync_status(s, "v2") == "STALE"  # a newer version is not pushed yet
    assert s.needs_push("v2") and not s.needs_push("v1")


def test_nack_keeps_the_previous_version_and_the_reason() -> None:
    s = TypeState(ROUTE_TYPE)
    _req(s, names=("r",))
    s.record_sent("v1", "n1", ["r"])
    _req(s, version="v1", nonce="n1", names=("r",))
    s.record_sent("v2", "n2", ["r"])
    received, respond = _req(s, version="v1", nonce="n2", names=("r",), error="bad route")
    assert (received, respond) == (Received.NACK, False)
    assert s.acked_version == "v1"
    assert s.last_nack is not None and s.last_nack.version == "v2" and s.last_nack.message == "bad route"
    assert sync_status(s, "v2") == "NACKED"
    assert not s.needs_push("v2")  # the rejected version is not sent again
    assert s.needs_push("v3")  # a new one is
    s.record_sent("v3", "n3", ["r"])
    _req(s, version="v3", nonce="n3", names=("r",))
    assert sync_status(s, "v3") == "SYNCED" and s.nacks == 1 and s.acks == 2


def test_stale_nonce_is_ignored_entirely() -> None:
    s = TypeState(ENDPOINT_TYPE)
    _req(s, names=("a",))
    s.record_sent("v1", "n1", ["a"])
    s.record_sent("v2", "n2", ["a"])
    assert _req(s, version="v1", nonce="n1", names=("a", "b")) == (Received.STALE, False)
    assert s.names == {"a"} and s.awaiting_ack and s.acked_version is None
    assert _req(s, version="v2", nonce="n2", names=("a", "b")) == (Received.ACK, True)  # names changed
    assert s.names == {"a", "b"}


def test_subscription_changes_get_a_response() -> None:
    s = TypeState(ENDPOINT_TYPE)
    _req(s, names=("a",))
    s.record_sent("v1", "n1", ["a"])
    assert _req(s, version="v1", nonce="n1", names=("a",)) == (Received.ACK, False)
    s.record_sent("v2", "n2", ["a"])
    assert _req(s, version="v2", nonce="n2", names=("b",)) == (Received.ACK, True)
    assert s.subscribed == frozenset({"b"})


def test_legacy_wildcard_survives_empty_acks_but_not_explicit_names() -> None:
    s = TypeState(CLUSTER_TYPE)
    _req(s)
    s.record_sent("v1", "n1", ["a"])
    assert _req(s, version="v1", nonce="n1") == (Received.ACK, False)
    assert s.wildcard
    s.record_sent("v2", "n2", ["a"])
    assert _req(s, version="v2", nonce="n2", names=("a",)) == (Received.ACK, True)
    assert not s.wildcard and s.names == {"a"}


def test_a_reconnecting_client_reports_the_version_it_runs() -> None:
    s = TypeState(LISTENER_TYPE)
    assert _req(s, version="v7", nonce="old-stream-nonce") == (Received.FIRST, True)
    assert s.acked_version == "v7"
    assert sync_status(s, "v7") == "NOT SENT"
