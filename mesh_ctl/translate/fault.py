"""VirtualService ``http[].fault`` -> Envoy's ``envoy.extensions.filters.http.fault.v3.HTTPFault``, as Istio's
``route.TranslateFault`` makes it.

The route gets it as ``typed_per_filter_config["envoy.filters.http.fault"]``; the HTTP connection managers
that carry such routes have the ``envoy.filters.http.fault`` filter (an empty ``HTTPFault``: it does nothing
until a route configures it) just before the router, where Istio puts it (:func:`fault_filter`).

- ``delay``: ``fixedDelay`` -> ``fixed_delay``. ``percentage.value`` P -> ``{numerator: uint32(P * 10000),
  denominator: MILLION}`` (Istio's ``translatePercentToFractionalPercent``: parts per million, truncated);
  without ``percentage``, the deprecated integer ``percent`` N -> ``{numerator: N, denominator: HUNDRED}``,
  and with neither, ``{numerator: 0, denominator: HUNDRED}``: no call is delayed. A delay without
  ``fixedDelay`` is dropped, as Istio drops it.
- ``abort``: ``httpStatus`` -> ``http_status``; ``grpcStatus`` (Istio's upper-case name, ``UNAVAILABLE``) ->
  ``grpc_status`` (its number, 14); ``percentage`` as for delays, and without one no ``percentage`` at all
  (Envoy's default is 0: no call is aborted). An abort without a status is dropped, as Istio drops it.
  ``http2Error`` is refused (Istio does not implement it either).
- Neither left: an empty ``HTTPFault`` (Istio packs its nil result the same way), which injects nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.names import FAULT, FAULT_TYPE
from mesh_ctl.translate.values import Json, duration, integer, join, obj, percent, proto_duration, string

# gRPC status names -> codes (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md; Istio's
# ``grpc.SupportedGRPCStatus``).
GRPC_STATUS: dict[str, int] = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
_FAULT_FIELDS = {"delay", "abort"}
_DELAY_FIELDS = {"fixedDelay", "percentage", "percent"}
_DELAY_REASONS = {"exponentialDelay": "exponential delays are not supported (Istio does not support them either)"}
_ABORT_FIELDS = {"httpStatus", "grpcStatus", "percentage"}
_ABORT_REASONS = {"http2Error": "HTTP/2 error aborts are not supported (Istio does not support them either)"}


def fault_filter() -> Json:
    """The HTTP filter routes configure with ``typed_per_filter_config`` (Istio's ``xdsfilters.Fault``)."""
    return {"name": FAULT, "typed_config": {"@type": FAULT_TYPE}}


def million(pct: float) -> Json:
    """Istio's ``translatePercentToFractionalPercent``: ``uint32(pct * 10000)`` parts per million."""
    return {"numerator": int(pct * 10000), "denominator": "MILLION"}


def per_route_fault(fault: object, path: str) -> Json:
    """The route's ``typed_per_filter_config`` entry for ``fault`` (see the module docstring)."""
    f = obj(fault, path, _FAULT_FIELDS)
    out: Json = {"@type": FAULT_TYPE}
    if "delay" in f:
        delay = _delay(f["delay"], join(path, "delay"))
        if delay is not None:
            out["delay"] = delay
    if "abort" in f:
        abort = _abort(f["abort"], join(path, "abort"))
        if abort is not None:
            out["abort"] = abort
    return out


def _delay(value: object, path: str) -> Json | None:
    d = obj(value, path, _DELAY_FIELDS, _DELAY_REASONS)
    if "percentage" in d:
        fraction = million(percent(d["percentage"], join(path, "percentage")))
    else:
        legacy = integer(d.get("percent", 0), join(path, "percent"), 0, 100)
        fraction = {"numerator": legacy, "denominator": "HUNDRED"}
    if "fixedDelay" not in d:
        return None
    return {"fixed_delay": proto_duration(duration(d["fixedDelay"], join(path, "fixedDelay"))),
            "percentage": fraction}


def _abort(value: object, path: str) -> Json | None:
    a: Mapping[str, Any] = obj(value, path, _ABORT_FIELDS, _ABORT_REASONS)
    out: Json = {}
    if "percentage" in a:
        out["percentage"] = million(percent(a["percentage"], join(path, "percentage")))
    if "httpStatus" in a:
        out["http_status"] = integer(a["httpStatus"], join(path, "httpStatus"), 200, 599)
    elif "grpcStatus" in a:
        name = string(a["grpcStatus"], join(path, "grpcStatus"))
        if name not in GRPC_STATUS:
            raise TranslationError(join(path, "grpcStatus"), f"unknown gRPC status {name!r} (use a name such as "
                                   "UNAVAILABLE or NOT_FOUND)")
        out["grpc_status"] = GRPC_STATUS[name]
    else:
        return None
    return out
