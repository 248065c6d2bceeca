"""Validate a document against a CRD's OpenAPI v3 schema, as ``kubectl apply --validate=strict`` would.

Covered: ``type`` (object, array, string, integer, number, boolean), ``enum``, ``format`` (int32, int64,
double, float, byte, date-time), ``minimum``/``maximum``, ``minLength``/``maxLength``/``pattern``,
``minItems``/``maxItems``, ``minProperties``/``maxProperties``, ``required``, ``properties`` with unknown
fields REJECTED, ``additionalProperties`` maps, ``x-kubernetes-preserve-unknown-fields``,
``x-kubernetes-int-or-string``, ``nullable`` (a null in a non-nullable field is pruned first, as the API
server does), ``oneOf``/``anyOf``/``allOf``/``not``, and ``x-kubernetes-validations`` through
:mod:`mesh_ctl.resources.cel`.

Problems are ``(path, reason)`` pairs; paths look like ``spec.http[0].match[0].headers[x-canary].exact``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Any

from mesh_ctl.resources import cel

Problem = tuple[str, str]
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def child(path: str, key: str) -> str:
    """``spec`` + ``hosts`` -> ``spec.hosts``."""
    return f"{path}.{key}" if path else key


def entry(path: str, key: str) -> str:
    """A map entry: ``headers`` + ``x-canary`` -> ``headers[x-canary]``."""
    return f"{path}[{key}]"


def _type_ok(value: Any, expected: str, schema: Mapping[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


@functools.lru_cache(maxsize=256)
def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(p)


def _check_scalar(value: Any, schema: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        out.append((path, f"unsupported value {value!r}: must be one of {', '.join(map(str, enum))}"))
        return
    fmt = schema.get("format")
    if isinstance(value, int) and not isinstance(value, bool):
        bounds = _INT32 if fmt == "int32" else _INT64 if fmt in ("int64", None) else None
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            out.append((path, f"must fit in {fmt or 'int64'} ({bounds[0]}..{bounds[1]}), got {value}"))
            return
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and value < lo:
            out.append((path, f"must be greater than or equal to {lo}, got {value}"))
        if hi is not None and value > hi:
            out.append((path, f"must be less than or equal to {hi}, got {value}"))
        return
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append((path, f"may not be longer than {schema['maxLength']} characters"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append((path, f"must be at least {schema['minLength']} characters long"))
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            out.append((path, f"must match the pattern {schema['pattern']!r}"))
        if fmt == "byte":
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                out.append((path, "must be base64-encoded bytes"))
        elif fmt == "date-time":
            try:
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                out.append((path, "must be an RFC 3339 date-time"))


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    # Only a typed object node prunes (so rejects) unknown fields; the bare {"required": [...]} nodes inside
    # oneOf/anyOf/not constrain, they do not declare fields.
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False) or "type" not in schema
    for key, item in value.items():
        sub = props.get(key)
        if sub is not None:
            if item is None and not sub.get("nullable"):
                continue  # pruned, like the API server does with nulls in non-nullable fields
            validate(item, sub, child(path, key), out)
        elif isinstance(extra, Mapping):
            validate(item, extra, entry(path, key), out)
        elif extra is True or preserve:
            continue
        else:
            shown = child(path, key) if _PLAIN_KEY.match(key) else entry(path, key)
            out.append((shown, "unknown field"))
    for key in schema.get("required", ()):
        if value.get(key) is None and not (key in value and props.get(key, {}).get("nullable")):
            out.append((child(path, key), "required field is missing"))
    n = len(value)
    if "maxProperties" in schema and n > schema["maxProperties"]:
        out.append((path, f"must have at most {schema['maxProperties']} entries"))
    if "minProperties" in schema and n < schema["minProperties"]:
        out.append((path, f"must have at least {schema['minProperties']} entries"))


def _present_required(alternatives: list[Any], value: Any) -> tuple[list[str], list[str]] | None:
    """For oneOf/anyOf of the shape Istio generates ([not anyOf required..], required a, required b..):
    (all named fields, the ones present). None when the shape is different."""
    names: list[str] = []
    for alt in alternatives:
        if set(alt) == {"required"}:
            names.extend(alt["required"])
        elif set(alt) == {"not"} and set(alt["not"]) == {"anyOf"}:
            continue
        else:
            return None
    present = [n for n in names if isinstance(value, dict) and n in value]
    return names, present


def _matches(value: Any, schema: Mapping[str, Any]) -> bool:
    scratch: list[Problem] = []
    validate(value, schema, "", scratch)
    return not scratch


def _check_combinators(value: Any, schema: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    one_of = schema.get("oneOf")
    if one_of is not None:
        n = sum(_matches(value, alt) for alt in one_of)
        if n != 1:
            shape = _present_required(one_of, value)
            if shape is not None and n > 1:
                names, present = shape
                out.append((path, f"at most one of {', '.join(names)} may be set (found {', '.join(present)})"))
            else:
                out.append((path, f"must match exactly one schema in oneOf (matched {n})"))
    any_of = schema.get("anyOf")
    if any_of is not None and not any(_matches(value, alt) for alt in any_of):
        shape = _present_required(any_of, value)
        wanted = ", ".join(shape[0]) if shape else "the anyOf schemas"
        out.append((path, f"must set one of {wanted}"))
    for sub in schema.get("allOf", ()):
        _check_combinators(value, sub, path, out)
    if "not" in schema and _matches(value, schema["not"]):
        out.append((path, "must not match the schema in 'not'"))


def _check_cel(value: Any, schema: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    for rule in schema.get("x-kubernetes-validations", ()):
        known = cel.lookup(rule.get("message", ""), rule.get("rule", ""))
        if known is None or known.holds(value):
            continue
        out.append((child(path, known.field) if known.field else path, rule["message"]))


def validate(value: Any, schema: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    """Append every problem of ``value`` against ``schema`` to ``out``."""
    if value is None:
        if not schema.get("nullable"):
            out.append((path, f"must be of type {schema.get('type', 'object')}, got null"))
        return
    expected = schema.get("type")
    if expected is not None and not _type_ok(value, expected, schema):
        out.append((path, f"must be of type {expected}, got {type_name(value)}"))
        return
    if isinstance(value, dict):
        _check_object(value, schema, path, out)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append((path, f"must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append((path, f"must have at least {schema['minItems']} items"))
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                validate(item, items, f"{path}[{i}]", out)
    else:
        _check_scalar(value, schema, path, out)
    if "oneOf" in schema or "anyOf" in schema or "allOf" in schema or "not" in schema:
        _check_combinators(value, schema, path, out)
    if "x-kubernetes-validations" in schema:
        _check_cel(value, schema, path, out)
