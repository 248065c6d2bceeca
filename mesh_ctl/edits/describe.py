"""Istio policy blocks in words, for the verbs' before/after tables (``abort UNAVAILABLE 30%``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mesh_ctl.translate.retry import DEFAULT_NUM_RETRIES

NONE = "-"
# outlierDetection fields the outlier verb writes, with Istio's default (shown when the block leaves one out)
OUTLIER_DEFAULTS = {"consecutiveGatewayErrors": "off", "consecutive5xxErrors": "5", "interval": "10s",
                    "baseEjectionTime": "30s", "maxEjectionPercent": "10%"}
DEFAULT_LB = "LEAST_REQUEST"


def _brief(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "), sort_keys=True)


def _share(block: Mapping[str, Any]) -> str:
    if isinstance(block.get("percentage"), Mapping):
        return f"{float(block['percentage'].get('value', 0)):g}%"
    if "percent" in block:
        return f"{block['percent']}%"
    return "0% (no percentage)"


def fault(block: Mapping[str, Any] | None) -> str:
    """``delay 200ms 10%, abort UNAVAILABLE 30%``; ``-`` for none."""
    if block is None:
        return NONE
    parts = []
    delay, abort = block.get("delay"), block.get("abort")
    if isinstance(delay, Mapping):
        parts.append(f"delay {delay.get('fixedDelay', '?')} {_share(delay)}")
    if isinstance(abort, Mapping):
        status = abort.get("grpcStatus") or (f"HTTP {abort['httpStatus']}" if "httpStatus" in abort else "?")
        parts.append(f"abort {status} {_share(abort)}")
    return ", ".join(parts) or "(empty: injects nothing)"


def retries(block: Mapping[str, Any] | None) -> str:
    """``3 retries on unavailable, 200ms per try``; Istio's default policy when there is no block."""
    if block is None:
        return f"Istio's default ({DEFAULT_NUM_RETRIES} retries)"
    n = int(block.get("attempts") or 0)
    if n == 0:
        return "off (attempts: 0)"
    text = f"{n} {'retry' if n == 1 else 'retries'} on {block.get('retryOn') or 'the default conditions'}"
    if block.get("perTryTimeout"):
        text += f", {block['perTryTimeout']} per try"
    extra = {k: v for k, v in block.items() if k not in ("attempts", "retryOn", "perTryTimeout")}
    return text + "".join(f", {k}: {_brief(v)}" for k, v in extra.items())


ROUTE_BLOCKS = {"fault": fault, "retries": retries}


def policy_rows(field: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[list[str]]:
    """``[FIELD, BEFORE, AFTER]`` rows for a DestinationRule ``trafficPolicy`` block."""
    if field == "loadBalancer":
        def simple(block: Mapping[str, Any] | None) -> str:
            return str(block["simple"]) if block and "simple" in block else f"default ({DEFAULT_LB})"

        rows = [["trafficPolicy.loadBalancer.simple", simple(before), simple(after)]]
        known: tuple[str, ...] = ("simple",)
    else:
        def on(block: Mapping[str, Any] | None) -> str:
            return "on" if block is not None else "off"

        def value(block: Mapping[str, Any] | None, key: str) -> str:
            if block is None:
                return NONE
            if key not in block:
                return f"default ({OUTLIER_DEFAULTS[key]})"
            return f"{block[key]}%" if key == "maxEjectionPercent" else str(block[key])

        rows = [[f"trafficPolicy.{field}", on(before), on(after)]]
        rows += [[f"  {key}", value(before, key), value(after, key)] for key in OUTLIER_DEFAULTS]
        known = tuple(OUTLIER_DEFAULTS)
    extra = dict.fromkeys(k for block in (before, after) for k in (block or {}) if k not in known)
    for key in extra:
        rows.append([f"  {key}" if field != "loadBalancer" else f"trafficPolicy.loadBalancer.{key}",
                     _brief((before or {}).get(key, NONE)), _brief((after or {}).get(key, NONE))])
    return rows
