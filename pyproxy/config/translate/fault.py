"""``envoy.filters.http.fault`` (``envoy.extensions.filters.http.fault.v3.HTTPFault``) -> :class:`FaultConfig`.

Everything of Envoy's HTTPFault is translated except ``response_rate_limit`` (pyproxy cannot pace response
bodies) and ``filter_metadata`` (pyproxy has no dynamic metadata): both are refused with their path.
``protoc-gen-validate`` rules (``http_status`` in [200, 600), ``fixed_delay`` > 0, one error type and one delay
kind required) are reported by :mod:`pyproxy.config.pgv`, which runs on the same message before this.

Runtime overrides: Envoy reads the filter's runtime keys (``fault.http.abort.abort_percent`` ... or the names
the config gives them) from its runtime snapshot on every request. pyproxy's runtime is the bootstrap's
``layered_runtime`` static layers, fixed for the life of the process, so the entries a config can read are
taken from it here, once (:func:`fault_runtime`), and the filter looks them up per request: the same result
as Envoy's snapshot reads. Values are read as Envoy's runtime reads them: a non-negative integer (a plain
number, or a string of digits), or a FractionalPercent (``{numerator, denominator}``); anything else is as if
the key were absent, as in Envoy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, header_matcher

FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"
DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}
_DENOMINATOR_NAMES = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_RUNTIME_FIELDS = (
    ("delay_percent_runtime", m.FAULT_DELAY_PERCENT_KEY),
    ("abort_percent_runtime", m.FAULT_ABORT_PERCENT_KEY),
    ("delay_duration_runtime", m.FAULT_DELAY_DURATION_KEY),
    ("abort_http_status_runtime", m.FAULT_ABORT_HTTP_STATUS_KEY),
    ("abort_grpc_status_runtime", m.FAULT_ABORT_GRPC_STATUS_KEY),
    ("max_active_faults_runtime", m.FAULT_MAX_ACTIVE_FAULTS_KEY),
)


def fault_filter(ctx: Ctx, proto: fault_pb2.HTTPFault, path: str) -> m.FaultConfig:
    ctx.check(
        proto,
        path,
        {
            "delay",
            "abort",
            "upstream_cluster",
            "headers",
            "downstream_nodes",
            "max_active_faults",
            "disable_downstream_cluster_stats",
            "response_rate_limit_percent_runtime",  # names a key; without response_rate_limit nothing reads it
            *(name for name, _ in _RUNTIME_FIELDS),
        },
        reasons={
            "response_rate_limit": "response rate limiting is not supported by pyproxy's fault filter "
            "(delay and abort are)",
            "filter_metadata": "filter_metadata is not supported: pyproxy has no dynamic metadata",
        },
    )
    delay = _delay(ctx, proto.delay, join(path, "delay")) if proto.HasField("delay") else None
    abort = _abort(ctx, proto.abort, join(path, "abort")) if proto.HasField("abort") else None
    headers = tuple(
        hm
        for hm in (header_matcher(ctx, h, f"{join(path, 'headers')}[{i}]") for i, h in enumerate(proto.headers))
        if hm is not None
    )
    # PROTOBUF_GET_STRING_OR_DEFAULT: an empty key name means Envoy's default name.
    keys = {name: getattr(proto, name) or default for name, default in _RUNTIME_FIELDS}
    return m.FaultConfig(
        delay=delay,
        abort=abort,
        headers=headers,
        downstream_nodes=frozenset(proto.downstream_nodes),
        upstream_cluster=proto.upstream_cluster,
        max_active_faults=proto.max_active_faults.value if proto.HasField("max_active_faults") else None,
        disable_downstream_cluster_stats=proto.disable_downstream_cluster_stats,
        runtime=fault_runtime(ctx.runtime, keys.values()),
        **keys,
    )


def _fractional(ctx: Ctx, fp: Any, path: str) -> m.FractionalPercent:
    """``envoy.type.v3.FractionalPercent`` with its denominator (an undefined one is reported by pgv)."""
    ctx.check(fp, path, {"numerator", "denominator"})
    return m.FractionalPercent(numerator=fp.numerator, denominator=DENOMINATORS.get(fp.denominator, 100))


def _percentage(ctx: Ctx, msg: Any, path: str) -> m.FractionalPercent:
    """A fault's ``percentage``; unset is 0 %: the fault never happens (Envoy's default FractionalPercent)."""
    if not msg.HasField("percentage"):
        return m.FractionalPercent()
    return _fractional(ctx, msg.percentage, join(path, "percentage"))


def _delay(ctx: Ctx, d: Any, path: str) -> m.FaultDelay | None:
    ctx.check(d, path, {"fixed_delay", "header_delay", "percentage"})
    kind = d.WhichOneof("fault_delay_secifier")  # sic: Envoy's spelling
    percentage = _percentage(ctx, d, path)
    if kind == "header_delay":
        ctx.check(d.header_delay, join(path, "header_delay"), set())
        return m.FaultDelay(percentage=percentage)
    if kind == "fixed_delay":
        fd = d.fixed_delay
        return m.FaultDelay(percentage=percentage, fixed_delay_ms=max(0, fd.seconds * 1000 + fd.nanos // 1_000_000))
    return None  # neither: reported by the protoc-gen-validate pass (required oneof)


def _abort(ctx: Ctx, a: Any, path: str) -> m.FaultAbort | None:
    ctx.check(a, path, {"http_status", "grpc_status", "header_abort", "percentage"})
    kind = a.WhichOneof("error_type")
    percentage = _percentage(ctx, a, path)
    if kind == "http_status":
        return m.FaultAbort(kind="http", percentage=percentage, http_status=a.http_status)
    if kind == "grpc_status":
        return m.FaultAbort(kind="grpc", percentage=percentage, grpc_status=a.grpc_status)
    if kind == "header_abort":
        ctx.check(a.header_abort, join(path, "header_abort"), set())
        return m.FaultAbort(kind="header", percentage=percentage)
    return None  # reported by the protoc-gen-validate pass (required oneof)


# ------------------------------------------------------------------------------------------- runtime


def fault_runtime(
    runtime: Mapping[str, object], keys: Collection[str]
) -> tuple[tuple[str, int | m.FractionalPercent], ...]:
    """The runtime entries a fault config may read: its own keys and every ``fault.http.*`` key (the
    per-downstream-cluster overrides), each as Envoy's runtime snapshot reads it; unreadable ones left out."""
    out: list[tuple[str, int | m.FractionalPercent]] = []
    for key in sorted(runtime):
        if key not in keys and not key.startswith(m.FAULT_RUNTIME_PREFIX):
            continue
        value = runtime_entry(runtime[key])
        if value is not None:
            out.append((key, value))
    return tuple(out)


def runtime_entry(value: object) -> int | m.FractionalPercent | None:
    """A static-layer value as Envoy's ``SnapshotImpl`` reads it for ``getInteger``/``featureEnabled``: a
    non-negative integer (a number or a string of digits: its ``uint_value``), or a FractionalPercent (a map
    with ``numerator``/``denominator``); None for anything else (Envoy then uses the default)."""
    if isinstance(value, bool):
        return None  # a boolean entry has no integer value
    if isinstance(value, int):
        return value if 0 <= value <= _UINT64_MAX else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and 0 <= value <= _UINT64_MAX else None
    if isinstance(value, str):
        return simple_atoi(value, _UINT64_MAX)
    if isinstance(value, dict):
        numerator = value.get("numerator", 0)
        denominator = value.get("denominator", "HUNDRED")
        if set(value) - {"numerator", "denominator"}:
            return None
        if isinstance(numerator, float) and numerator.is_integer():
            numerator = int(numerator)
        if isinstance(numerator, str):
            numerator = simple_atoi(numerator, _UINT32_MAX)
        if isinstance(numerator, bool) or not isinstance(numerator, int) or not 0 <= numerator <= _UINT32_MAX:
            return None
        if isinstance(denominator, float) and denominator.is_integer():
            denominator = int(denominator)
        if isinstance(denominator, int) and not isinstance(denominator, bool):
            resolved = DENOMINATORS.get(denominator)
        elif isinstance(denominator, str):
            resolved = _DENOMINATOR_NAMES.get(denominator)
        else:
            resolved = None
        if resolved is None:
            return None
        return m.FractionalPercent(numerator=numerator, denominator=resolved)
    return None


def simple_atoi(text: str, maximum: int) -> int | None:
    """absl's ``SimpleAtoi`` into an unsigned type with ``maximum``: surrounding ASCII whitespace and a '+'
    allowed, decimal digits only, no overflow; None when it does not parse."""
    s = text.strip(" \t\n\v\f\r")
    if s.startswith("+"):
        s = s[1:]
    if not s or not s.isascii() or not s.isdigit():
        return None
    value = int(s)
    return value if value <= maximum else None
