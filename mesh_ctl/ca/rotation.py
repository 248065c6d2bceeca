"""Root rotation with overlap, as a pure state machine over root fingerprints and times (seconds since epoch).

Istio's self-signed root rotation, in three phases; the trust bundle always holds every root a valid
workload certificate may chain to::

    STABLE      bundle [old]        old signs
      | begin(new, publish_delay)                   a new root exists; the bundle [old, new] is published
    PUBLISHING  bundle [old, new]   old signs       proxies learn to trust new before anything uses it
      | at switch_at (publish delay elapsed), or step()
    SWITCHED    bundle [old, new]   new signs       workloads renew onto new as their certificates age
      | at retire_at = the latest not-after old ever issued (no valid certificate needs old any more),
      | or step(force=True)
    STABLE      bundle [new]        new signs

``record_issue`` keeps, per root, the latest not-after it issued: that is what makes retirement safe (a
certificate never outlives its not-after, so once it passed, dropping the root breaks nothing). Transitions
return new states; :mod:`mesh_ctl.ca.roots` persists them (``rotation.json``) so a restart resumes mid-way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

HISTORY = 20  # events kept in the state


class Phase(StrEnum):
    STABLE = "stable"
    PUBLISHING = "publishing"  # (a) the new root is in the bundle; the old one still signs
    SWITCHED = "switched"  # (b) the new root signs; the old one stays trusted until its certificates expire


class RotationError(RuntimeError):
    """The transition asked for is not possible now; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class RotationState:
    phase: Phase
    signing: str  # fingerprint of the root that signs
    bundle: tuple[str, ...]  # fingerprints of the trusted roots, oldest first
    pending: str | None = None  # PUBLISHING: the new root
    retiring: str | None = None  # SWITCHED: the old root
    started_at: float | None = None
    switch_at: float | None = None  # PUBLISHING: when the new root starts signing
    switched_at: float | None = None
    issued_until: Mapping[str, float] = field(default_factory=dict)  # root -> latest not-after it issued
    history: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def initial(cls, root: str, now: float | None = None) -> RotationState:
        return cls(Phase.STABLE, root, (root,), history=(_event(now, "root in use", root),))

    @property
    def retire_at(self) -> float | None:
        """SWITCHED: when the old root can leave the bundle without breaking a valid certificate."""
        if self.phase is not Phase.SWITCHED or self.retiring is None:
            return None
        return max(self.issued_until.get(self.retiring, 0.0), self.switched_at or 0.0)

    @property
    def next_deadline(self) -> float | None:
        return self.switch_at if self.phase is Phase.PUBLISHING else self.retire_at

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "signing": self.signing, "bundle": list(self.bundle),
                "pending": self.pending, "retiring": self.retiring, "started_at": self.started_at,
                "switch_at": self.switch_at, "switched_at": self.switched_at,
                "issued_until": dict(self.issued_until), "history": [dict(h) for h in self.history]}

    @classmethod
    def from_json(cls, data: Any) -> RotationState:
        """Parse what :meth:`to_json` wrote; ValueError if it is not consistent."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            state = cls(
                phase=Phase(data["phase"]), signing=_fp(data["signing"]),
                bundle=tuple(_fp(f) for f in data["bundle"]),
                pending=_opt_fp(data.get("pending")), retiring=_opt_fp(data.get("retiring")),
                started_at=_opt_time(data.get("started_at")), switch_at=_opt_time(data.get("switch_at")),
                switched_at=_opt_time(data.get("switched_at")),
                issued_until={_fp(k): float(v) for k, v in dict(data.get("issued_until") or {}).items()},
                history=tuple(dict(h) for h in data.get("history") or () if isinstance(h, dict)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"missing or wrong field: {e}") from None
        state.check()
        return state

    def check(self) -> None:
        """The invariants of each phase (ValueError when broken)."""
        if self.signing not in self.bundle or len(set(self.bundle)) != len(self.bundle):
            raise ValueError("the signing root must be in the bundle, once")
        if self.phase is Phase.STABLE and (len(self.bundle) != 1 or self.pending or self.retiring):
            raise ValueError("stable: exactly one root, nothing pending or retiring")
        if self.phase is Phase.PUBLISHING and (
                self.pending is None or self.bundle != (self.signing, self.pending) or self.switch_at is None):
            raise ValueError("publishing: the bundle is [signing, pending] with a switch time")
        if self.phase is Phase.SWITCHED and (
                self.retiring is None or self.bundle != (self.retiring, self.signing) or self.switched_at is None):
            raise ValueError("switched: the bundle is [retiring, signing] with a switch time")


def ensure_stable(state: RotationState) -> None:
    """Raise :class:`RotationError` unless a rotation may start now."""
    if state.phase is not Phase.STABLE:
        raise RotationError(f"a root rotation is already in progress (phase {state.phase.value}); "
                            "wait for it to finish, or move it on with `mesh_ctl ca rotate-root --step`")


def begin(state: RotationState, new_root: str, now: float, publish_delay: float) -> RotationState:
    """STABLE -> PUBLISHING: trust ``new_root`` alongside the current root, sign with it after the delay."""
    ensure_stable(state)
    if new_root in state.bundle:
        raise RotationError("the new root is already trusted")
    if publish_delay < 0:
        raise RotationError("the publish delay cannot be negative")
    return replace(state, phase=Phase.PUBLISHING, bundle=(state.signing, new_root), pending=new_root,
                   started_at=now, switch_at=now + publish_delay, switched_at=None,
                   history=_log(state, now, "rotation started: new root published in the trust bundle", new_root))


def switch(state: RotationState, now: float) -> RotationState:
    """PUBLISHING -> SWITCHED: the new root signs from now on; the old one stays trusted."""
    if state.phase is not Phase.PUBLISHING or state.pending is None:
        raise RotationError(f"nothing to switch to (phase {state.phase.value})")
    return replace(state, phase=Phase.SWITCHED, signing=state.pending, retiring=state.signing, pending=None,
                   switch_at=None, switched_at=now,
                   history=_log(state, now, "new root signs; old root trusted until its certificates expire",
                                state.pending))


def retire(state: RotationState, now: float, *, force: bool = False) -> RotationState:
    """SWITCHED -> STABLE: the old root leaves the bundle (refused while its certificates may be valid)."""
    if state.phase is not Phase.SWITCHED or state.retiring is None:
        raise RotationError(f"no root to retire (phase {state.phase.value})")
    retire_at = state.retire_at or now
    if now < retire_at and not force:
        raise RotationError(f"certificates signed by the old root stay valid until {_iso(retire_at)} "
                            f"({retire_at - now:.0f} s); retiring it now would break them (--force to do it anyway)")
    issued = {k: v for k, v in state.issued_until.items() if k != state.retiring}
    what = "old root removed from the trust bundle" + (" (forced)" if force and now < retire_at else "")
    return replace(state, phase=Phase.STABLE, bundle=(state.signing,), retiring=None, started_at=None,
                   switched_at=None, issued_until=issued, history=_log(state, now, what, state.retiring))


def step(state: RotationState, now: float, *, force: bool = False) -> RotationState:
    """The next transition now, whatever its deadline (an operator's explicit step)."""
    if state.phase is Phase.PUBLISHING:
        return switch(state, now)
    if state.phase is Phase.SWITCHED:
        return retire(state, now, force=force)
    raise RotationError("no rotation in progress (start one with `mesh_ctl ca rotate-root`)")


def due(state: RotationState, now: float) -> RotationState:
    """Every transition whose deadline has passed at ``now`` (possibly none, possibly two)."""
    if state.phase is Phase.PUBLISHING and state.switch_at is not None and now >= state.switch_at:
        state = switch(state, now)
    if state.phase is Phase.SWITCHED and now >= (state.retire_at or now):
        state = retire(state, now)
    return state


def record_issue(state: RotationState, root: str, not_after: float) -> RotationState:
    """Remember that ``root`` signed a certificate valid until ``not_after`` (returns ``state`` if not later)."""
    if not_after <= state.issued_until.get(root, float("-inf")):
        return state
    return replace(state, issued_until={**state.issued_until, root: not_after})


def _event(now: float | None, what: str, root: str) -> dict[str, Any]:
    at = time.time() if now is None else now
    return {"at": at, "time": _iso(at), "event": what, "root": root}


def _log(state: RotationState, now: float, what: str, root: str) -> tuple[Mapping[str, Any], ...]:
    return (*state.history, _event(now, what, root))[-HISTORY:]


def _fp(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a SHA-256 fingerprint: {value!r}")
    return value


def _opt_fp(value: Any) -> str | None:
    return None if value is None else _fp(value)


def _opt_time(value: Any) -> float | None:
    return None if value is None else float(value)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
