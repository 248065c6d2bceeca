"""The load client's JSON lines -> a running summary: requests per version (in total, and in the latest
interval: the live split), errors by status, latency.

``payment_service.client --json --interval 1`` prints one line per interval and a ``final`` line when
it stops::

    {"type": "interval", "elapsed_s": 3.0, "requests": 50, "by_version": {"v1": 26, "v2": 24},
     "by_status": {"OK": 50}, "latency_ms": {"p50": 2.1, "p90": 3.4, "p99": 7.9}, "rps": 49.8,
     "cumulative": {"requests": 150, "by_version": {...}, "by_status": {...}}}

and, once a call failed, ``errors`` (the first grpc-message per status) and ``hints`` (what a message means,
when the client knows) in the interval and in ``cumulative``.

A summary also tells calls now from calls in total: the statuses of the latest interval (``recent_by_status``)
show at once that calls started failing (or recovered), e.g. a client outside the mesh after `mesh_ctl mtls
strict`, whose ``note`` says what it is.

:func:`parse_client_line` is the only code that knows that schema; missing fields read as empty, so a
slightly different schema degrades the summary instead of breaking `mesh_ctl up`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OK = "OK"
NO_VERSION = "unknown"  # what payment-client counts a call under when no reply named a version (it failed)


@dataclass(frozen=True, slots=True)
class Counts:
    requests: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # status -> first grpc-message
    hints: dict[str, str] = field(default_factory=dict)  # status -> what that message means


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
        errors=_texts(d.get("errors")),
        hints=_texts(d.get("hints")),
    )


def _texts(v: object) -> dict[str, str]:
    return {str(k): str(text) for k, text in _dict(v).items()}


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
    note: str = ""  # what the client is, when it is not the usual mesh client ("outside the mesh: ...")
    recent_by_status: dict[str, int] = field(default_factory=dict)  # of the latest interval: failing now?
    first_errors: dict[str, str] = field(default_factory=dict)  # status -> the first grpc-message seen
    hints: dict[str, str] = field(default_factory=dict)  # status -> what that message means

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
        for counts in (report.interval, report.cumulative or Counts()):
            for status, text in counts.errors.items():  # the first message of each status stays
                self.first_errors.setdefault(status, text)
            for status, text in counts.hints.items():
                self.hints.setdefault(status, text)
        if report.kind == "final":
            self.final = True
        else:
            self.rps = report.rps
            self.latency_ms = dict(report.latency_ms)
            self.recent_by_version = dict(report.interval.by_version)
            self.recent_by_status = dict(report.interval.by_status)

    @property
    def versions(self) -> dict[str, int]:
        """Calls per version that answered: a failed call has no version (the client counts it as
        ``unknown``); it shows in the statuses, not in the split."""
        return {v: n for v, n in self.by_version.items() if v != NO_VERSION}

    @property
    def recent_versions(self) -> dict[str, int]:
        return {v: n for v, n in self.recent_by_version.items() if v != NO_VERSION}

    def share(self, version: str) -> float:
        """``version``'s fraction of the requests that reported a version (0.0 when there are none)."""
        total = sum(self.versions.values())
        return self.versions.get(version, 0) / total if total else 0.0

    def recent_share(self, version: str) -> float | None:
        """``version``'s fraction in the latest interval (None before the first one, or if it had no calls):
        where the split is now, e.g. right after `mesh_ctl set-weight`."""
        total = sum(self.recent_versions.values())
        return self.recent_versions.get(version, 0) / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client, "target": self.target, "elapsed_s": self.elapsed_s,
            "requests": self.requests, "by_version": self.by_version, "by_status": self.by_status,
            "errors": self.errors, "rps": self.rps, "latency_ms": self.latency_ms,
            "recent_by_version": self.recent_by_version, "final": self.final, "note": self.note,
            "recent_by_status": self.recent_by_status, "first_errors": self.first_errors, "hints": self.hints,
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
            note=str(d.get("note") or ""),
            recent_by_status={str(k): int(_float(v)) for k, v in _dict(d.get("recent_by_status")).items()},
            first_errors=_texts(d.get("first_errors")),
            hints=_texts(d.get("hints")),
        )


# --------------------------------------------------------------------------------------------- text


def summary_lines(s: Summary) -> list[str]:
    """A few lines for a terminal: totals, one bar per version, statuses (in total and now), latency, the first
    error of each failing status."""
    note = f"  ({s.note})" if s.note else ""
    head = (f"{s.client} -> {s.target}{note}   {s.elapsed_s:5.0f} s   {s.rps:6.1f} rps   "
            f"{s.requests} requests   {s.errors} errors")
    lines = [head]
    for version in sorted(s.versions.keys() | s.recent_versions.keys()):
        share = s.share(version)
        recent = s.recent_share(version)
        now = f"now {recent * 100:5.1f}%  {'#' * round(recent * 40)}" if recent is not None else ""
        lines.append(f"  {version:<8} {s.versions.get(version, 0):>8}  {share * 100:5.1f}%   {now}".rstrip())
    if s.by_status:
        now = f"   now {_statuses(s.recent_by_status)}" if s.errors and s.recent_by_status else ""
        lines.append("  status   " + "  ".join(f"{k}={v}" for k, v in sorted(s.by_status.items())) + now)
    if s.latency_ms:
        lines.append("  latency  " + "  ".join(f"{k} {v:.1f} ms" for k, v in s.latency_ms.items()))
    lines += [f"  {line}" for line in error_lines(s)]
    return lines


def error_lines(s: Summary, width: int = 200) -> list[str]:
    """``first UNAVAILABLE: <message>`` per failing status, and ``(<hint>)`` under it when there is one."""
    out = []
    for status, message in sorted(s.first_errors.items()):
        out.append(_clip(f"first {status}: {message}", width))
        if status in s.hints:
            out.append(_clip(f"  ({s.hints[status]})", width))
    return out


def summary_line(s: Summary, *, with_errors: bool = True) -> str:
    """The same on one line (logs, pipes, final totals); without the first errors' text with
    ``with_errors=False`` (for callers that print :func:`error_lines` under it)."""
    versions = "  ".join(f"{v} {n} ({s.share(v) * 100:.1f}%)" for v, n in sorted(s.versions.items()))
    if not s.final and s.recent_versions:
        versions += "  now " + " ".join(f"{v} {(s.recent_share(v) or 0) * 100:.0f}%"
                                        for v in sorted(s.recent_versions))
    lat = " ".join(f"{k}={v:.1f}ms" for k, v in s.latency_ms.items() if k in ("p50", "p99"))
    errors = ", ".join(f"{k}={v}" for k, v in sorted(s.by_status.items()) if k != OK)
    now = f"  now {_statuses(s.recent_by_status)}" if s.errors and s.recent_by_status and not s.final else ""
    first = "; ".join(f"first {k}: {v}" for k, v in sorted(s.first_errors.items())) if with_errors else ""
    note = f" ({s.note})" if s.note else ""
    return (f"{s.client}{note}: {s.elapsed_s:.0f}s {s.requests} requests  {versions}  errors {s.errors}"
            f"{' (' + errors + ')' if errors else ''}{now}  {s.rps:.1f} rps {lat}"
            f"{'  ' + first if first else ''}").rstrip()


def _statuses(counts: dict[str, int]) -> str:
    """``OK=0 UNAVAILABLE=5``: OK first, always shown, so "now" reads as "how many succeed right now"."""
    rest = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != OK)
    return f"{OK}={counts.get(OK, 0)}" + (f" {rest}" if rest else "")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
