"""VirtualService match conditions -> Envoy ``RouteMatch`` (Istio's ``TranslateRouteMatch``).

``uri`` exact/prefix/regex -> ``path``/``prefix``/``safe_regex``; ``ignoreUriCase`` -> ``case_sensitive``
(always set, as Istio does); ``headers`` (sorted by name) and ``withoutHeaders`` (``invert_match``, plus
``treat_missing_header_as_empty`` unless it is a presence match) -> header matchers, ``{}`` or regex ``*``
meaning presence; then ``method``/``authority``/``scheme`` as ``:method``/``:authority``/``:scheme``
matchers. Regexes are RE2 in Envoy and Python ``re`` in pyproxy: what either refuses is refused here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.values import ANY_KEY, Json, join, obj, string

_STRING_MATCH = {"exact", "prefix", "regex"}
_JWT_CLAIM = "@request.auth.claims"
# Python `re` syntax that RE2 (Envoy's engine) refuses, which pyproxy therefore refuses too.
_NOT_RE2 = (
    (re.compile(r"\(\?[=!]|\(\?<[=!]"), "lookaround assertions are not supported by RE2"),
    (re.compile(r"\\[1-9]|\(\?P="), "backreferences are not supported by RE2"),
    (re.compile(r"\(\?>"), "atomic groups are not supported by RE2"),
    (re.compile(r"\(\?\("), "conditional groups are not supported by RE2"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers are not supported by RE2"),
)


def route_match(m: Mapping[str, Any] | None, path: str) -> Json:
    """Istio's ``TranslateRouteMatch``."""
    out: Json = {"prefix": "/"}
    if m is None:
        return out
    headers: list[Json] = []
    for key, field, invert in (("headers", "headers", False), ("withoutHeaders", "withoutHeaders", True)):
        hpath = join(path, field)
        for hname, sm in obj(m.get(key), hpath, ANY_KEY).items():
            name = str(hname)
            if name.startswith(_JWT_CLAIM):
                raise TranslationError(join(hpath, name), "matching on JWT claims is not supported "
                                       "(no request authentication in minimesh)")
            matcher = header_matcher(name, sm, join(hpath, name))
            if invert:
                matcher["invert_match"] = True
                if "present_match" not in matcher:
                    matcher["treat_missing_header_as_empty"] = True
            headers.append(matcher)
    headers.sort(key=lambda hm: str(hm["name"]))
    if "uri" in m:
        upath = join(path, "uri")
        kind, value = _string_match(m["uri"], upath)
        if kind == "exact":
            out = {"path": value}
        elif kind == "prefix":
            out = {"prefix": value}
        elif kind == "regex":
            out = {"safe_regex": {"regex": _regex(value, join(upath, "regex"))}}
    ignore_case = m.get("ignoreUriCase", False)
    if not isinstance(ignore_case, bool):
        raise TranslationError(join(path, "ignoreUriCase"), "expected true or false")
    out["case_sensitive"] = not ignore_case
    for field, header in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
        if field in m:
            headers.append(header_matcher(header, m[field], join(path, field)))
    if headers:
        out["headers"] = headers
    return out


def header_matcher(name: str, sm: object, path: str) -> Json:
    """Istio's ``translateHeaderMatch``: ``{}`` or regex ``*`` mean presence."""
    kind, value = _string_match(sm, path)
    if kind is None or (kind == "regex" and value == "*"):
        return {"name": name, "present_match": True}
    if kind == "regex":
        return {"name": name, "string_match": {"safe_regex": {"regex": _regex(value, join(path, "regex"))}}}
    return {"name": name, "string_match": {kind: value}}


def _string_match(sm: object, path: str) -> tuple[str | None, str]:
    d = obj(sm, path, _STRING_MATCH)
    if not d:
        return None, ""
    if len(d) > 1:
        raise TranslationError(path, "set exactly one of exact, prefix, regex")
    kind, value = next(iter(d.items()))
    return str(kind), string(value, join(path, str(kind)))


def _regex(pattern: str, path: str) -> str:
    for rx, reason in _NOT_RE2:
        if rx.search(pattern):
            raise TranslationError(path, f"{pattern!r}: {reason}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise TranslationError(path, f"{pattern!r} cannot be compiled: {e}") from None
    return pattern
