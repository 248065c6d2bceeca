"""What `mesh_ctl proxy-status` shows: per connected proxy and per type, SYNCED / STALE / NOT SENT / NACKED.

Meanings (istioctl's, plus NACKED which istioctl folds into STALE):

- ``NOT SENT``: nothing was sent for the type on this stream (not subscribed, or nothing to send yet);
- ``NACKED``: the last response sent was rejected; the proxy runs ``acked`` (an older version);
- ``STALE``: a response is awaiting its ACK, or the proxy's computed version moved and the push has not
  gone out yet (debounce, or the previous response is still unacknowledged);
- ``SYNCED``: the proxy ACKed the last response and that is the current version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mesh_ctl.translate.names import SECRET_TYPE, SHORT_NAMES, TYPE_URLS
from mesh_ctl.xds.protocol import TypeState

Sync = Literal["SYNCED", "STALE", "NOT SENT", "NACKED"]
COLUMNS = tuple(SHORT_NAMES[t] for t in (*TYPE_URLS, SECRET_TYPE))  # CDS, EDS, LDS, RDS, SDS


def sync_status(state: TypeState | None, current_version: str | None) -> Sync:
    if state is None or state.sent_version is None:
        return "NOT SENT"
    if state.nacked:
        return "NACKED"
    if state.awaiting_ack or (current_version is not None and current_version != state.sent_version):
        return "STALE"
    return "SYNCED"


@dataclass(frozen=True, slots=True)
class TypeStatus:
    type_url: str
    status: Sync
    current: str | None  # the version the control plane would send now
    sent: str | None
    acked: str | None
    resources: int  # how many resources the last response carried
    subscribed: str  # "*" or the number of names
    nack: str | None  # the reason of the last rejection (kept after a later ACK, see nack_version)
    nack_version: str | None
    nack_at: float | None
    sent_at: float | None
    acked_at: float | None
    pushes: int
    acks: int
    nacks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": SHORT_NAMES.get(self.type_url, self.type_url), "type_url": self.type_url,
            "status": self.status, "current_version": self.current, "sent_version": self.sent,
            "acked_version": self.acked, "resources": self.resources, "subscribed": self.subscribed,
            "last_nack": None if self.nack is None else {
                "message": self.nack, "version": self.nack_version, "at": self.nack_at},
            "sent_at": self.sent_at, "acked_at": self.acked_at,
            "pushes": self.pushes, "acks": self.acks, "nacks": self.nacks,
        }


def type_status(type_url: str, state: TypeState | None, current_version: str | None) -> TypeStatus:
    if state is None:
        return TypeStatus(type_url, "NOT SENT", current_version, None, None, 0, "", None, None, None, None, None,
                          0, 0, 0)
    nack = state.last_nack
    return TypeStatus(
        type_url=type_url,
        status=sync_status(state, current_version),
        current=current_version,
        sent=state.sent_version,
        acked=state.acked_version,
        resources=len(state.sent_names),
        subscribed="*" if state.wildcard else str(len(state.names)),
        nack=nack.message if nack else None,
        nack_version=nack.version if nack else None,
        nack_at=nack.at if nack else None,
        sent_at=state.sent_at,
        acked_at=state.acked_at,
        pushes=state.responses,
        acks=state.acks,
        nacks=state.nacks,
    )


def cell(t: dict[str, Any], width: int = 48) -> str:
    """One table cell of `proxy-status` from a type's JSON: ``SYNCED``, ``NACKED(reason)`` ..."""
    status = str(t.get("status", "NOT SENT"))
    nack = t.get("last_nack")
    if status == "NACKED" and isinstance(nack, dict):
        reason = " ".join(str(nack.get("message", "")).split())
        if len(reason) > width:
            reason = reason[: width - 3] + "..."
        return f"NACKED({reason})"
    return status


def columns_for(types: list[dict[str, Any]]) -> dict[str, str]:
    """CDS/EDS/LDS/RDS -> cell text, for one proxy's ``types`` list."""
    by_type = {str(t.get("type")): t for t in types}
    return {c: cell(by_type[c]) if c in by_type else "NOT SENT" for c in COLUMNS}
