"""Reading Istio resources as plain dicts (camelCase, as written in YAML): fields, durations, percents.

Every reader takes the field path it is at, so an unsupported or malformed value is reported as
``TranslationError(path, reason)``. Inputs are assumed to be valid Istio (the store validates them); the
checks here are only what translation needs to never crash.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from mesh_ctl.translate.errors import TranslationError

Json = dict[str, Any]
NOT_SUPPORTED = "not supported by minimesh"

# Go's time.ParseDuration units, which Istio's duration fields use in YAML ("1.5s", "100ms", "1m30s").
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class _AnyKey(frozenset[str]):
    """A ``supported`` set that contains every key (for label and header maps)."""

    def __contains__(self, item: object) -> bool:
        return True


ANY_KEY: frozenset[str] = _AnyKey()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def obj(value: object, path: str, supported: Collection[str], reasons: Mapping[str, str] | None = None,
        ) -> Mapping[str, Any]:
    """``value`` as a mapping whose keys are all in ``supported``; None values count as absent."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TranslationError(path, f"expected an object, got {type(value).__name__}")
    for key, v in value.items():
        if v is None:
            continue
        if key not in supported:
            raise TranslationError(join(path, str(key)), (reasons or {}).get(str(key), NOT_SUPPORTED))
    return {k: v for k, v in value.items() if v is not None}


def array(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError(path, f"expected a list, got {type(value).__name__}")
    return value


def string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(path, f"expected a string, got {type(value).__name__}")
    return value


def integer(value: object, path: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():  # Kubernetes int-or-string
            value = int(value)
        else:
            raise TranslationError(path, f"expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise TranslationError(path, f"must be in [{lo}, {hi}] (got {value})")
    return value


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise TranslationError(path, f"expected true or false, got {value!r}")
    return value


def duration(value: object, path: str) -> float:
    """An Istio duration (``"1.5s"``, ``"100ms"``, ``"1m30s"``; a number means seconds) in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value:
        text = value.strip()
        if text == "0":
            return 0.0
        pos, seconds = 0, 0.0
        while pos < len(text):
            m = _PART.match(text, pos)
            if m is None:
                raise TranslationError(path, f"{value!r} is not a duration (e.g. 1.5s, 100ms, 1m30s)")
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
    else:
        raise TranslationError(path, f"{value!r} is not a duration (e.g. 1.5s, 100ms, 1m30s)")
    if seconds < 0:
        raise TranslationError(path, "must not be negative")
    return seconds


def proto_duration(seconds: float) -> str:
    """Seconds as a protobuf JSON Duration (``"1.500s"``), exact to the nanosecond."""
    nanos = round(seconds * 1e9)
    whole, frac = divmod(nanos, 1_000_000_000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:09d}".rstrip("0") + "s"


def percent(value: object, path: str) -> float:
    """An Istio ``Percent`` (``{value: 12.5}``) in [0, 100]."""
    p = obj(value, path, {"value"})
    v = p.get("value", 0.0)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TranslationError(join(path, "value"), f"expected a number, got {v!r}")
    if not 0 <= v <= 100:
        raise TranslationError(join(path, "value"), f"must be in [0, 100] (got {v})")
    return float(v)


def wrapped_int(value: object, path: str) -> int | None:
    """A ``google.protobuf.*Int*Value`` written in YAML (a bare number; ``{value: n}`` also accepted)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return integer(obj(value, path, {"value"}).get("value", 0), join(path, "value"))
    return integer(value, path)


def wrapped_bool(value: object, path: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return boolean(obj(value, path, {"value"}).get("value", False), join(path, "value"))
    return boolean(value, path)


def source_bind_config(address: str) -> Json:
    """``upstream_bind_config`` making a sidecar's upstream connections come from its workload's address (its
    "pod IP"): on loopback the kernel would otherwise pick 127.0.0.1 for every workload, and the callee's
    metrics, access logs and AuthorizationPolicy ``ipBlocks`` would not see who is calling."""
    return {"source_address": {"address": address, "port_value": 0}}
