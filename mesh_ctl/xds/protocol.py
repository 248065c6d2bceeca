"""The state-of-the-world xDS rules for one type on one ADS stream, as a pure state machine (no I/O).

What a :class:`TypeState` remembers (per stream, per type URL): the subscription (wildcard and/or explicit
names), what was last sent (version, nonce, names), what the client last ACKed, and the last NACK.
:func:`receive` applies one DiscoveryRequest to it and says whether a response is due (Envoy's rules,
``envoy/service/discovery/v3/discovery.proto`` and the xDS protocol doc):

- nothing sent yet for the type (the first request on this stream): take the subscription, respond with the
  current state, whatever the request's version or nonce (go-control-plane does the same: nonces are
  per stream). The request's ``version_info`` is what the client already has (after a reconnect).
- ``response_nonce`` is not the latest one sent for the type: *stale*, ignored entirely; the client will
  repeat what matters (names) with the latest nonce.
- latest nonce, no ``error_detail``: an ACK of the version sent with that nonce.
- latest nonce with ``error_detail``: a NACK; the client keeps (and repeats as ``version_info``) the version
  it had before; the rejected version and the message are kept for `proxy-status` and the log.
- after an ACK or a NACK, a change of subscribed names gets a response with exactly those resources.

Wildcard (LDS and CDS only): a first request with no names, or any request naming ``*``. RDS and EDS are
never wildcard: no names means nothing subscribed.

Flow control as in go-control-plane: after a response the type is *awaiting* its ACK/NACK and no further
push is sent for it until that arrives; the caller then compares versions again (:meth:`needs_push`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from mesh_ctl.translate.names import CLUSTER_TYPE, LISTENER_TYPE

WILDCARD = "*"
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})


class Received(Enum):
    """What a request turned out to be."""

    FIRST = "first"  # first request of the type on this stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # an old nonce: ignored


@dataclass(frozen=True, slots=True)
class Nack:
    """A rejected response: the version and nonce the client refused, its reason, and when."""

    version: str
    nonce: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request: what it was, and whether a response is due now (first request, or a
    change of subscription)."""

    received: Received
    respond: bool
    subscription_changed: bool = False
    nack: Nack | None = None


@dataclass(slots=True)
class TypeState:
    type_url: str
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    requested: bool = False  # a request for this type arrived on this stream
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_names: frozenset[str] = frozenset()  # the resources the last response carried
    sent_at: float | None = None
    awaiting_ack: bool = False
    acked_version: str | None = None  # the version the client says it runs (ACK, or first request)
    acked_nonce: str | None = None
    acked_at: float | None = None
    last_nack: Nack | None = None
    responses: int = 0
    acks: int = 0
    nacks: int = 0

    # ------------------------------------------------------------------------------------------ queries

    @property
    def subscribed(self) -> frozenset[str] | None:
        """The names to send: None means every resource of the type (wildcard)."""
        return None if self.wildcard else self.names

    @property
    def nacked(self) -> bool:
        """Whether the last response sent was rejected (and nothing newer was sent since)."""
        return self.last_nack is not None and self.last_nack.nonce == self.sent_nonce

    def needs_push(self, version: str) -> bool:
        """Whether a response carrying ``version`` should go out now (a change the client has not got)."""
        return self.requested and not self.awaiting_ack and version != self.sent_version

    # ------------------------------------------------------------------------------------------ updates

    def record_sent(self, version: str, nonce: str, names: Iterable[str], now: float | None = None) -> None:
        self.sent_version = version
        self.sent_nonce = nonce
        self.sent_names = frozenset(names)
        self.sent_at = time.time() if now is None else now
        self.awaiting_ack = True
        self.responses += 1

    def _subscribe(self, names: Iterable[str], first: bool) -> bool:
        """Apply the request's names; return whether the subscription changed."""
        requested = frozenset(names)
        if self.type_url in WILDCARD_TYPES:
            # Legacy wildcard: a first request without names; explicit: "*" among the names. An empty list
            # after a legacy wildcard keeps it (Envoy repeats the empty list in every ACK).
            wildcard = WILDCARD in requested or (not requested and (first or self.wildcard))
        else:
            wildcard = False
        explicit = requested - {WILDCARD}
        changed = wildcard != self.wildcard or explicit != self.names
        self.wildcard, self.names = wildcard, explicit
        return changed


def receive(state: TypeState, *, version_info: str, nonce: str, names: Iterable[str], error_message: str | None,
            now: float | None = None) -> Decision:
    """Apply one DiscoveryRequest for ``state.type_url`` (see the module docstring)."""
    now = time.time() if now is None else now
    if state.sent_nonce is None:
        first = not state.requested
        state.requested = True
        changed = state._subscribe(names, first=first)
        if first and version_info:
            state.acked_version = version_info  # what the client runs already (a reconnect)
        return Decision(Received.FIRST, respond=True, subscription_changed=changed)
    if nonce != state.sent_nonce:
        return Decision(Received.STALE, respond=False)
    state.awaiting_ack = False
    nack: Nack | None = None
    if error_message is not None:
        nack = Nack(state.sent_version or "", nonce, error_message, now)
        state.last_nack = nack
        state.nacks += 1
        kind = Received.NACK
    else:
        state.acked_version = state.sent_version
        state.acked_nonce = nonce
        state.acked_at = now
        state.acks += 1
        kind = Received.ACK
    changed = state._subscribe(names, first=False)
    return Decision(kind, respond=changed, subscription_changed=changed, nack=nack)
