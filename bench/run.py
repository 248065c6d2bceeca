"""Run the benchmark: ``python -m bench.run [--quick] [--long] [--proxies ...] [--shapes ...] [--json out]``.

Order of work: certificates -> gRPC server -> load generator -> every (proxy, shape) started side by side
on free loopback ports -> warm-up and idle RSS of each -> ``--repeat`` interleaved repetitions -> RSS after
the run -> optional long run -> everything stopped by PID -> table, ratios, verdicts (and JSON).
A proxy that is not installed is skipped with a note; a proxy that fails is reported ``failed: <reason>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import grpc

from bench.certs import make_certs
from bench.measure import LoadGenClient, Measurement, Runner, Settings
from bench.procfs import machine_busy_seconds
from bench.procs import REPO_ROOT, ProcessSet, free_port, wait_ready
from bench.proxies import IMPLEMENTATIONS
from bench.proxies.base import HOST
from bench.report import (
    background_warning,
    long_table,
    ratio_table,
    ratios,
    table,
    to_json,
    verdict_table,
    verdicts,
)
from bench.shapes import MTLS_SHAPE, SHAPES, plan

DEFAULTS = Settings()
QUICK = Settings(requests=2_000, latency_requests=300, repeat=2, warmup=400)
LONG_REQUESTS = 100_000
LEGEND = """\
cpu/10k: CPU seconds of all the shape's sidecars per 10,000 calls at load (sys: the kernel's share of it);
@c1: the same at concurrency 1; util: sidecar CPU / wall time at load (1.0 = one core);
lg cpu / srv cpu: load generator / server CPU s per 10k; bg: cores used by other processes on the machine
(worst phase); idle/end MB: RSS of the largest sidecar after
warm-up / at the end; ±: (max-min)/median over the repetitions."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    d = DEFAULTS
    p.add_argument("--requests", type=int, help=f"calls per throughput phase (default {d.requests})")
    p.add_argument("--concurrency", type=int, help=f"calls in flight at load (default {d.concurrency})")
    p.add_argument("--latency-requests", type=int, help=f"calls per latency phase ({d.latency_requests})")
    p.add_argument("--repeat", type=int, help=f"repetitions per configuration (default {d.repeat})")
    p.add_argument("--warmup", type=int, help=f"warm-up calls per configuration (default {d.warmup})")
    p.add_argument("--proxies", default=",".join(IMPLEMENTATIONS), help="comma list of: %(default)s")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma list of: %(default)s")
    p.add_argument("--quick", action="store_true", help="small counts, 2 repetitions: under a minute")
    p.add_argument("--long", action="store_true", help=f"+{LONG_REQUESTS} calls per proxy, RSS every 10%%")
    p.add_argument("--long-requests", type=int, default=LONG_REQUESTS, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="write every number to this file")
    p.add_argument("--server-threads", type=int, default=64)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, certificates)")
    args = p.parse_args(argv)
    for name in args.proxies.split(","):
        if name not in IMPLEMENTATIONS:
            p.error(f"unknown proxy {name!r}; known: {', '.join(IMPLEMENTATIONS)}")
    for name in args.shapes.split(","):
        if name not in SHAPES:
            p.error(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else DEFAULTS

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return Settings(
        requests=pick(args.requests, base.requests),
        concurrency=pick(args.concurrency, base.concurrency),
        latency_requests=pick(args.latency_requests, base.latency_requests),
        repeat=pick(args.repeat, base.repeat),
        warmup=pick(args.warmup, base.warmup),
        long_requests=args.long_requests if args.long else 0,
    )


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally that stops every process


def versions(proxies: Sequence[str]) -> dict[str, str]:
    out = {"python": platform.python_version(), "grpcio": grpc.__version__, "commit": _commit()}
    for name in proxies:
        impl = IMPLEMENTATIONS[name]
        out[name] = impl.unavailable() or impl.version()
    return out


def _commit() -> str:
    """The checked-out commit (read-only ``git describe``), so a JSON result says what was measured."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def background_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes while the benchmark does nothing (a quiet machine: ~0.0)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def measure_all(
    args: argparse.Namespace, settings: Settings, workdir: Path, procs: ProcessSet, clock: Clock
) -> list[Measurement]:
    certs = make_certs(workdir / "certs")
    server_port = free_port()
    server = procs.start(
        "server", [sys.executable, "-m", "bench.server", "--port", str(server_port),
                   "--threads", str(args.server_threads)],
    )
    wait_ready(server, HOST, server_port, 20.0)
    loadgen = LoadGenClient(procs.start("loadgen", [sys.executable, "-m", "bench.loadgen"], pipes=True))
    runner = Runner(loadgen, server.pid, procs, settings)

    shapes = args.shapes.split(",")
    measurements: list[Measurement] = []
    if "direct" in shapes:
        measurements.append(Measurement("-", "direct", [], f"{HOST}:{server_port}"))
    for name in args.proxies.split(","):
        impl = IMPLEMENTATIONS[name]
        if (why := impl.unavailable()) is not None:
            clock.log(f"skipping {name}: {why}")
            continue
        for shape in shapes:
            if shape == "direct":
                continue
            hops = plan(shape, server_port, workdir / f"{name}-{shape}", certs)
            m = Measurement(name, shape, hops, hops[-1].listen)
            measurements.append(m)
            try:
                for hop in hops:
                    m.sidecars.append(impl.start(hop, procs))
            except RuntimeError as e:
                m.error = f"start: {e}"
                retire(m, procs, clock, "to start")

    live = [m for m in measurements if m.error is None]
    clock.log(f"started {sum(len(m.sidecars) for m in live)} sidecars; warming up {len(live)} configurations")
    for m in live:
        runner.warm_up(m)
        if m.error:
            retire(m, procs, clock, "in warm-up")

    for rep in range(settings.repeat):
        live = [m for m in measurements if m.error is None]
        if live:
            k = rep % len(live)
            live = live[k:] + live[:k]  # rotate so no configuration always runs first or last
        for m in live:
            runner.repetition(m)
            if m.error:
                retire(m, procs, clock, f"in repetition {rep + 1}")
                continue
            r = m.reps[-1]
            cpu = "" if r.proxy_cpu_10k is None else f", proxy cpu {r.proxy_cpu_10k:.3f} s/10k"
            clock.log(
                f"rep {rep + 1}/{settings.repeat} {m.label}: {r.rps:.0f} req/s, p50 {r.p50_us:.0f} us, "
                f"p99 {r.p99_us:.0f} us{cpu}"
            )
    for m in measurements:
        if m.error is None:
            m.rss_end_mb = m.sidecar_rss_mb()

    if settings.long_requests:
        for m in _long_candidates(measurements):
            clock.log(f"long run: {settings.long_requests} calls through {m.label}")
            runner.long_run(m)
            if m.long_error:
                clock.log(f"{m.label}: failed in the long run: {m.long_error}")
    return measurements


def retire(m: Measurement, procs: ProcessSet, clock: Clock, when: str) -> None:
    """Log why ``m`` failed and stop its sidecars now, so they cost the rest of the run nothing."""
    clock.log(f"{m.label}: failed {when}: {m.error}")
    for proc in m.sidecars:
        procs.stop(proc)
    m.sidecars.clear()


def _long_candidates(measurements: Sequence[Measurement]) -> list[Measurement]:
    """Per proxy: its mTLS pair if that works, else the last shape that works."""
    out = []
    for name in IMPLEMENTATIONS:
        mine = [m for m in measurements if m.proxy == name and m.error is None]
        mtls = [m for m in mine if m.shape == MTLS_SHAPE]
        if mtls or mine:
            out.append((mtls or mine)[-1])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    clock = Clock()
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="minimesh-bench-"))
    clock.log(f"settings: {settings}; workdir {workdir}")
    busy = background_cores()
    clock.log(f"other processes keep {busy:.2f} of {os.cpu_count()} cores busy before the run")
    meta: dict[str, object] = {
        "settings": dataclasses.asdict(settings),
        "versions": versions(args.proxies.split(",")),
        "machine": {
            "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
            "background_cores_before": round(busy, 2),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    procs = ProcessSet(workdir)
    try:
        measurements = measure_all(args, settings, workdir, procs, clock)
    except KeyboardInterrupt:
        clock.log("interrupted: stopping every process")
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave proxies running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["elapsed_s"] = int(time.monotonic() - clock.t0)

    print()
    s = settings
    print(f"minimesh bench: {s.requests} calls x {s.repeat} at concurrency {s.concurrency}, "
          f"{s.latency_requests} x {s.repeat} at concurrency 1; {meta['versions']}")
    print(LEGEND)
    print(table(measurements))
    if (warning := background_warning(measurements)) is not None:
        print(warning)
    print()
    print(ratio_table(ratios(measurements)))
    if settings.long_requests:
        print()
        print(long_table(measurements))
    print()
    print(verdict_table(verdicts(measurements, bool(settings.long_requests))))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(measurements, bool(settings.long_requests), meta), indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
