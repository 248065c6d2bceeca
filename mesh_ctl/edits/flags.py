"""The policy verbs' command-line values -> Istio blocks (Istio's own field names and values).

Every bad value is refused here, before anything is sent, by its flag: ``--percent 150: a percentage is a
number from 0 to 100``. The control plane validates the resulting resource again, like any ``apply``.
:class:`FlagError` with ``usage`` set is a malformed command line (a flag that needs another one), the rest
are values that cannot be used.
"""

from __future__ import annotations

import math
from typing import Any

from mesh_ctl.resources.common import percentage_problem
from mesh_ctl.resources.names import parse_duration_ns
from mesh_ctl.resources.virtual_service import HTTP_STATUS_CODES, RETRY_ON
from mesh_ctl.translate.fault import GRPC_STATUS

MAX_INT32 = 2**31 - 1
DEFAULT_PERCENT = "100"
# mesh_ctl lb's names -> DestinationRule loadBalancer.simple (the balancers pyproxy has)
LB_POLICIES = {"least-request": "LEAST_REQUEST", "round-robin": "ROUND_ROBIN", "random": "RANDOM"}
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
DEFAULT_CONSECUTIVE_ERRORS = "5"  # Istio's consecutive5xxErrors default, applied to gateway errors


class FlagError(ValueError):
    """A value that cannot be used (``usage``: the command line itself is malformed)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def percent(text: str, flag: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise FlagError(f"{flag} {text}: not a number (a percentage from 0 to 100, e.g. 30 or 0.5)") from None
    if not math.isfinite(value) or percentage_problem(value) is not None:
        raise FlagError(f"{flag} {text}: a percentage is a number from 0 to 100 (and at least 0.0001 when not 0)")
    return int(value) if value.is_integer() else value


def duration(text: str, flag: str) -> str:
    """An Istio duration (``200ms``, ``1.5s``, ``1m``): at least 1ms, in whole milliseconds."""
    ns = parse_duration_ns(text)
    if ns is None:
        raise FlagError(f"{flag} {text}: not a duration (e.g. 200ms, 1.5s, 1m)")
    if ns < 1_000_000:
        raise FlagError(f"{flag} {text}: must be at least 1ms")
    if ns % 1_000_000:
        raise FlagError(f"{flag} {text}: only whole milliseconds are supported")
    return text


def count(text: str, flag: str, lo: int, hi: int = MAX_INT32) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FlagError(f"{flag} {text}: not a whole number") from None
    if not lo <= value <= hi:
        raise FlagError(f"{flag} {text}: must be from {lo} to {hi}")
    return value


def abort_status(text: str) -> dict[str, Any]:
    """``UNAVAILABLE`` / ``unavailable`` -> ``{grpcStatus: UNAVAILABLE}``; ``503`` -> ``{httpStatus: 503}``."""
    word = text.strip()
    if word.isdigit():
        code = int(word)
        if 200 <= code <= 599:
            return {"httpStatus": code}
        names = {v: k for k, v in GRPC_STATUS.items()}
        hint = (f"; for gRPC status {code} give its name, {names[code]}" if code in names
                else "; for a gRPC status give its name, e.g. UNAVAILABLE")
        raise FlagError(f"--abort {text}: an HTTP status is from 200 to 599{hint}")
    name = word.upper().replace("-", "_")
    if name in GRPC_STATUS:
        return {"grpcStatus": name}
    raise FlagError(f"--abort {text}: not a gRPC status name nor an HTTP status (gRPC: {', '.join(GRPC_STATUS)}; "
                    "HTTP: 200 to 599)")


def retry_on(text: str) -> str:
    """Envoy's retry conditions (``unavailable,cancelled``; gRPC ones as ``DEADLINE_EXCEEDED`` too) and bare
    HTTP status codes, checked against the vocabulary Istio accepts."""
    tokens = [t.strip().lower().replace("_", "-") for t in text.split(",")]
    for token in tokens:
        if not token:
            raise FlagError(f"--on {text}: an empty condition (a comma too many?)")
        if token not in RETRY_ON and not (token.isdigit() and int(token) in HTTP_STATUS_CODES):
            http = sorted(RETRY_ON - set(GRPC_RETRY_ON))
            raise FlagError(f"--on {text}: unknown retry condition {token!r} (gRPC: {', '.join(GRPC_RETRY_ON)}; "
                            f"HTTP: {', '.join(http)}; or an HTTP status code such as 503)")
    return ",".join(dict.fromkeys(tokens))


def lb_policy(text: str) -> str:
    key = text.strip().lower().replace("_", "-")
    if key in LB_POLICIES:
        return LB_POLICIES[key]
    hint = " (LEAST_CONN is Istio's deprecated name for least-request)" if key == "least-conn" else ""
    raise FlagError(f"{text}: not a load balancing policy minimesh has: {', '.join(LB_POLICIES)}{hint}")


# --------------------------------------------------------------------------------------------- blocks


def fault_block(abort: str | None, delay: str | None, pct: str | None, abort_pct: str | None,
                delay_pct: str | None) -> dict[str, Any]:
    """VirtualService ``fault``: ``--percent`` (default 100) for both kinds, unless one has its own."""
    if abort is None and delay is None:
        raise FlagError("give --abort STATUS and/or --delay DURATION (or --clear)", usage=True)
    if abort_pct is not None and abort is None:
        raise FlagError("--abort-percent needs --abort", usage=True)
    if delay_pct is not None and delay is None:
        raise FlagError("--delay-percent needs --delay", usage=True)
    out: dict[str, Any] = {}
    if delay is not None:
        flag, text = ("--delay-percent", delay_pct) if delay_pct is not None else ("--percent", pct)
        out["delay"] = {"fixedDelay": duration(delay, "--delay"),
                        "percentage": {"value": percent(text or DEFAULT_PERCENT, flag)}}
    if abort is not None:
        flag, text = ("--abort-percent", abort_pct) if abort_pct is not None else ("--percent", pct)
        out["abort"] = {**abort_status(abort), "percentage": {"value": percent(text or DEFAULT_PERCENT, flag)}}
    return out


def retries_block(attempts: str | None, on: str | None, per_try_timeout: str | None) -> dict[str, Any]:
    """VirtualService ``retries``; ``--attempts 0`` turns retries off (Istio's meaning)."""
    if attempts is None:
        raise FlagError("give --attempts N (0 turns retries off), or --clear for Istio's default policy", usage=True)
    n = count(attempts, "--attempts", 0)
    if n == 0 and (on is not None or per_try_timeout is not None):
        raise FlagError("--attempts 0 turns retries off, so --on and --per-try-timeout would do nothing (Istio "
                        "refuses them together)")
    out: dict[str, Any] = {"attempts": n}
    if on is not None:
        out["retryOn"] = retry_on(on)
    if per_try_timeout is not None:
        out["perTryTimeout"] = duration(per_try_timeout, "--per-try-timeout")
    return out


def outlier_block(consecutive: str | None, consecutive_5xx: str | None, interval: str | None,
                  base_ejection: str | None, max_ejection: str | None) -> dict[str, Any]:
    """DestinationRule ``outlierDetection``. The errors counted are Envoy's gateway errors (UNAVAILABLE,
    DEADLINE_EXCEEDED, connect failures, resets: the host is down or overloaded); the 5xx rule, which also
    counts errors of the application (INTERNAL, UNKNOWN...), is off unless ``--consecutive-5xx-errors``
    asks for it (gateway errors are 5xx too, so left at Istio's 5 it would cap ``--consecutive-errors``)."""
    out: dict[str, Any] = {
        "consecutiveGatewayErrors": count(consecutive or DEFAULT_CONSECUTIVE_ERRORS, "--consecutive-errors", 1),
        "consecutive5xxErrors": count(consecutive_5xx or "0", "--consecutive-5xx-errors", 0),
    }
    if interval is not None:
        out["interval"] = duration(interval, "--interval")
    if base_ejection is not None:
        out["baseEjectionTime"] = duration(base_ejection, "--base-ejection")
    if max_ejection is not None:
        out["maxEjectionPercent"] = count(max_ejection, "--max-ejection-percent", 0, 100)
    return out
