"""The load client's JSON lines -> a running summary: requests per version (in total, and in the latest
interval: the live split), errors by status, latency.

``payment_service.client --json --interval 1`` prints one line per interval and a ``final`` line when
it stops::

    {"type": "interval", "elapsed_s": 3.0, "requests": 50, "by_version": {"v1": 26, "v2": 24},
     "by_status": {"OK": 50}, "latency_ms": {"p50": 2.1, "p90": 3.4, "p99": 7.9}, "rps": 49.8,
     "cumulative": {"requests": 150, "by_version": {...}, "by_status": {...}}}

:func:`parse_client_line` is the only code that knows that schema; missing fields read as empty, so a
slightly different schema degrades the summary instead of breaking `mesh_ctl up`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OK = "OK"


@dataclass(frozen=True, slots=True)
class Counts:
    requests: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientReport:
    """One line of the client's output."""

    kind: str  # "interval" or "final"
    elapsed_s: float
    interval: Counts  # this interval's counts (for "final": usually empty)
    cumulative: Counts | None  # totals since the client started, when the line carries them
    rps: float
    latency_ms: dict[str, float]


def parse_client_line(line: str | bytes) -> ClientReport | None:
    """A :class:`ClientReport`, or None for anything that is not one of the client's JSON reports."""
    try:
        d = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict) or d.get("type") not in ("interval", "final"):
        return None
    kind = str(d["type"])
    cumulative = _counts(d["cumulative"]) if isinstance(d.get("cumulative"), dict) else None
    if kind == "final" and cumulative is None:
        cumulative = _counts(d)  # a final line without "cumulative" reports its totals at the top level
    return ClientReport(
        kind=kind,
        elapsed_s=_float(d.get("elapsed_s")),
        interval=_counts(d) if kind == "interval" else Counts(),
        cumulative=cumulative,
        rps=_float(d.get("rps")),
        latency_ms={str(k): _float(v) for k, v in _dict(d.get("latency_ms")).items() if v is not None},
    )


def _counts(d: dict[str, Any]) -> Counts:
    return Counts(
        requests=int(_float(d.get("requests"))),
        by_version={str(k): int(_float(v)) for k, v in _dict(d.get("by_version")).items()},
        by_status={str(k): int(_float(v)) for k, v in _dict(d.get("by_status")).items()},
    )


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _float(v: object) -> float:
    if isinstance(v, bool):
        return 0.0
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return 0.0


@dataclass(slots=True)
class Summary:
    """Totals for one load client, updated line by line."""

    client: str
    target: str
    elapsed_s: float = 0.0
    requests: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    rps: float = 0.0  # of the latest interval
    latency_ms: dict[str, float] = field(default_factory=dict)  # of the latest interval
    recent_by_version: dict[str, int] = field(default_factory=dict)  # of the latest interval: the live split
    reports: int = 0
    final: bool = False

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status != OK)

    def update(self, report: ClientReport) -> None:
        self.reports += 1
        self.elapsed_s = max(self.elapsed_s, report.elapsed_s)
        if report.cumulative is not None:
            self.requests = report.cumulative.requests
            self.by_version = dict(report.cumulative.by_version)
            self.by_status = dict(report.cumulative.by_status)
        else:  # no totals on the line: add the interval up ourselves
            self.requests += report.interval.requests
            for k, n in report.interval.by_version.items():
                self.by_version[k] = self.by_version.get(k, 0) + n
            for k, n in report.interval.by_status.items():
                self.by_status[k] = self.by_status.get(k, 0) + n
        if report.kind == "final":
            self.final = True
        else:
            self.rps = report.rps
            self.latency_ms = dict(report.latency_ms)
            self.recent_by_version = dict(report.interval.by_version)

    def share(self, version: str) -> float:
        """``version``'s fraction of the requests that reported a version (0.0 when there are none)."""
        total = sum(self.by_version.values())
        return self.by_version.get(version, 0) / total if total else 0.0

    def recent_share(self, version: str) -> float | None:
        """``version``'s fraction in the latest interval (None before the first one, or if it had no calls):
        where the split is now, e.g. right after `mesh_ctl set-weight`."""
        total = sum(self.recent_by_version.values())
        return self.recent_by_version.get(version, 0) / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client, "target": self.target, "elapsed_s": self.elapsed_s,
            "requests": self.requests, "by_version": self.by_version, "by_status": self.by_status,
            "errors": self.errors, "rps": self.rps, "latency_ms": self.latency_ms,
            "recent_by_version": self.recent_by_version, "final": self.final,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Summary:
        return cls(
            client=str(d.get("client", "")), target=str(d.get("target", "")),
            elapsed_s=_float(d.get("elapsed_s")), requests=int(_float(d.get("requests"))),
            by_version={str(k): int(v) for k, v in _dict(d.get("by_version")).items()},
            by_status={str(k): int(v) for k, v in _dict(d.get("by_status")).items()},
            rps=_float(d.get("rps")),
            latency_ms={str(k): _float(v) for k, v in _dict(d.get("latency_ms")).items()},
            recent_by_version={str(k): int(v) for k, v in _dict(d.get("recent_by_version")).items()},
            final=bool(d.get("final", False)),
        )


# --------------------------------------------------------------------------------------------- text


def summary_lines(s: Summary) -> list[str]:
    """A few lines for a terminal: totals, one bar per version, statuses, latency."""
    head = (f"{s.client} -> {s.target}   {s.elapsed_s:5.0f} s   {s.rps:6.1f} rps   "
            f"{s.requests} requests   {s.errors} errors")
    lines = [head]
    for version in sorted(s.by_version.keys() | s.recent_by_version.keys()):
        share = s.share(version)
        recent = s.recent_share(version)
        now = f"now {recent * 100:5.1f}%  {'#' * round(recent * 40)}" if recent is not None else ""
        lines.append(f"  {version:<8} {s.by_version.get(version, 0):>8}  {share * 100:5.1f}%   {now}".rstrip())
    if s.by_status:
        lines.append("  status   " + "  ".join(f"{k}={v}" for k, v in sorted(s.by_status.items())))
    if s.latency_ms:
        lines.append("  latency  " + "  ".join(f"{k} {v:.1f} ms" for k, v in s.latency_ms.items()))
    return lines


def summary_line(s: Summary) -> str:
    """The same on one line (logs, pipes, final totals)."""
    versions = "  ".join(f"{v} {n} ({s.share(v) * 100:.1f}%)" for v, n in sorted(s.by_version.items()))
    if not s.final and s.recent_by_version:
        versions += "  now " + " ".join(f"{v} {(s.recent_share(v) or 0) * 100:.0f}%"
                                        for v in sorted(s.recent_by_version))
    lat = " ".join(f"{k}={v:.1f}ms" for k, v in s.latency_ms.items() if k in ("p50", "p99"))
    errors = ", ".join(f"{k}={v}" for k, v in sorted(s.by_status.items()) if k != OK)
    return (f"{s.client}: {s.elapsed_s:.0f}s {s.requests} requests  {versions}  errors {s.errors}"
            f"{' (' + errors + ')' if errors else ''}  {s.rps:.1f} rps {lat}").rstrip()
