"""Retry *policy* (pure): would Envoy retry this outcome, and how long to back off.

Per-request retry *state* (attempt count, hosts tried, buffered body, timers) lives in
:class:`~pyproxy.proxy.stream.ProxyStream`; this module only answers questions, like Envoy's
``RetryStateImpl::wouldRetry*`` (``source/common/router/retry.md``: "pure policy check").

Envoy's vocabulary (REFERENCE.md section 1):
- resets before a response: ``connect-failure`` (connect failed), ``refused-stream`` (REFUSED_STREAM),
  ``reset`` (any reset or disconnect); ``5xx`` and ``gateway-error`` include all of them.
- responses: ``5xx`` (any 5xx), ``gateway-error`` (502, 503, 504), ``retriable-4xx`` (409),
  ``retriable-status-codes`` (the policy's list), ``envoy-ratelimited`` (header x-envoy-ratelimited);
  gRPC ``cancelled`` (1), ``deadline-exceeded`` (4), ``resource-exhausted`` (8), ``internal`` (13),
  ``unavailable`` (14) - only for grpc-status in the response *headers* (a trailers-only response).
Back-off: fully jittered exponential, retry N waits U[0, (2^N - 1) * base), capped at ``max_interval``.
"""

from __future__ import annotations

import random
from typing import Literal

from pyproxy.config.model import RetryPolicy

ResetKind = Literal["connect-failure", "refused-stream", "reset"]

_GRPC_CODES = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13,
               "unavailable": 14}
_ANY_RESET = frozenset({"5xx", "gateway-error", "reset"})

SUPPORTED_RETRY_ON = frozenset({"5xx", "gateway-error", "reset", "connect-failure", "refused-stream",
                                "retriable-4xx", "retriable-status-codes", "envoy-ratelimited",
                                *_GRPC_CODES})


def would_retry_reset(policy: RetryPolicy, kind: ResetKind) -> bool:
    retry_on = policy.retry_on
    if retry_on & _ANY_RESET:
        return True
    if kind == "connect-failure":
        return "connect-failure" in retry_on
    if kind == "refused-stream":
        return "refused-stream" in retry_on
    return False


def would_retry_response(policy: RetryPolicy, status: int, grpc_status: int | None,
                         ratelimited: bool = False) -> bool:
    retry_on = policy.retry_on
    if status >= 500 and "5xx" in retry_on:
        return True
    if status in (502, 503, 504) and "gateway-error" in retry_on:
        return True
    if status == 409 and "retriable-4xx" in retry_on:
        return True
    if "retriable-status-codes" in retry_on and status in policy.retriable_status_codes:
        return True
    if ratelimited and "envoy-ratelimited" in retry_on:
        return True
    if grpc_status is not None:
        for name, code in _GRPC_CODES.items():
            if code == grpc_status and name in retry_on:
                return True
    return False


def backoff(retry_number: int, base: float, max_interval: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry_number`` (1-based)."""
    upper = min(((1 << retry_number) - 1) * base, max_interval)
    return rng.uniform(0.0, upper)
