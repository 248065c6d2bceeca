"""Measuring one (proxy, shape): warm-up, repetitions of two phases, RSS samples, the long run.

A repetition is two phases, each bracketed by ``/proc`` samples of the sidecars, the load generator and
the server (same method for all three, see :mod:`bench.procfs`):

1. throughput: ``requests`` calls, ``concurrency`` in flight on one HTTP/2 connection (closed loop);
   gives req/s and the CPU seconds per 10,000 requests at load;
2. latency: ``latency_requests`` calls one at a time; gives p50/p90/p99 and CPU per 10k at concurrency 1.

The orchestrator interleaves repetitions across all configurations (rep 1 of each, then rep 2 of each, in
a rotating order), so slow drifts of a shared 2-core machine hit every proxy alike instead of biasing
whichever ran last. The first failure of a configuration records ``error`` and takes it out of the run.
"""

from __future__ import annotations

import json
import os
import select
import time
from dataclasses import dataclass, field
from typing import Any

from bench.procfs import CpuSample, machine_busy_seconds, sample_cpu, tree_rss
from bench.procs import Proc, ProcessSet
from bench.proxies.base import Hop

Json = dict[str, Any]
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    requests: int = 6_000  # per throughput phase
    concurrency: int = 32
    latency_requests: int = 1_500  # per latency phase
    repeat: int = 5
    warmup: int = 1_000
    long_requests: int = 0  # 0: no long run; else total requests (RSS sampled every tenth)
    max_phase_seconds: float = 120.0


class LoadGenClient:
    """The orchestrator's end of :mod:`bench.loadgen`: one JSON line out, one JSON line back."""

    def __init__(self, proc: Proc) -> None:
        assert proc.popen.stdin is not None and proc.popen.stdout is not None
        self.proc = proc
        self._in = proc.popen.stdin
        self._out = proc.popen.stdout.fileno()
        self._buf = b""

    def ask(self, cmd: Json, timeout: float) -> Json:
        self._in.write((json.dumps(cmd) + "\n").encode())
        self._in.flush()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"load generator gave no answer to {cmd['op']} in {timeout:.0f}s")
            ready, _, _ = select.select([self._out], [], [], left)
            if ready:
                chunk = os.read(self._out, 65536)
                if not chunk:
                    raise RuntimeError(f"load generator exited: {self.proc.last_line()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: Json = json.loads(line)
        return answer


@dataclass
class Rep:
    """One repetition of one configuration. CPU figures are seconds per 10,000 requests."""

    rps: float
    throughput_requests: int
    throughput_elapsed: float
    proxy_cpu_10k: float | None  # at `concurrency`; None for direct
    proxy_cpu_10k_c1: float | None  # during the latency phase (concurrency 1)
    loadgen_cpu_10k: float
    server_cpu_10k: float
    proxy_user_10k: float | None  # the user and system parts of proxy_cpu_10k
    proxy_sys_10k: float | None
    proxy_util: float | None  # CPU seconds / wall seconds during the throughput phase (1.0 = one core)
    loadgen_util: float
    server_util: float
    background_util: float  # CPU used by processes outside the benchmark, in cores, at load
    background_util_c1: float  # the same during the latency phase
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    latency_requests: int


@dataclass
class Measurement:
    """Everything measured for one (proxy, shape); ``proxy`` is ``"-"`` for the direct shape."""

    proxy: str
    shape: str
    hops: list[Hop]
    target: str
    sidecars: list[Proc] = field(default_factory=list)
    error: str | None = None
    reps: list[Rep] = field(default_factory=list)
    rss_start_mb: list[float] = field(default_factory=list)  # per sidecar, right after it is ready
    rss_idle_mb: list[float] = field(default_factory=list)  # per sidecar, after warm-up
    rss_end_mb: list[float] = field(default_factory=list)  # per sidecar, after all repetitions
    long_rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests sent, max sidecar RSS)
    long_error: str | None = None  # a failure in the long run does not void the repetitions

    @property
    def label(self) -> str:
        return f"{self.proxy} {self.shape}" if self.proxy != "-" else self.shape

    def sidecar_rss_mb(self) -> list[float]:
        return [round(tree_rss(p.pid) / MB, 1) for p in self.sidecars]


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 100]."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU counters at one instant: measured sidecars, load generator, server, all of ours, the machine."""

    sidecars: CpuSample
    loadgen: CpuSample
    server: CpuSample
    ours: CpuSample
    machine: float

    def background_since(self, before: Sample) -> float:
        """Busy CPU seconds of the machine not spent by any benchmark process (other work, kernel threads)."""
        return max(0.0, (self.machine - before.machine) - self.ours.seconds_since(before.ours))


class Runner:
    """Runs phases against one load generator, one server and any number of configurations."""

    def __init__(
        self, loadgen: LoadGenClient, server_pid: int, procs: ProcessSet, settings: Settings
    ) -> None:
        self.loadgen = loadgen
        self.server_pid = server_pid
        self.procs = procs
        self.settings = settings

    def _sample(self, m: Measurement) -> Sample:
        return Sample(
            sidecars=sample_cpu(p.pid for p in m.sidecars),
            loadgen=sample_cpu([self.loadgen.proc.pid]),
            server=sample_cpu([self.server_pid]),
            ours=sample_cpu([os.getpid(), *(p.pid for p in self.procs.procs)]),
            machine=machine_busy_seconds(),
        )

    def _ask(self, m: Measurement, cmd: Json) -> Json | None:
        cmd = {"target": m.target, "max_seconds": self.settings.max_phase_seconds, **cmd}
        answer = self.loadgen.ask(cmd, self.settings.max_phase_seconds + 30)
        if not answer["ok"]:
            dead = [p.name for p in m.sidecars if not p.alive()]
            exited = f" ({', '.join(dead)} exited)" if dead else ""
            m.error = f"{cmd['op']}: {answer['first_error']}{exited}"
            return None
        return answer

    def warm_up(self, m: Measurement) -> None:
        s = self.settings
        m.rss_start_mb = m.sidecar_rss_mb()
        if self._ask(m, {"op": "connect", "timeout": 10.0}) is None:
            return
        if self._ask(m, {"op": "throughput", "n": s.warmup, "c": s.concurrency}) is None:
            return
        if self._ask(m, {"op": "latency", "n": max(50, s.warmup // 10)}) is None:
            return
        time.sleep(0.5)  # let the proxy go idle before the "idle" sample
        m.rss_idle_mb = m.sidecar_rss_mb()

    def repetition(self, m: Measurement) -> None:
        s = self.settings
        a = self._sample(m)
        tp = self._ask(m, {"op": "throughput", "n": s.requests, "c": s.concurrency})
        if tp is None:
            return
        b = self._sample(m)
        lat = self._ask(m, {"op": "latency", "n": s.latency_requests})
        if lat is None:
            return
        c = self._sample(m)
        n, elapsed = tp["completed"], tp["elapsed"]
        n_lat, samples = lat["completed"], sorted(lat["samples_us"])
        proxy_cpu = b.sidecars.seconds_since(a.sidecars)
        user, system = b.sidecars.user_sys_since(a.sidecars)
        loadgen_cpu = b.loadgen.seconds_since(a.loadgen)
        server_cpu = b.server.seconds_since(a.server)

        def sidecar(value: float) -> float | None:
            return value if m.sidecars else None  # direct: no sidecar figures

        m.reps.append(
            Rep(
                rps=n / elapsed,
                throughput_requests=n,
                throughput_elapsed=elapsed,
                proxy_cpu_10k=sidecar(proxy_cpu / n * 10_000),
                proxy_cpu_10k_c1=sidecar(c.sidecars.seconds_since(b.sidecars) / n_lat * 10_000),
                proxy_user_10k=sidecar(user / n * 10_000),
                proxy_sys_10k=sidecar(system / n * 10_000),
                loadgen_cpu_10k=loadgen_cpu / n * 10_000,
                server_cpu_10k=server_cpu / n * 10_000,
                proxy_util=sidecar(proxy_cpu / elapsed),
                loadgen_util=loadgen_cpu / elapsed,
                server_util=server_cpu / elapsed,
                background_util=b.background_since(a) / elapsed,
                background_util_c1=c.background_since(b) / lat["elapsed"],
                p50_us=percentile(samples, 50),
                p90_us=percentile(samples, 90),
                p99_us=percentile(samples, 99),
                mean_us=sum(samples) / len(samples),
                latency_requests=n_lat,
            )
        )

    def long_run(self, m: Measurement) -> None:
        """Send ``long_requests`` in ten chunks at ``concurrency``; sample sidecar RSS after each chunk."""
        s = self.settings
        chunk = max(1, s.long_requests // 10)
        sent = 0
        for _ in range(10):
            if self._ask(m, {"op": "throughput", "n": chunk, "c": s.concurrency}) is None:
                m.long_error, m.error = m.error, None
                return
            sent += chunk
            m.long_rss_mb.append((sent, max(m.sidecar_rss_mb(), default=0.0)))
