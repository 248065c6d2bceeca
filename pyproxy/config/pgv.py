"""The ``protoc-gen-validate`` constraints Envoy checks on every config message, evaluated in Python.

Envoy runs ``MessageUtil::validate`` on its bootstrap and on every ``typed_config`` before using it; the
rules are annotations on the API protos (``(validate.rules).string = {min_len: 1}``, ``uint32 = {gte: 1}``,
``message.required``, required oneofs, ``enum.defined_only``...). ``ParseDict`` ignores them, so this module
reads the same annotations from the descriptors and reports each violation with its field path. Supported:
numeric/duration bounds, ``const``/``in``/``not_in``, string and bytes lengths, prefix/suffix/contains,
HTTP header name/value and IP well-known formats, enum ``defined_only``, required messages and oneofs,
repeated/map item counts and per-item rules, ``Any`` (unpacked and validated too). Rules it does not
evaluate (``pattern``, timestamps, ``uri``...) are skipped: the translator checks what pyproxy uses.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from validate import validate_pb2

from pyproxy.config.errors import Problems, join
from pyproxy.config.protojson import resolve_type

_HEADER_NAME_STRICT = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE_STRICT = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_HEADER_LOOSE = re.compile(r"^[^\x00\n\r]*$")
_NO_RULES = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")
_WRAPPERS = {
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}


def _seconds(d: Any) -> float:
    return float(d.seconds) + float(d.nanos) / 1e9


def _fmt_seconds(s: float) -> str:
    return f"{s:g}s"


def _field_rules(field: Any) -> Any:
    opts = field.GetOptions()
    if opts.HasExtension(validate_pb2.rules):
        return opts.Extensions[validate_pb2.rules]
    return None


def _numeric(
    value: float, rules: Any, path: str, problems: Problems, fmt: Callable[[float], str] = str
) -> None:
    if rules.HasField("const") and value != rules.const:
        problems.add(path, f"must be {fmt(rules.const)}")
    if rules.HasField("gt") and not value > rules.gt:
        problems.add(path, f"must be greater than {fmt(rules.gt)}")
    if rules.HasField("gte") and not value >= rules.gte:
        problems.add(path, f"must be at least {fmt(rules.gte)}")
    if rules.HasField("lt") and not value < rules.lt:
        problems.add(path, f"must be less than {fmt(rules.lt)}")
    if rules.HasField("lte") and not value <= rules.lte:
        problems.add(path, f"must be at most {fmt(rules.lte)}")
    allowed = getattr(rules, "in")
    if len(allowed) and value not in allowed:
        problems.add(path, f"must be one of {[fmt(v) for v in allowed]}")
    if len(rules.not_in) and value in rules.not_in:
        problems.add(path, f"must not be {fmt(value)}")


def _string(value: str, rules: Any, path: str, problems: Problems) -> None:
    if rules.ignore_empty and not value:
        return
    n = len(value)
    nbytes = len(value.encode())
    if rules.HasField("const") and value != rules.const:
        problems.add(path, f"must be {rules.const!r}")
    if rules.HasField("len") and n != rules.len:
        problems.add(path, f"must be exactly {rules.len} characters long")
    if rules.HasField("min_len") and n < rules.min_len:
        problems.add(
            path,
            "must not be empty"
            if rules.min_len == 1
            else f"must be at least {rules.min_len} characters long",
        )
    if rules.HasField("max_len") and n > rules.max_len:
        problems.add(path, f"must be at most {rules.max_len} characters long")
    if rules.HasField("min_bytes") and nbytes < rules.min_bytes:
        problems.add(
            path,
            "must not be empty" if rules.min_bytes == 1 else f"must be at least {rules.min_bytes} bytes long",
        )
    if rules.HasField("max_bytes") and nbytes > rules.max_bytes:
        problems.add(path, f"must be at most {rules.max_bytes} bytes long")
    if rules.HasField("prefix") and not value.startswith(rules.prefix):
        problems.add(path, f"must start with {rules.prefix!r}")
    if rules.HasField("suffix") and not value.endswith(rules.suffix):
        problems.add(path, f"must end with {rules.suffix!r}")
    if rules.HasField("contains") and rules.contains not in value:
        problems.add(path, f"must contain {rules.contains!r}")
    if rules.HasField("not_contains") and rules.not_contains in value:
        problems.add(path, f"must not contain {rules.not_contains!r}")
    allowed = getattr(rules, "in")
    if len(allowed) and value not in allowed:
        problems.add(path, f"must be one of {list(allowed)}")
    if len(rules.not_in) and value in rules.not_in:
        problems.add(path, f"must not be {value!r}")
    kind = rules.WhichOneof("well_known")
    if kind == "well_known_regex":
        strict = rules.strict if rules.HasField("strict") else True
        if rules.well_known_regex == validate_pb2.HTTP_HEADER_NAME:
            pattern = _HEADER_NAME_STRICT if strict else _HEADER_LOOSE
            if not pattern.match(value):
                problems.add(path, f"{value!r} is not a valid HTTP header name")
        elif rules.well_known_regex == validate_pb2.HTTP_HEADER_VALUE:
            pattern = _HEADER_VALUE_STRICT if strict else _HEADER_LOOSE
            if not pattern.match(value):
                problems.add(path, "is not a valid HTTP header value (control characters)")
    elif kind in ("ip", "ipv4", "ipv6") and getattr(rules, kind):
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            problems.add(path, f"{value!r} is not an IP address")
        else:
            if (kind == "ipv4" and addr.version != 4) or (kind == "ipv6" and addr.version != 6):
                problems.add(path, f"{value!r} is not an {kind.upper()} address")


def _enum(value: int, field: Any, rules: Any, path: str, problems: Problems) -> None:
    enum = field.enum_type
    if rules.defined_only and value not in enum.values_by_number:
        problems.add(path, f"{value} is not a defined value of {enum.name}")
        return
    name = enum.values_by_number[value].name if value in enum.values_by_number else str(value)
    if rules.HasField("const") and value != rules.const:
        problems.add(path, f"must be {enum.values_by_number[rules.const].name}")
    allowed = getattr(rules, "in")
    if len(allowed) and value not in allowed:
        problems.add(path, f"must be one of {', '.join(enum.values_by_number[v].name for v in allowed)}")
    if len(rules.not_in) and value in rules.not_in:
        problems.add(path, f"{name} is not allowed here")


def _scalar(value: Any, field: Any, rules: Any, path: str, problems: Problems) -> None:
    kind = rules.WhichOneof("type")
    if kind is None:
        return
    sub = getattr(rules, kind)
    if kind == "string":
        _string(value, sub, path, problems)
    elif kind == "bytes":
        if sub.HasField("min_len") and len(value) < sub.min_len:
            problems.add(
                path, "must not be empty" if sub.min_len == 1 else f"must be at least {sub.min_len} bytes"
            )
        if sub.HasField("max_len") and len(value) > sub.max_len:
            problems.add(path, f"must be at most {sub.max_len} bytes")
    elif kind == "enum":
        _enum(value, field, sub, path, problems)
    elif kind == "bool":
        if sub.HasField("const") and value != sub.const:
            problems.add(path, f"must be {str(sub.const).lower()}")
    elif kind in (
        "float",
        "double",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
    ):
        if sub.ignore_empty and not value:
            return
        _numeric(value, sub, path, problems)


def _message_field(msg: Message, field: Any, rules: Any, path: str, problems: Problems) -> None:
    present = msg.HasField(field.name)
    kind = rules.WhichOneof("type") if rules is not None else None
    required = rules is not None and rules.HasField("message") and rules.message.required
    full = field.message_type.full_name
    if kind == "duration":
        required = required or rules.duration.required
    elif kind == "any":
        required = required or rules.any.required
    elif kind == "timestamp":
        required = required or rules.timestamp.required
    if not present:
        if required:
            problems.add(path, "is required")
        return
    if rules is not None and rules.HasField("message") and rules.message.skip:
        return
    value = getattr(msg, field.name)
    if kind == "duration":
        _duration(value, rules.duration, path, problems)
        return
    if kind == "any":
        allowed = getattr(rules.any, "in")
        if len(allowed) and value.type_url not in allowed:
            problems.add(path, f"type {value.type_url!r} is not allowed here")
    if full in _WRAPPERS:
        if rules is not None and kind not in (None, "duration", "any", "timestamp"):
            _scalar(value.value, field.message_type.fields_by_name["value"], rules, path, problems)
        return
    validate_message(value, path, problems)


def _unpack_any(value: Any, path: str, problems: Problems) -> Message | None:
    desc = resolve_type(value.type_url)
    if desc is None:
        return None
    inner: Message = message_factory.GetMessageClass(desc)()
    try:
        return inner if value.Unpack(inner) else None
    except DecodeError:  # Envoy: "Unable to unpack as <type>"
        problems.add(path, f"the value cannot be decoded as {desc.full_name}")
        return None


_Plan = tuple[bool, tuple[tuple[str, str], ...], tuple[tuple[Any, Any, str | None], ...]]
_plans: dict[str, _Plan] = {}


def _plan(desc: Any) -> _Plan:
    """What to check on messages of type ``desc``, read from the descriptor once (the xDS client validates
    every pushed resource): (validation disabled, required oneofs (name, choices), fields to visit in order
    as (field, rules, containing oneof)). Scalar fields without rules need no visit and are left out."""
    plan = _plans.get(desc.full_name)
    if plan is not None:
        return plan
    mopts = desc.GetOptions()
    disabled = bool(mopts.HasExtension(validate_pb2.disabled) and mopts.Extensions[validate_pb2.disabled])
    oneofs = []
    for oneof in desc.oneofs:
        oopts = oneof.GetOptions()
        if oopts.HasExtension(validate_pb2.required) and oopts.Extensions[validate_pb2.required]:
            oneofs.append((oneof.name, ", ".join(f.name for f in oneof.fields)))
    fields = []
    for field in desc.fields:
        rules = _field_rules(field)
        if rules is None and field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        oneof_name = field.containing_oneof.name if field.containing_oneof is not None else None
        fields.append((field, rules, oneof_name))
    plan = _plans[desc.full_name] = (disabled, tuple(oneofs), tuple(fields))
    return plan


def validate_message(msg: Message, path: str, problems: Problems) -> None:
    """Check ``msg`` (recursively) against its ``protoc-gen-validate`` annotations."""
    desc: Any = msg.DESCRIPTOR
    full = desc.full_name
    if full in _NO_RULES:
        return
    if full == "google.protobuf.Any":
        inner = _unpack_any(msg, path, problems)
        if inner is not None:
            validate_message(inner, path, problems)
        return
    disabled, oneofs, fields = _plan(desc)
    if disabled:
        return
    for name, choices in oneofs:
        if msg.WhichOneof(name) is None:
            problems.add(path, f"one of {choices} is required")
    for field, rules, oneof_name in fields:
        if field.is_repeated:
            _repeated(msg, field, rules, join(path, field.name), problems)
            continue
        if oneof_name is not None and msg.WhichOneof(oneof_name) != field.name:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if rules is None and not msg.HasField(field.name):
                continue  # nothing to check in an absent message that is not required
            _message_field(msg, field, rules, join(path, field.name), problems)
        else:
            if field.has_presence and not msg.HasField(field.name):
                continue
            _scalar(getattr(msg, field.name), field, rules, join(path, field.name), problems)


def _repeated(msg: Message, field: Any, rules: Any, path: str, problems: Problems) -> None:
    values = getattr(msg, field.name)
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    kind = rules.WhichOneof("type") if rules is not None else None
    item_rules = None
    if kind == "repeated":
        r = rules.repeated
        if not (r.ignore_empty and not len(values)):
            if r.HasField("min_items") and len(values) < r.min_items:
                problems.add(
                    path,
                    "must not be empty" if r.min_items == 1 else f"must have at least {r.min_items} items",
                )
            if r.HasField("max_items") and len(values) > r.max_items:
                problems.add(path, f"must have at most {r.max_items} items")
            if r.unique and not is_map and field.type != FieldDescriptor.TYPE_MESSAGE:
                seen: set[object] = set()
                for i, v in enumerate(values):
                    if v in seen:
                        problems.add(f"{path}[{i}]", f"duplicate value {v!r}")
                    seen.add(v)
        if r.HasField("items"):
            item_rules = r.items
    elif kind == "map":
        r = rules.map
        if r.HasField("min_pairs") and len(values) < r.min_pairs:
            problems.add(
                path, "must not be empty" if r.min_pairs == 1 else f"must have at least {r.min_pairs} entries"
            )
        if r.HasField("max_pairs") and len(values) > r.max_pairs:
            problems.add(path, f"must have at most {r.max_pairs} entries")
    if is_map:
        value_field = field.message_type.fields_by_name["value"]
        for key in values:
            ipath = f'{path}["{key}"]'
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                validate_message(values[key], ipath, problems)
        return
    for i, v in enumerate(values):
        ipath = f"{path}[{i}]"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if item_rules is not None and item_rules.WhichOneof("type") == "duration":
                _duration(v, item_rules.duration, ipath, problems)
            elif field.message_type.full_name in _WRAPPERS:
                if item_rules is not None:
                    _scalar(v.value, field.message_type.fields_by_name["value"], item_rules, ipath, problems)
            else:
                validate_message(v, ipath, problems)
        elif item_rules is not None:
            _scalar(v, field, item_rules, ipath, problems)


_DURATION_BOUNDS = (
    ("gt", operator.gt, "greater than"),
    ("gte", operator.ge, "at least"),
    ("lt", operator.lt, "less than"),
    ("lte", operator.le, "at most"),
)


def _duration(value: Any, rules: Any, path: str, problems: Problems) -> None:
    secs = _seconds(value)
    for name, holds, words in _DURATION_BOUNDS:
        if rules.HasField(name):
            bound = _seconds(getattr(rules, name))
            if not holds(secs, bound):
                problems.add(path, f"must be {words} {_fmt_seconds(bound)}")
