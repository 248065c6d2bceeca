"""What Grafana does with a dashboard's JSON, for tests that prove every panel's query without a Grafana.

* Walking: :func:`panels` yields every panel, those nested in collapsed rows included; :func:`queries` every
  target's ``expr``.
* Structure: :func:`structure_problems` (unique panel ids, a gridPos in 24 columns without overlaps, the
  provisioned datasource uid on every panel and target, every ``$variable`` defined or one of Grafana's own).
* Variables: :func:`variable_options` evaluates a query variable the way Grafana's Prometheus datasource does
  (``label_values(metric, label)`` through ``/api/v1/label/<label>/values?match[]=``, ``label_values(label)``,
  ``query_result(expr)`` rendered ``name{l="v"} value ts`` then cut by the variable's regex), and
  :func:`interpolate` replaces ``$var`` / ``${var}`` / ``[[var]]`` and the interval variables
  (``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 x scrape interval), Grafana's rule).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.promql import PrometheusAPI

GRID_COLUMNS = 24
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                               "__range_ms", "__name", "__dashboard", "__user", "__org", "timeFilter"})
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$", re.S)
_QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.+)\)$", re.S)


@dataclass(frozen=True, slots=True)
class Query:
    dashboard: str  # uid
    panel_id: int
    panel: str  # title
    ref: str  # refId
    expr: str


@dataclass(frozen=True, slots=True)
class Intervals:
    """Grafana's interval variables for a dashboard range, from ``$__interval`` and the scrape interval."""

    interval_s: float
    scrape_s: float
    range_s: float

    @property
    def rate_interval_s(self) -> float:
        return max(self.interval_s + self.scrape_s, 4 * self.scrape_s)

    def values(self) -> dict[str, str]:
        return {"__interval": _duration(self.interval_s), "__interval_ms": str(int(self.interval_s * 1000)),
                "__rate_interval": _duration(self.rate_interval_s), "__range": _duration(self.range_s),
                "__range_s": str(int(self.range_s)), "__range_ms": str(int(self.range_s * 1000))}


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds != int(seconds) else f"{int(seconds)}s"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in (collapsed) rows, in order."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p.get("type") != "row"]


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [Query(dashboard["uid"], p["id"], p["title"], t["refId"], t["expr"])
            for p in data_panels(dashboard) for t in p.get("targets", [])]


def variables_used(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def variable_query(variable: Mapping[str, Any]) -> str:
    q = variable.get("query", "")
    return str(q["query"] if isinstance(q, dict) else q)


def structure_problems(dashboard: Mapping[str, Any], datasource_uid: str) -> list[str]:
    """What is wrong with a dashboard's JSON (empty: nothing)."""
    where = dashboard.get("uid") or dashboard.get("title") or "?"
    problems = [f"{where}: no {k}" for k in ("uid", "title", "panels", "schemaVersion") if not dashboard.get(k)]
    defined = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
    if len(set(defined)) != len(defined):
        problems.append(f"{where}: variables defined twice: {defined}")
    ids: list[int] = []
    boxes: list[tuple[str, int, int, int, int]] = []
    for p in panels(dashboard):
        title = f"{where} panel {p.get('id')} {p.get('title')!r}"
        ids.append(p.get("id", -1))
        pos = p.get("gridPos", {})
        if not all(isinstance(pos.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append(f"{title}: gridPos {pos} needs integers h, w, x, y")
            continue
        if pos["w"] <= 0 or pos["h"] <= 0 or pos["x"] < 0 or pos["x"] + pos["w"] > GRID_COLUMNS:
            problems.append(f"{title}: gridPos {pos} is outside the {GRID_COLUMNS} columns")
        collapsed_child = any(p in r.get("panels", []) for r in dashboard["panels"] if r.get("collapsed"))
        if not collapsed_child:  # panels of a collapsed row are laid out when it opens
            boxes.append((title, pos["x"], pos["y"], pos["w"], pos["h"]))
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            problems.append(f"{title}: no targets")
        for source in [p.get("datasource"), *(t.get("datasource") for t in p.get("targets", []))]:
            if source != {"type": "prometheus", "uid": datasource_uid}:
                problems.append(f"{title}: datasource {source}, not the provisioned {datasource_uid!r}")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if len(set(refs)) != len(refs):
            problems.append(f"{title}: refIds {refs} repeat")
        for t in p.get("targets", []):
            if not t.get("expr"):
                problems.append(f"{title}: target {t.get('refId')} has no expr")
            text = json.dumps(t)
            for name in sorted(variables_used(text) - set(defined) - BUILTIN_VARIABLES):
                problems.append(f"{title}: ${name} is used and not defined")
        for name in sorted(variables_used(json.dumps([p.get("title"), p.get("description")])) - set(defined)
                           - BUILTIN_VARIABLES):
            problems.append(f"{title}: ${name} (in its title/description) is not defined")
    if len(set(ids)) != len(ids):
        problems.append(f"{where}: panel ids repeat: {sorted(ids)}")
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                problems.append(f"{a} overlaps {b}")
    for i, v in enumerate(dashboard.get("templating", {}).get("list", [])):
        earlier = set(defined[:i]) | BUILTIN_VARIABLES
        if v.get("type") == "query":
            if v.get("datasource", {}).get("uid") != datasource_uid:
                problems.append(f"{where} variable {v.get('name')}: datasource is not {datasource_uid!r}")
            q = variable_query(v)
            if not (_LABEL_VALUES.match(q) or _QUERY_RESULT.match(q)):
                problems.append(f"{where} variable {v.get('name')}: {q!r} is not label_values() / query_result()")
            for name in sorted(variables_used(q) - earlier):
                problems.append(f"{where} variable {v.get('name')}: uses ${name}, not defined before it")
    return problems


def interpolate(text: str, values: Mapping[str, str], intervals: Intervals) -> str:
    """``text`` with every variable replaced (KeyError names one that has no value)."""
    known = {**intervals.values(), **values}

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name not in known:
            raise KeyError(f"${name} has no value (defined: {sorted(known)})")
        return known[name]

    return _VARIABLE.sub(one, text)


def _regex(variable: Mapping[str, Any]) -> re.Pattern[str] | None:
    text = variable.get("regex") or ""
    if not text:
        return None
    m = re.fullmatch(r"/(.*)/([a-z]*)", text, re.S)
    return re.compile(m.group(1), re.I if "i" in m.group(2) else 0) if m else re.compile(text)


def variable_options(variable: Mapping[str, Any], prom: PrometheusAPI, values: Mapping[str, str],
                     intervals: Intervals, start: float, end: float) -> list[str]:
    """The values Grafana offers for a query variable over [start, end], earlier variables' ``values`` set."""
    q = interpolate(variable_query(variable), values, intervals)
    if m := _LABEL_VALUES.match(q):
        texts = prom.label_values(m["label"], m["match"], start, end)
    elif m := _QUERY_RESULT.match(q):  # Grafana renders each series as text: name{label="v",...} value ts
        texts = [s.name + "{" + ",".join(f'{k}="{v}"' for k, v in s.labels.items()) + "}"
                 + f" {s.value:g} {end * 1000:.0f}" for s in prom.query(m["expr"], end)]
    else:
        raise ValueError(f"variable {variable.get('name')}: unsupported query {q!r}")
    regex = _regex(variable)
    out: list[str] = []
    for text in texts:
        value = text
        if regex is not None:
            found = regex.search(text)
            if not found:
                continue
            value = found.group(1) if found.groups() else found.group(0)
        if value not in out:
            out.append(value)
    sort = variable.get("sort", 0)  # Grafana: 0 as returned, 1 alphabetical, 2 alphabetical descending
    return sorted(out, reverse=sort == 2) if sort in (1, 2) else out
