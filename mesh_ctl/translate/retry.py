"""VirtualService ``retries`` -> Envoy ``RetryPolicy``, as Istio's ``route/retry/retry.go`` maps it.

No ``retries``: Istio's default policy (2 retries on ``connect-failure,refused-stream,unavailable,cancelled,
retriable-status-codes``, status 503, the previous-hosts predicate, 5 host re-picks). ``attempts: 0``: no
retry policy at all. Otherwise the default with ``attempts``, ``retryOn`` (bare HTTP codes move to
``retriable_status_codes`` and add ``retriable-status-codes``), ``perTryTimeout``, ``backoff`` and
``retryIgnorePreviousHosts`` applied on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.names import PREVIOUS_HOSTS, PREVIOUS_HOSTS_TYPE
from mesh_ctl.translate.values import Json, boolean, duration, integer, join, obj, proto_duration, string

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_NUM_RETRIES = 2
DEFAULT_RETRIABLE_CODES = (503,)
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on vocabulary, all of which pyproxy implements.
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
})
_HTTP_CODES = frozenset(int(s) for s in HTTPStatus)
_FIELDS = {"attempts", "perTryTimeout", "retryOn", "retryIgnorePreviousHosts", "retryRemoteLocalities",
           "backoff"}


def previous_hosts_predicate() -> Json:
    return {"name": PREVIOUS_HOSTS, "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}


def default_policy() -> Json:
    return {
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": DEFAULT_NUM_RETRIES,
        "retry_host_predicate": [previous_hosts_predicate()],
        "host_selection_retry_max_attempts": str(HOST_SELECTION_RETRY_MAX_ATTEMPTS),
        "retriable_status_codes": list(DEFAULT_RETRIABLE_CODES),
    }


def inbound_policy() -> Json:
    """Istio's inbound route retry policy (1.24+): retry a reset before the request reached the app."""
    return {"retry_on": "reset-before-request", "num_retries": 2}


def parse_retry_on(value: str, path: str) -> tuple[str, list[int]]:
    """Split ``"5xx,503,reset"`` into Envoy conditions and HTTP status codes (Istio's ``parseRetryOn``)."""
    conditions: list[str] = []
    codes: list[int] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part.isdigit() and int(part) in _HTTP_CODES:
            codes.append(int(part))
        elif part in RETRY_ON:
            conditions.append(part)
        else:
            raise TranslationError(path, f"unknown retry condition {part!r} (known: {', '.join(sorted(RETRY_ON))}"
                                   ", or an HTTP status code)")
    return ",".join(conditions), codes


def retry_policy(retries: Mapping[str, Any] | None, path: str) -> Json | None:
    """The Envoy retry policy for a VirtualService route's ``retries`` (None: no retries)."""
    out = default_policy()
    if retries is None:
        return out
    r = obj(retries, path, _FIELDS)
    attempts = integer(r.get("attempts", 0), join(path, "attempts"), 0, 2**31 - 1)
    if attempts == 0:
        return None
    out["num_retries"] = attempts
    if r.get("retryOn"):
        conditions, codes = parse_retry_on(string(r["retryOn"], join(path, "retryOn")), join(path, "retryOn"))
        if codes and "retriable-status-codes" not in conditions:
            conditions = f"{conditions},retriable-status-codes" if conditions else "retriable-status-codes"
        out["retry_on"] = conditions
        out["retriable_status_codes"] = codes
        if not codes:
            del out["retriable_status_codes"]
    if "perTryTimeout" in r:
        seconds = duration(r["perTryTimeout"], join(path, "perTryTimeout"))
        if seconds < 0.001:
            raise TranslationError(join(path, "perTryTimeout"), "must be at least 1ms")
        out["per_try_timeout"] = proto_duration(seconds)
    if "retryIgnorePreviousHosts" in r:
        ignore = _bool_value(r["retryIgnorePreviousHosts"], join(path, "retryIgnorePreviousHosts"))
        if not ignore:
            del out["retry_host_predicate"]
    if "retryRemoteLocalities" in r and _bool_value(r["retryRemoteLocalities"],
                                                    join(path, "retryRemoteLocalities")):
        raise TranslationError(join(path, "retryRemoteLocalities"),
                               "retrying in other localities (retry_priority) is not supported by pyproxy")
    if "backoff" in r:
        base = duration(r["backoff"], join(path, "backoff"))
        if base <= 0:
            raise TranslationError(join(path, "backoff"), "must be greater than 0")
        out["retry_back_off"] = {"base_interval": proto_duration(base)}
    return out


def _bool_value(value: object, path: str) -> bool:
    if isinstance(value, Mapping):  # BoolValue written as {value: true}
        return boolean(obj(value, path, {"value"}).get("value", False), join(path, "value"))
    return boolean(value, path)
