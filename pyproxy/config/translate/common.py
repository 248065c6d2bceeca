"""Shared pieces of proto -> model translation: the context, the "never silently ignore" field check,
durations, addresses, string matchers, RE2 regexes, header mutations and metadata."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from pyproxy.config import model as m
from pyproxy.config.errors import Problems, join
from pyproxy.config.material import MaterialStore
from pyproxy.config.protojson import type_name_of

NOT_SUPPORTED = "field not supported by pyproxy"


@dataclass
class Ctx:
    """What every translation function needs: the problem collector and shared lookups."""

    problems: Problems
    material: MaterialStore
    secrets: Mapping[str, Any] = field(default_factory=dict)  # static_resources.secrets by name
    warnings: list[str] = field(default_factory=list)
    # (cluster name, field path) of every cluster a route refers to, for the consistency check.
    cluster_refs: list[tuple[str, str]] = field(default_factory=list)
    # Static runtime values (layered_runtime), e.g. upstream.base_retry_backoff_ms.
    runtime: Mapping[str, object] = field(default_factory=dict)
    # An ADS stream is configured, so ``ads: {}`` config sources (HCM ``rds``, EDS clusters, SDS secrets) can
    # be honoured. translate_bootstrap sets it from ``dynamic_resources.ads_config``; resources that arrive
    # over xDS are translated with it True (the default, for per-resource translation).
    ads: bool = True

    def add(self, path: str, reason: str) -> None:
        self.problems.add(path, reason)

    def check(
        self,
        msg: Message,
        path: str,
        supported: Collection[str],
        *,
        empty_ok: Collection[str] = (),
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        """Report every field set on ``msg`` that is not in ``supported``.

        ``empty_ok`` fields are accepted only while empty (``stats_config: {}``); ``reasons`` gives a
        specific message for a field instead of the generic one.
        """
        for fd, value in msg.ListFields():
            name = fd.name
            if name in supported:
                continue
            if name in empty_ok and isinstance(value, Message) and value.ByteSize() == 0:
                continue
            reason = (reasons or {}).get(name, NOT_SUPPORTED)
            self.add(join(path, name), reason)


# ------------------------------------------------------------------------------------------- scalars


def seconds(d: Any) -> float:
    """A ``google.protobuf.Duration`` in seconds."""
    return float(d.seconds) + float(d.nanos) / 1e9


def opt_seconds(msg: Any, name: str, default: float | None, *, zero_disables: bool = True) -> float | None:
    """Duration field ``name`` of ``msg``: ``default`` when unset, None when 0 and ``zero_disables``."""
    if not msg.HasField(name):
        return default
    value = seconds(getattr(msg, name))
    if value == 0 and zero_disables:
        return None
    return value


def wrapped(msg: Any, name: str, default: Any) -> Any:
    """The value of a wrapper field (``UInt32Value``, ``BoolValue``...) or ``default`` when unset."""
    return getattr(msg, name).value if msg.HasField(name) else default


def enum_name(msg: Any, name: str) -> str:
    fd = msg.DESCRIPTOR.fields_by_name[name]
    number = getattr(msg, name)
    value = fd.enum_type.values_by_number.get(number)
    return value.name if value is not None else str(number)


def fractional_percent(fp: Any) -> float:
    """``envoy.type.v3.FractionalPercent`` as a fraction in [0, 1]."""
    denominators = {0: 100, 1: 10_000, 2: 1_000_000}
    return min(1.0, float(fp.numerator) / denominators.get(fp.denominator, 100))


def struct_to_python(struct: Any) -> dict[str, object]:
    value: dict[str, object] = json_format.MessageToDict(struct)
    return value


def typed_name(any_msg: Any) -> str:
    return type_name_of(any_msg.type_url)


def unpack(any_msg: Any, cls: type[Any]) -> Any:
    """``any_msg`` as a ``cls``; empty if it holds another type, or bytes that do not decode (which
    :func:`~pyproxy.config.pgv.validate_message` reports: translation goes on to report the rest)."""
    inner = cls()
    try:
        any_msg.Unpack(inner)
    except DecodeError:
        pass
    return inner


# ------------------------------------------------------------------------------------------- addresses


def socket_address(
    ctx: Ctx, address: Any, path: str, *, require_ip: bool, allow_port_zero: bool, what: str
) -> tuple[m.SocketAddress | None, bool]:
    """``envoy.config.core.v3.Address`` -> SocketAddress (and its ``ipv4_compat``); None on error."""
    kind = address.WhichOneof("address")
    if kind is None:
        ctx.add(path, f"{what} address is required")
        return None, False
    if kind != "socket_address":
        ctx.add(join(path, kind), f"{kind} addresses are not supported by pyproxy (use socket_address)")
        return None, False
    sa = address.socket_address
    sp = join(path, "socket_address")
    ctx.check(
        sa,
        sp,
        {"protocol", "address", "port_value", "ipv4_compat"},
        reasons={
            "named_port": "named ports are not supported (use port_value)",
            "resolver_name": "custom resolvers are not supported",
        },
    )
    if sa.protocol != 0:
        ctx.add(join(sp, "protocol"), "only TCP is supported")
    host = sa.address
    if require_ip:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            ctx.add(
                join(sp, "address"), f"{host!r} is not an IP address ({what} addresses must be IP literals)"
            )
            return None, False
    elif not host:
        ctx.add(join(sp, "address"), "must not be empty")
        return None, False
    port = sa.port_value
    if port > 65535:
        return None, False  # reported by the protoc-gen-validate pass (port_value <= 65535)
    if port == 0 and not allow_port_zero:
        ctx.add(join(sp, "port_value"), f"a {what} needs a non-zero port")
        return None, False
    return m.SocketAddress(host=host, port=port), sa.ipv4_compat


# ------------------------------------------------------------------------------------------- data sources


def data_source(ctx: Ctx, ds: Any, path: str, what: str) -> tuple[bytes | None, str | None]:
    """``envoy.config.core.v3.DataSource`` -> (bytes, filename if it came from a file)."""
    ctx.check(ds, path, {"filename", "inline_string", "inline_bytes", "environment_variable"})
    kind = ds.WhichOneof("specifier")
    if kind is None:
        ctx.add(
            path, f"{what}: one of filename, inline_string, inline_bytes, environment_variable is required"
        )
        return None, None
    if kind == "filename":
        try:
            with open(ds.filename, "rb") as f:
                return f.read(), ds.filename
        except OSError as err:
            ctx.add(join(path, "filename"), f"cannot read {what} {ds.filename!r}: {err.strerror}")
            return None, None
        except ValueError:  # a NUL character: no such file can exist
            ctx.add(join(path, "filename"), f"cannot read {what} {ds.filename!r}: not a valid file name")
            return None, None
    if kind == "inline_string":
        return ds.inline_string.encode(), None
    if kind == "inline_bytes":
        return bytes(ds.inline_bytes), None
    value = os.environ.get(ds.environment_variable)
    if value is None:
        ctx.add(
            join(path, "environment_variable"), f"environment variable {ds.environment_variable!r} is not set"
        )
        return None, None
    return value.encode(), None


# ------------------------------------------------------------------------------------------- matchers


_COUNTED_REPEAT = re.compile(r"\{\d+(,\d*)?\}")


def _re2_incompatibility(pattern: str) -> str | None:
    """Python-only regex syntax that RE2 (Envoy's engine) rejects; None if there is none."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                return "backreferences are not supported by RE2"
            if nxt in ("p", "P") and pattern[i + 2 : i + 3] == "{":  # \p{Greek}: skip the class name
                end = pattern.find("}", i + 3)
                i = end + 1 if end != -1 else n
                continue
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 :]
            if rest.startswith(("=", "!", "<=", "<!")):
                return "lookaround assertions are not supported by RE2"
            if rest.startswith("P="):
                return "backreferences are not supported by RE2"
            if rest.startswith("("):
                return "conditional groups are not supported by RE2"
            if rest.startswith(">"):
                return "atomic groups are not supported by RE2"
            i += 2
            continue
        if c == "{":
            counted = _COUNTED_REPEAT.match(pattern, i)
            if counted is not None:
                i = counted.end()
                if pattern[i : i + 1] == "+":
                    return "possessive quantifiers are not supported by RE2"
                continue
        if c in "*+?" and pattern[i + 1 : i + 2] == "+":
            return "possessive quantifiers are not supported by RE2"
        i += 1
    return None


def compile_regex(ctx: Ctx, regex_matcher: Any, path: str) -> re.Pattern[str] | None:
    """``envoy.type.matcher.v3.RegexMatcher`` (RE2) -> compiled Python pattern (used with fullmatch)."""
    ctx.check(regex_matcher, path, {"google_re2", "regex"})
    if regex_matcher.HasField("google_re2"):
        ctx.check(
            regex_matcher.google_re2,
            join(path, "google_re2"),
            set(),
            reasons={"max_program_size": "max_program_size is not supported (Python re has no program size)"},
        )
    pattern = regex_matcher.regex
    problem = _re2_incompatibility(pattern)
    if problem:
        ctx.add(join(path, "regex"), f"{pattern!r}: {problem}")
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        ctx.add(join(path, "regex"), f"{pattern!r} cannot be compiled by Python's re: {err}")
        return None


def string_matcher(ctx: Ctx, sm: Any, path: str) -> m.StringMatcher | None:
    """``envoy.type.matcher.v3.StringMatcher`` -> model (value lower-cased when ignore_case)."""
    ctx.check(sm, path, {"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"})
    kind = sm.WhichOneof("match_pattern")
    if kind is None:
        return None  # reported by the protoc-gen-validate pass (oneof required)
    if kind == "custom":
        return None  # reported by ctx.check above
    if kind == "safe_regex":
        compiled = compile_regex(ctx, sm.safe_regex, join(path, "safe_regex"))
        if compiled is None:
            return None
        return m.StringMatcher(kind="regex", value=sm.safe_regex.regex, compiled=compiled)
    value = getattr(sm, kind)
    if sm.ignore_case:
        value = value.lower()
    return m.StringMatcher(kind=kind, value=value, ignore_case=sm.ignore_case)


def header_matcher(ctx: Ctx, hm: Any, path: str) -> m.HeaderMatcher | None:
    ctx.check(
        hm,
        path,
        {
            "name",
            "string_match",
            "present_match",
            "exact_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "safe_regex_match",
            "invert_match",
            "treat_missing_header_as_empty",
        },
        reasons={"range_match": "range_match is not supported"},
    )
    kind = hm.WhichOneof("header_match_specifier")
    sm: m.StringMatcher | None = None
    present = True  # no specifier at all: a presence match
    if kind == "present_match":
        present = hm.present_match
    elif kind == "string_match":
        sm = string_matcher(ctx, hm.string_match, join(path, "string_match"))
        if sm is None:
            return None
    elif kind == "safe_regex_match":
        regex = compile_regex(ctx, hm.safe_regex_match, join(path, "safe_regex_match"))
        if regex is None:
            return None
        sm = m.StringMatcher(kind="regex", value=regex.pattern, compiled=regex)
    elif kind == "exact_match":
        sm = m.StringMatcher(kind="exact", value=hm.exact_match)
    elif kind == "prefix_match":
        sm = m.StringMatcher(kind="prefix", value=hm.prefix_match)
    elif kind == "suffix_match":
        sm = m.StringMatcher(kind="suffix", value=hm.suffix_match)
    elif kind == "contains_match":
        sm = m.StringMatcher(kind="contains", value=hm.contains_match)
    elif kind is not None:
        return None  # range_match: reported above
    return m.HeaderMatcher(
        name=hm.name.lower(),
        string_match=sm,
        present_match=present,
        invert_match=hm.invert_match,
        treat_missing_header_as_empty=hm.treat_missing_header_as_empty,
    )


# ------------------------------------------------------------------------------------------- headers

_APPEND_ACTIONS = {0: True, 2: False}  # APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD
_FORBIDDEN_HEADER_REASON = "pseudo-headers (':...') and host cannot be modified by header mutations"


def _literal_header_value(value: str) -> tuple[str | None, str | None]:
    """Envoy treats ``%...%`` in header values as formatter commands; only ``%%`` (a literal %) is ours."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%":
            if value[i + 1 : i + 2] == "%":
                out.append("%")
                i += 2
                continue
            end = value.find("%", i + 1)
            if end == -1:
                return None, f"un-escaped '%' at position {i} (write %% for a literal %)"
            return None, (
                f"formatter command %{value[i + 1 : end]}% is not supported by pyproxy "
                "(only literal values; write %% for a literal %)"
            )
        out.append(c)
        i += 1
    return "".join(out), None


def header_value_option(ctx: Ctx, hvo: Any, path: str) -> m.HeaderValueOption | None:
    ctx.check(hvo, path, {"header", "append", "append_action", "keep_empty_value"})
    hp = join(path, "header")
    ctx.check(hvo.header, hp, {"key", "value", "raw_value"})
    key = hvo.header.key.lower()
    if key.startswith(":") or key == "host":
        ctx.add(join(hp, "key"), f"{key!r}: {_FORBIDDEN_HEADER_REASON}")
        return None
    if hvo.header.raw_value:
        try:
            raw = bytes(hvo.header.raw_value).decode()
        except UnicodeDecodeError:
            ctx.add(join(hp, "raw_value"), "must be UTF-8 text")
            return None
    else:
        raw = hvo.header.value
    literal, problem = _literal_header_value(raw)
    if literal is None:
        ctx.add(join(hp, "raw_value" if hvo.header.raw_value else "value"), problem or "invalid")
        return None
    if hvo.HasField("append"):
        if hvo.append_action != 0:
            ctx.add(join(path, "append"), "set either append (deprecated) or append_action, not both")
            return None
        append = hvo.append.value
    else:
        action = _APPEND_ACTIONS.get(hvo.append_action)
        if action is None:
            ctx.add(
                join(path, "append_action"),
                f"{enum_name(hvo, 'append_action')} is not supported "
                "(supported: APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD)",
            )
            return None
        append = action
    return m.HeaderValueOption(key=key, value=literal, append=append, keep_empty_value=hvo.keep_empty_value)


HEADER_MUTATION_FIELDS = (
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
)
PER_FILTER_REASON = "typed_per_filter_config is supported on virtual hosts and routes only"


def header_mutations(ctx: Ctx, msg: Any, path: str) -> tuple[m.HeaderMutation, m.HeaderMutation]:
    """The request and response header mutations of a route table, virtual host, route or weighted cluster."""
    return (
        header_mutation(ctx, msg, path, "request_headers_to_add", "request_headers_to_remove"),
        header_mutation(ctx, msg, path, "response_headers_to_add", "response_headers_to_remove"),
    )


def header_mutation(ctx: Ctx, msg: Any, path: str, add_field: str, remove_field: str) -> m.HeaderMutation:
    """``<x>_headers_to_add`` / ``<x>_headers_to_remove`` of ``msg`` -> HeaderMutation."""
    adds: list[m.HeaderValueOption] = []
    for i, hvo in enumerate(getattr(msg, add_field)):
        option = header_value_option(ctx, hvo, f"{join(path, add_field)}[{i}]")
        if option is not None:
            adds.append(option)
    removes: set[str] = set()
    for i, name in enumerate(getattr(msg, remove_field)):
        lname = name.lower()
        if lname.startswith(":") or lname == "host":
            ctx.add(f"{join(path, remove_field)}[{i}]", f"{lname!r}: {_FORBIDDEN_HEADER_REASON}")
            continue
        removes.add(lname)
    return m.HeaderMutation(add=tuple(adds), remove=frozenset(removes))


# ------------------------------------------------------------------------------------------- metadata


def flatten_metadata(ctx: Ctx, metadata: Any, path: str) -> tuple[tuple[str, str], ...]:
    """``envoy.config.core.v3.Metadata.filter_metadata`` -> (("ns.key", "value"), ...).

    String values stay as they are; anything else (numbers, lists, nested maps) becomes compact JSON. Keys are
    sorted: a Struct is a protobuf map, whose order on the wire is not defined, and the same metadata must give
    the same model (a cluster whose model differs is rebuilt and its connections drained).
    """
    ctx.check(metadata, path, {"filter_metadata"})
    out: list[tuple[str, str]] = []
    for namespace in sorted(metadata.filter_metadata):
        for key, value in sorted(struct_to_python(metadata.filter_metadata[namespace]).items()):
            text = (
                value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
            )
            out.append((f"{namespace}.{key}", text))
    return tuple(out)
