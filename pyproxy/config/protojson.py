"""JSON/YAML data -> protobuf message, the way Envoy loads its bootstrap, with every problem's field path.

``google.protobuf.json_format.ParseDict`` stops at the first problem and its messages name paths
inconsistently, so :func:`parse_message` first walks the data against the message descriptors and reports
every unknown field, wrong value type, unknown enum value and unresolvable ``@type`` at once. Like Envoy
(``MessageUtil::loadFromJson`` sets ``case_insensitive_enum_parsing``) enum names are matched
case-insensitively, so ``type: strict_dns`` works. Only then does ``ParseDict`` build the message.

``typed_config`` ``@type`` URLs are resolved against the default descriptor pool; an Envoy/xDS type not yet
imported is imported on demand from the ``xds-protos`` package, so a config using an extension pyproxy does
not support still *parses* (typos in it are reported) and is then rejected by name in translation.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import importlib
import importlib.util
import os
import re
from typing import Any, TypeVar

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from pyproxy.config.errors import ConfigError, Problems, join

_IMPORT_ROOTS = ("envoy.", "xds.", "udpa.", "validate.", "google.protobuf.")
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_V2_API = re.compile(r"^envoy\.(api\.v2|config\.[a-z_.]*v2(alpha)?|service\.[a-z_.]*v2)\.")
_DURATION = re.compile(r"^-?\d+(\.\d{0,9})?s$")
_tried_packages: set[str] = set()
M = TypeVar("M", bound=Message)

# Well-known types whose JSON form is not an object with their fields.
_SCALAR_WRAPPERS = {
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
_SPECIAL_JSON = _SCALAR_WRAPPERS | {
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


def type_name_of(type_url: str) -> str:
    """``type.googleapis.com/a.b.C`` -> ``a.b.C``."""
    return type_url.rsplit("/", 1)[-1]


def _import_package(package: str) -> bool:
    """Import every ``*_pb2`` module of ``package`` (once); True if the package exists."""
    if package in _tried_packages:
        return False
    _tried_packages.add(package)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        try:
            names = sorted(os.listdir(location))
        except OSError:
            continue
        for name in names:
            if name.endswith("_pb2.py"):
                try:
                    importlib.import_module(f"{package}.{name[:-3]}")
                except Exception:  # a broken optional module must not stop config loading
                    continue
    return True


def resolve_type(type_url: str) -> Any | None:
    """The descriptor for an ``Any`` type URL, importing its xds-protos module if needed; None if unknown."""
    name = type_name_of(type_url)
    pool = descriptor_pool.Default()
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        pass
    if not _DOTTED_NAME.match(name) or not name.startswith(_IMPORT_ROOTS):
        return None
    parts = name.split(".")
    for i in range(len(parts) - 1, 1, -1):
        if _import_package(".".join(parts[:i])):
            break
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        return None


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _ShapeChecker:
    """Walks JSON-like data against a descriptor; normalises enum case in place; records problems."""

    def __init__(self, problems: Problems, allow_unknown: bool = False) -> None:
        self.problems = problems
        self.allow_unknown = allow_unknown
        self.ignored: list[str] = []  # paths of unknown fields dropped (allow_unknown)

    def message(self, value: Any, desc: Any, path: str) -> Any:
        full = desc.full_name
        if full in _SPECIAL_JSON:
            return self._well_known(value, desc, path)
        if not isinstance(value, dict):
            self.problems.add(path, f"expected a mapping ({desc.name}), got {_describe(value)}")
            return value
        by_json = {f.json_name: f for f in desc.fields}
        seen_fields: dict[str, str] = {}
        seen_oneofs: dict[str, str] = {}
        for key in list(value):
            child = join(path, str(key))
            # Field names are ASCII; upb raises SystemError for a key with a lone surrogate ("\ud800").
            field = desc.fields_by_name.get(key) if isinstance(key, str) and key.isascii() else None
            if field is None and isinstance(key, str):
                field = by_json.get(key)
            if field is None:
                if self.allow_unknown:  # Envoy's --allow-unknown-static-fields: drop it, warn
                    self.ignored.append(child)
                    del value[key]
                else:
                    self.problems.add(child, self._unknown_field(key, desc))
                continue
            if field.name in seen_fields:
                self.problems.add(child, f"set twice (also as {seen_fields[field.name]!r})")
                continue
            seen_fields[field.name] = str(key)
            item = value[key]
            if item is None:
                continue  # null means "not set", as in ParseDict
            oneof = field.containing_oneof
            if oneof is not None:
                if oneof.name in seen_oneofs:
                    self.problems.add(
                        child,
                        f"only one of {', '.join(f.name for f in oneof.fields)} may be set "
                        f"(already set: {seen_oneofs[oneof.name]})",
                    )
                    continue
                seen_oneofs[oneof.name] = field.name
            value[key] = self.field(item, field, child)
        return value

    @staticmethod
    def _unknown_field(key: object, desc: Any) -> str:
        names = [f.name for f in desc.fields]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field: {desc.full_name} has no field {key!r}{hint}"

    def field(self, value: Any, field: Any, path: str) -> Any:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                self.problems.add(path, f"expected a mapping, got {_describe(value)}")
                return value
            value_field = field.message_type.fields_by_name["value"]
            for k in list(value):
                if value[k] is not None:
                    value[k] = self.single(value[k], value_field, f'{path}["{k}"]')
            return value
        if field.is_repeated:
            if not isinstance(value, list):
                self.problems.add(path, f"expected a list, got {_describe(value)}")
                return value
            for i, item in enumerate(value):
                value[i] = self.single(item, field, f"{path}[{i}]")
            return value
        return self.single(value, field, path)

    def single(self, value: Any, field: Any, path: str) -> Any:
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            return self.message(value, field.message_type, path)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self._enum(value, field, path)
        return self.scalar(value, field.type, path)

    def _enum(self, value: Any, field: Any, path: str) -> Any:
        enum = field.enum_type
        if enum.full_name == "google.protobuf.NullValue":
            return value
        names = enum.values_by_name
        if isinstance(value, str):
            if value in names:
                return value
            if value.upper() in names:
                return value.upper()
            self.problems.add(
                path,
                f"unknown value {value!r} (expected one of {', '.join(v.name for v in enum.values)})",
            )
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.problems.add(path, f"expected an enum name of {enum.name}, got {_describe(value)}")
        return value

    def scalar(self, value: Any, ftype: int, path: str) -> Any:
        if ftype == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                self.problems.add(path, f"expected true or false, got {_describe(value)}")
        elif ftype in _INT_RANGES:
            lo, hi = _INT_RANGES[ftype]
            number: int | None = None
            if isinstance(value, bool):
                number = None
            elif isinstance(value, int):
                number = value
            elif isinstance(value, float) and value.is_integer():
                number = int(value)
            elif isinstance(value, str):
                try:
                    number = int(value)  # JSON integers in strings are decimal, as protobuf parses them
                except ValueError:
                    number = None
            if number is None:
                self.problems.add(path, f"expected an integer, got {_describe(value)}")
            elif not lo <= number <= hi:
                self.problems.add(path, f"{number} is out of range [{lo}, {hi}]")
        elif ftype in _FLOAT_TYPES:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if isinstance(value, str):
                try:
                    float(value)
                    ok = True
                except ValueError:
                    ok = False
            if not ok:
                self.problems.add(path, f"expected a number, got {_describe(value)}")
        elif ftype == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                self.problems.add(path, f"expected a string, got {_describe(value)} (quote it in YAML)")
        elif ftype == FieldDescriptor.TYPE_BYTES:
            if not isinstance(value, str):
                self.problems.add(path, f"expected base64 text, got {_describe(value)}")
            else:
                try:
                    base64.b64decode(
                        value + "=" * (-len(value) % 4),
                        altchars=b"-_" if "-" in value or "_" in value else None,
                        validate=True,
                    )
                except (binascii.Error, ValueError):
                    self.problems.add(path, "expected base64 text")
        return value

    def _well_known(self, value: Any, desc: Any, path: str) -> Any:
        full = desc.full_name
        if full == "google.protobuf.Any":
            return self._any(value, path)
        if full == "google.protobuf.Duration":
            if not isinstance(value, str) or not _DURATION.match(value):
                self.problems.add(path, f'expected a duration like "1.5s", got {_describe(value)}')
        elif full in ("google.protobuf.Timestamp", "google.protobuf.FieldMask"):
            if not isinstance(value, str):
                self.problems.add(path, f"expected a string, got {_describe(value)}")
        elif full == "google.protobuf.Struct":
            if not isinstance(value, dict):
                self.problems.add(path, f"expected a mapping, got {_describe(value)}")
        elif full == "google.protobuf.ListValue":
            if not isinstance(value, list):
                self.problems.add(path, f"expected a list, got {_describe(value)}")
        elif full in _SCALAR_WRAPPERS:
            return self.single(value, desc.fields_by_name["value"], path)
        return value

    def _any(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            self.problems.add(path, f'expected a mapping with "@type", got {_describe(value)}')
            return value
        type_url = value.get("@type")
        if not isinstance(type_url, str) or not type_url:
            self.problems.add(path, 'missing "@type"')
            return value
        name = type_name_of(type_url)
        if _V2_API.search(name):
            self.problems.add(
                join(path, "@type"), f"{name!r} is an Envoy v2 API type; Envoy dropped v2: use the v3 type"
            )
            return value
        desc = resolve_type(type_url)
        if desc is None:
            self.problems.add(join(path, "@type"), f"unknown type {name!r}")
            return value
        if desc.full_name in _SPECIAL_JSON:
            if "value" in value:
                value["value"] = self.message(value["value"], desc, join(path, "value"))
            return value
        body = {k: v for k, v in value.items() if k != "@type"}
        checked = self.message(body, desc, path)
        value.clear()
        value["@type"] = type_url
        value.update(checked)
        return value


def check_any_types(msg: Message, path: str, problems: Problems) -> None:
    """For a proto read from binary or text format: what :meth:`_Parser._any` checks in JSON, i.e. every
    ``Any`` names a known v3 type, and its value decodes as that type (recursively). Without this, an unknown or
    corrupt ``Any`` in a ``.pb``/``.pb_text`` bootstrap raised TypeError / DecodeError out of the loader."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Any":
        type_url: str = msg.type_url  # type: ignore[attr-defined]
        name = type_name_of(type_url)
        if _V2_API.search(name):
            problems.add(join(path, "@type"), f"{name!r} is an Envoy v2 API type; Envoy dropped v2: use the v3 type")
            return
        desc = resolve_type(type_url)
        if desc is None:
            problems.add(join(path, "@type"), f"unknown type {name!r}")
            return
        inner: Message = message_factory.GetMessageClass(desc)()
        try:
            msg.Unpack(inner)  # type: ignore[attr-defined]
        except DecodeError:
            problems.add(path, f"the value cannot be decoded as {name}")
            return
        check_any_types(inner, path, problems)
        return
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        fpath = join(path, field.name)
        entry: Any = field.message_type
        if entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    check_any_types(item, f"{fpath}[{key!r}]", problems)
        elif field.is_repeated:
            for i, item in enumerate(value):
                check_any_types(item, f"{fpath}[{i}]", problems)
        else:
            check_any_types(value, fpath, problems)


_PARSE_AT = re.compile(r' at "?([A-Za-z0-9_.\[\]"@-]+?)"?\.*$')


def _parse_error_problem(err: json_format.ParseError, root: str) -> tuple[str, str]:
    """Turn ParseDict's nested message into ``(path, reason)``."""
    text = str(err).split("\n", 1)[0].strip()
    chain = re.match(r"^(Failed to parse \w+ field: )+", text)
    reason = text[chain.end() :] if chain else text
    # Without an "at <path>" suffix the chain of field names is the best path there is (no list indexes).
    path = ".".join(re.findall(r"Failed to parse (\w+) field: ", chain.group(0))) if chain else ""
    m = _PARSE_AT.search(reason)
    if m:
        path = m.group(1)
        reason = reason[: m.start()]
        if path == root:
            path = ""
        elif path.startswith(root + "."):
            path = path[len(root) + 1 :]
    return path, reason.rstrip(". ") or text


def parse_message(data: object, message: M, problems: Problems | None = None, *,
                  ignored_unknown: list[str] | None = None) -> M:
    """Fill ``message`` from JSON-like ``data`` (a deep copy is taken; ``data`` is not changed).

    Unknown fields are problems, unless ``ignored_unknown`` is given (Envoy's ``--allow-unknown-static-fields``):
    then they are dropped and their paths appended to it. Raises :class:`ConfigError` listing every problem found.
    """
    own = problems if problems is not None else Problems()
    work = copy.deepcopy(data)
    checker = _ShapeChecker(own, allow_unknown=ignored_unknown is not None)
    checker.message(work, message.DESCRIPTOR, "")
    if ignored_unknown is not None:
        ignored_unknown.extend(checker.ignored)
    own.raise_if_any()
    try:
        json_format.ParseDict(work, message)  # type: ignore[arg-type]
    except json_format.ParseError as err:
        own.add(*_parse_error_problem(err, message.DESCRIPTOR.name))
        raise ConfigError(own) from None
    return message


__all__ = ["ConfigError", "parse_message", "resolve_type", "type_name_of"]
