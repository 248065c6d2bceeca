"""Turning measurements into the table, the ratios, the PASS/FAIL verdicts and the JSON document.

Each figure is the median over repetitions; ``±`` is the spread, (max - min) / median, in percent. The
targets (from the issue) compare pyproxy with nginx on the ``2-sidecars-mtls`` shape of the same run:
CPU per 10k requests <= 8x, p50 <= 4x. Plus idle RSS <= 60 MB per pyproxy sidecar, after warm-up and
after load (every RSS sample is taken with no call in flight), and no RSS growth over a long run
(``--long``: first to last sample <= max(2 MB, 5 %), and <= 1 MB over the second half of the run).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.measure import Measurement, Rep
from bench.shapes import MTLS_SHAPE

Json = dict[str, Any]

CPU_RATIO_TARGET = 8.0
P50_RATIO_TARGET = 4.0
IDLE_RSS_TARGET_MB = 60.0
RSS_GROWTH_ABS_MB = 2.0  # whole long run: last - first <= max(2 MB, 5 %)
RSS_GROWTH_REL = 0.05
RSS_GROWTH_SECOND_HALF_MB = 1.0  # and the second half alone <= 1 MB: still climbing at the end = growing


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    spread_pct: float  # (max - min) / median * 100
    values: tuple[float, ...]

    @staticmethod
    def of(values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med * 100 if med else 0.0
        return Stat(med, spread, tuple(values))


@dataclass(frozen=True, slots=True)
class Summary:
    rps: Stat | None
    p50_us: Stat | None
    p99_us: Stat | None
    proxy_cpu_10k: Stat | None
    proxy_cpu_10k_c1: Stat | None
    proxy_sys_10k: Stat | None
    loadgen_cpu_10k: Stat | None
    server_cpu_10k: Stat | None
    proxy_util: Stat | None
    loadgen_util: Stat | None
    server_util: Stat | None
    background_util: Stat | None
    idle_rss_mb: float | None  # largest sidecar
    end_rss_mb: float | None


def summarise(m: Measurement) -> Summary:
    def stat(get: Callable[[Rep], float | None]) -> Stat | None:
        return Stat.of([v for r in m.reps if (v := get(r)) is not None])

    return Summary(
        rps=stat(lambda r: r.rps),
        p50_us=stat(lambda r: r.p50_us),
        p99_us=stat(lambda r: r.p99_us),
        proxy_cpu_10k=stat(lambda r: r.proxy_cpu_10k),
        proxy_cpu_10k_c1=stat(lambda r: r.proxy_cpu_10k_c1),
        proxy_sys_10k=stat(lambda r: r.proxy_sys_10k),
        loadgen_cpu_10k=stat(lambda r: r.loadgen_cpu_10k),
        server_cpu_10k=stat(lambda r: r.server_cpu_10k),
        proxy_util=stat(lambda r: r.proxy_util),
        loadgen_util=stat(lambda r: r.loadgen_util),
        server_util=stat(lambda r: r.server_util),
        background_util=stat(lambda r: max(r.background_util, r.background_util_c1)),
        idle_rss_mb=max(m.rss_idle_mb) if m.rss_idle_mb else None,
        end_rss_mb=max(m.rss_end_mb) if m.rss_end_mb else None,
    )


# --------------------------------------------------------------------------------------------- table


def _fmt(s: Stat | None, digits: int = 0, spread: bool = True) -> str:
    if s is None:
        return "-"
    text = f"{s.median:.{digits}f}"
    return f"{text} ±{s.spread_pct:.0f}%" if spread and len(s.values) > 1 else text


def _pct(part: Stat | None, whole: Stat | None) -> str:
    return "-" if part is None or whole is None or not whole.median else f"{part.median / whole.median:.0%}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


COLUMNS = (
    ("proxy", 8), ("shape", 16), ("req/s", 12), ("p50 us", 11), ("p99 us", 11), ("cpu/10k s", 12),
    ("@c1 s", 6), ("sys", 4), ("util", 5), ("lg cpu", 6), ("srv cpu", 7), ("bg", 4), ("idle MB", 7),
    ("end MB", 7),
)


def table(measurements: Sequence[Measurement]) -> str:
    """One row per (proxy, shape); failed rows say why."""
    header = "  ".join(f"{name:<{width}}" for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for m in measurements:
        lead = f"{m.proxy:<8}  {m.shape:<16}  "
        if m.error is not None:
            lines.append(lead + f"failed: {m.error}")
            continue
        s = summarise(m)
        cells = (
            _fmt(s.rps), _fmt(s.p50_us), _fmt(s.p99_us), _fmt(s.proxy_cpu_10k, 3),
            _fmt(s.proxy_cpu_10k_c1, 2, spread=False), _pct(s.proxy_sys_10k, s.proxy_cpu_10k),
            _fmt(s.proxy_util, 2, spread=False),
            _fmt(s.loadgen_cpu_10k, 2, spread=False), _fmt(s.server_cpu_10k, 2, spread=False),
            _fmt(s.background_util, 1, spread=False),
            _mb(s.idle_rss_mb), _mb(s.end_rss_mb),
        )
        lines.append(lead + "  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS[2:], strict=True)))
    return "\n".join(lines)


BUSY_MACHINE_CORES = 0.25


def background_warning(measurements: Sequence[Measurement]) -> str | None:
    """A warning when other work on the machine used more than a quarter of a core during any phase."""
    phases = [u for m in measurements for r in m.reps for u in (r.background_util, r.background_util_c1)]
    worst = max(phases, default=0.0)
    if worst <= BUSY_MACHINE_CORES:
        return None
    return (
        f"WARNING: other processes used up to {worst:.1f} cores of this machine during the measurement (bg); "
        "numbers are noisier than usual: rerun on a quiet machine or raise --repeat."
    )


# --------------------------------------------------------------------------------------------- ratios


@dataclass(frozen=True, slots=True)
class Ratio:
    shape: str
    baseline: str
    cpu_10k: float | None
    p50: float | None
    p99: float | None
    rps: float | None


def _ratio(a: Stat | None, b: Stat | None) -> float | None:
    return a.median / b.median if a is not None and b is not None and b.median else None


def ratios(measurements: Sequence[Measurement], subject: str = "pyproxy") -> list[Ratio]:
    ok = {(m.proxy, m.shape): summarise(m) for m in measurements if m.error is None and m.reps}
    out = []
    for (proxy, shape), mine in ok.items():
        if proxy != subject:
            continue
        for baseline in ("nginx", "haproxy"):
            theirs = ok.get((baseline, shape))
            if theirs is not None:
                out.append(
                    Ratio(
                        shape, baseline, _ratio(mine.proxy_cpu_10k, theirs.proxy_cpu_10k),
                        _ratio(mine.p50_us, theirs.p50_us), _ratio(mine.p99_us, theirs.p99_us),
                        _ratio(mine.rps, theirs.rps),
                    )
                )
    return out


def ratio_table(rs: Sequence[Ratio], subject: str = "pyproxy") -> str:
    if not rs:
        return f"(no ratios: {subject} and a baseline must both succeed on the same shape)"

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    lines = [f"{'ratio':<18}  {'shape':<16}  {'cpu/10k':>8}  {'p50':>7}  {'p99':>7}  {'req/s':>7}"]
    lines += [
        f"{subject + '/' + r.baseline:<18}  {r.shape:<16}  {x(r.cpu_10k):>8}  {x(r.p50):>7}  {x(r.p99):>7}  "
        f"{x(r.rps):>7}"
        for r in rs
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    verdict: str  # "PASS", "FAIL" or "n/a"
    detail: str


def rss_growth_ok(samples: Sequence[tuple[int, float]]) -> tuple[bool, float]:
    """(not growing?, growth in MB) for RSS samples taken every N requests of a long run."""
    first, last = samples[0][1], samples[-1][1]
    middle = samples[(len(samples) - 1) // 2][1]
    growth = last - first
    ok = growth <= max(RSS_GROWTH_ABS_MB, RSS_GROWTH_REL * first)
    return ok and last - middle <= RSS_GROWTH_SECOND_HALF_MB, growth


def verdicts(measurements: Sequence[Measurement], long_requested: bool) -> list[Verdict]:
    by_key = {(m.proxy, m.shape): m for m in measurements}
    py, ng = by_key.get(("pyproxy", MTLS_SHAPE)), by_key.get(("nginx", MTLS_SHAPE))
    out: list[Verdict] = []

    def missing() -> str | None:
        if py is None or ng is None:
            return f"pyproxy and nginx must both run {MTLS_SHAPE}"
        if py.error or not py.reps:
            return f"pyproxy failed: {py.error}"
        if ng.error or not ng.reps:
            return f"nginx failed: {ng.error}"
        return None

    reason = missing()
    for name, limit, field_ in (
        ("cpu/10k", CPU_RATIO_TARGET, "proxy_cpu_10k"),
        ("p50", P50_RATIO_TARGET, "p50_us"),
    ):
        target = f"pyproxy {name} <= {limit:.0f}x nginx ({MTLS_SHAPE})"
        if reason is not None:
            out.append(Verdict(target, "FAIL" if "pyproxy failed" in reason else "n/a", reason))
            continue
        assert py is not None and ng is not None
        r = _ratio(getattr(summarise(py), field_), getattr(summarise(ng), field_))
        if r is None:
            out.append(Verdict(target, "n/a", "no data"))
        else:
            out.append(Verdict(target, "PASS" if r <= limit else "FAIL", f"{r:.2f}x"))

    pys = [m for m in measurements if m.proxy == "pyproxy"]
    idle = [v for m in pys for v in m.rss_idle_mb]
    # Every RSS sample is taken with no call in flight: after warm-up, after the repetitions, during --long.
    after_load = [v for m in pys for v in (*m.rss_end_mb, *(rss for _, rss in m.long_rss_mb))]
    target = f"pyproxy idle RSS <= {IDLE_RSS_TARGET_MB:.0f} MB per sidecar"
    if idle:
        worst = max(idle + after_load)
        detail = f"max {max(idle):.1f} MB after warm-up" + (
            f", {max(after_load):.1f} MB after load" if after_load else ""
        )
        out.append(Verdict(target, "PASS" if worst <= IDLE_RSS_TARGET_MB else "FAIL", detail))
    else:
        out.append(Verdict(target, "FAIL" if pys else "n/a", "no pyproxy sidecar reached idle"))

    target = "pyproxy RSS not growing over the long run"
    long_runs = [m for m in pys if m.long_rss_mb and m.long_error is None]
    long_failed = [m for m in pys if m.long_error is not None]
    if not long_requested:
        out.append(Verdict(target, "n/a", "run with --long"))
    elif long_failed:
        out.append(Verdict(target, "FAIL", f"long run failed: {long_failed[0].long_error}"))
    elif not long_runs:
        out.append(Verdict(target, "FAIL" if pys else "n/a", "no pyproxy long run completed"))
    else:
        results = [(m, *rss_growth_ok(m.long_rss_mb)) for m in long_runs]
        good = all(ok for _, ok, _ in results)
        detail = "; ".join(
            f"{m.shape}: {m.long_rss_mb[0][1]:.1f} -> {m.long_rss_mb[-1][1]:.1f} MB from "
            f"{m.long_rss_mb[0][0]} to {m.long_rss_mb[-1][0]} requests ({growth:+.1f} MB)"
            for m, _, growth in results
        )
        out.append(Verdict(target, "PASS" if good else "FAIL", detail))
    return out


def verdict_table(vs: Sequence[Verdict]) -> str:
    return "\n".join(f"{v.verdict:<5} {v.target}: {v.detail}" for v in vs)


def long_table(measurements: Sequence[Measurement]) -> str:
    lines = []
    for m in measurements:
        if m.long_error is not None:
            lines.append(f"{m.label:<28} long run failed: {m.long_error}")
        elif m.long_rss_mb:
            ok, growth = rss_growth_ok(m.long_rss_mb)
            series = " ".join(f"{rss:.1f}" for _, rss in m.long_rss_mb)
            verdict = "ok" if ok else "GROWING"
            every = m.long_rss_mb[0][0]
            lines.append(f"{m.label:<28} RSS MB every {every} req: {series} ({growth:+.1f} MB, {verdict})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- JSON


def to_json(measurements: Sequence[Measurement], long_requested: bool, meta: Json) -> Json:
    def measurement(m: Measurement) -> Json:
        return {
            "proxy": m.proxy,
            "shape": m.shape,
            "error": m.error,
            "summary": asdict(summarise(m)) if m.reps else None,
            "repetitions": [asdict(r) for r in m.reps],
            "rss_mb": {"start": m.rss_start_mb, "idle": m.rss_idle_mb, "end": m.rss_end_mb},
            "long_rss_mb": [{"requests": n, "rss_mb": v} for n, v in m.long_rss_mb],
            "long_error": m.long_error,
            "hops": [
                {"name": h.name, "listen": h.listen, "upstream": h.upstream,
                 "downstream_tls": h.downstream_tls, "upstream_tls": h.upstream_tls}
                for h in m.hops
            ],
        }

    return {
        **meta,
        "measurements": [measurement(m) for m in measurements],
        "ratios": [asdict(r) for r in ratios(measurements)],
        "verdicts": [asdict(v) for v in verdicts(measurements, long_requested)],
    }
