"""The ``grpc-timeout`` header (gRPC over HTTP/2 spec): ``TimeoutValue TimeoutUnit``, at most 8 digits."""

from __future__ import annotations

import math

_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds, or None when the header is malformed (then it is ignored, as gRPC servers do)."""
    if not 2 <= len(value) <= 9:
        return None
    digits = value[:-1]
    unit = _UNITS.get(value[-1])
    if unit is None or not digits.isdigit():
        return None
    return int(digits) * unit


def format_grpc_timeout(seconds: float) -> bytes:
    """The shortest exact-enough encoding, rounded up to the unit so a deadline is never shortened."""
    ms = math.ceil(seconds * 1000)
    if ms < 100_000_000:
        return b"%dm" % max(ms, 1)
    s = math.ceil(seconds)
    if s < 100_000_000:
        return b"%dS" % s
    return b"%dM" % min(math.ceil(seconds / 60), 99_999_999)
