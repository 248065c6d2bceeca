"""What Prometheus scraping costs the sidecars: a reproducible measurement on a real `mesh_ctl up` mesh.

    python -m bench.scrape_cost                       # ~8 minutes: 3 x (60 s without + 60 s with), 1,000 scrapes
    python -m bench.scrape_cost --window 20 --repeat 1 --scrapes 200   # ~1.5 minutes, rougher

It starts a mesh (`mesh_ctl up --detach --no-prometheus`, the default load of 50 calls/s, on a loopback block
of its own, in a temporary run dir) and measures, per sidecar, CPU = utime + stime of its process from
``/proc/<pid>/stat`` (:mod:`bench.procfs`):

1. **With and without a scraping Prometheus**, same load (sidecars and the apps, whose metrics the merged
   endpoint fetches per scrape): windows of ``--window`` s alternate between no
   Prometheus and a real one (the ``prometheus`` on PATH) scraping every sidecar every ``--interval`` s with the
   configuration `mesh_ctl up` generates (:mod:`mesh_ctl.runtime.prometheus`). Reported: each sidecar's CPU
   in % of a core, mean and spread over the ``--repeat`` pairs, and the difference; and Prometheus's own CPU.
2. **Per scrape**: ``--scrapes`` back-to-back ``GET /stats/prometheus`` of what Prometheus scrapes on one
   workload (the client's merged endpoint, 15020: the most series, and the app's metrics fetched per scrape),
   the CPU delta of the sidecar and the app minus their CPU over the same time without scrapes (measured just before
   and after, same load), divided by the count; then "% of a core at one scrape per ``--interval`` s" =
   cost per scrape / interval.

The figure of (1) sits inside the run-to-run noise of a sidecar under load (a scrape every 15 s is a few
milliseconds of CPU); (2) resolves it. Everything it starts is stopped at the end (`mesh_ctl down`; its own
Prometheus by PID), also on an error or Ctrl-C. Load stays on loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.procfs import CLOCK_TICKS, cpu_ticks
from mesh_ctl.addressing import busy_sockets, can_bind, plan
from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.specs import ProcessSpec
from mesh_ctl.topology import default_topology

REPO = Path(__file__).resolve().parents[1]


def cpu_s(pid: int) -> float:
    t = cpu_ticks(pid)
    if t is None:
        raise RuntimeError(f"pid {pid} is gone")
    return sum(t) / CLOCK_TICKS


def free_base() -> tuple[str, str]:
    """(first workload address, control-plane address) of a loopback block where the mesh's ports are free."""
    rng = random.Random()
    for _ in range(50):
        prefix = f"127.{rng.randint(64, 250)}.{rng.randint(1, 250)}"
        placement = plan(default_topology(), base_address=f"{prefix}.10", mode="per-workload")
        if not busy_sockets(placement) and all(can_bind(f"{prefix}.9", p) for p in (15010, 15014, 9090)):
            return f"{prefix}.10", f"{prefix}.9"
    raise RuntimeError("no free loopback block found")


def mesh_ctl(*args: str, timeout: float = 180) -> str:
    r = subprocess.run([sys.executable, "-m", "mesh_ctl", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"mesh_ctl {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


class OwnPrometheus:
    """A real Prometheus scraping the sidecars with the configuration `up` generates."""

    def __init__(self, binary: str, workdir: Path, sidecars: list[dict[str, Any]], host: str, interval: str) -> None:
        self.dir = workdir
        specs = [ProcessSpec(name=s["name"], workload=s["workload"], role="sidecar", argv=(),
                             addresses=s["addresses"], ready="tcp", ready_at=None) for s in sidecars]
        prom.write_targets(workdir, prom.target_groups(specs))
        self.config = prom.write_config(workdir, interval)
        self.binary = binary
        self.listen = f"{host}:9090"
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected = len(sidecars)

    def start(self) -> None:
        log = (self.dir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(prom.argv(self.binary, self.config, self.dir / "data", self.listen),
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()

        def scraped() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.listen}/api/v1/targets", timeout=2) as r:
                    active = json.loads(r.read())["data"]["activeTargets"]
            except OSError:
                return False
            return len(active) == self.expected and all(t["health"] == "up" for t in active)

        wait(scraped, 60, "Prometheus's first scrape of every sidecar")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def window_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU over ``seconds``, in % of one core."""
    before = {n: cpu_s(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {n: 100 * (cpu_s(p) - before[n]) / elapsed for n, p in pids.items()}


def per_scrape(pids: dict[str, int], address: str, count: int) -> dict[str, Any]:
    """CPU seconds per scrape of ``address`` for each process in ``pids`` (the sidecar serving it and, for the
    merged endpoint, the app whose metrics it fetches), net of their CPU without scrapes."""
    url = f"http://{address}/stats/prometheus"

    def cpu() -> dict[str, float]:
        return {n: cpu_s(p) for n, p in pids.items()}

    def idle_rate(seconds: float) -> dict[str, float]:
        c0, t0 = cpu(), time.monotonic()
        time.sleep(seconds)
        c1, elapsed = cpu(), time.monotonic() - t0
        return {n: (c1[n] - c0[n]) / elapsed for n in pids}

    size = 0
    with urllib.request.urlopen(url, timeout=10) as r:  # warm: connection code paths, first render
        size = len(r.read())
    before = idle_rate(5.0)
    c0, t0 = cpu(), time.monotonic()
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
    elapsed = time.monotonic() - t0
    c1 = cpu()
    after = idle_rate(5.0)
    per_process = {n: 1000 * ((c1[n] - c0[n]) - (before[n] + after[n]) / 2 * elapsed) / count for n in pids}
    return {"url": url, "scrapes": count, "bytes": size, "elapsed_s": elapsed,
            "baseline_cpu_pct": {n: 100 * (before[n] + after[n]) / 2 for n in pids},
            "cpu_ms_per_scrape_by_process": per_process, "cpu_ms_per_scrape": sum(per_process.values()),
            "wall_ms_per_scrape": 1000 * elapsed / count}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scrape_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=float, default=60.0, help="seconds per window (default 60)")
    p.add_argument("--repeat", type=int, default=3, help="pairs of windows without/with Prometheus (default 3)")
    p.add_argument("--interval", type=int, default=15, help="scrape interval in s (default 15, Istio's)")
    p.add_argument("--scrapes", type=int, default=1000, help="back-to-back scrapes for the per-scrape cost")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    binary = prom.find_binary()
    if binary is None:
        print(prom.missing_message(), file=sys.stderr)
        return 1
    if not (1 <= args.window <= 600 and 1 <= args.repeat <= 20 and 1 <= args.scrapes <= 100_000):
        p.error("--window 1..600, --repeat 1..20, --scrapes 1..100000")
    base, cp = free_base()
    with tempfile.TemporaryDirectory(prefix="scrape-cost-") as tmp:
        run_dir = Path(tmp) / "run"
        own = None
        try:
            mesh_ctl("up", "--detach", "--no-prometheus", "--run-dir", str(run_dir), "--base-address", base,
                     "--control-plane-address", cp)
            state = json.loads((run_dir / "state.json").read_text())
            sidecars = [x for x in state["processes"] if x["role"] == "sidecar"]
            apps = [x for x in state["processes"] if x["role"] == "app" and "metrics" in x["addresses"]]
            pids = {f"{x['workload']}-sidecar": x["pid"] for x in sidecars}
            pids |= {f"{x['workload']}-app": x["pid"] for x in apps}
            own = OwnPrometheus(binary, Path(tmp) / "prometheus", sidecars, cp, f"{args.interval}s")
            time.sleep(min(10.0, args.window))  # warm-up: connections made, certificates in, load steady
            without: list[dict[str, float]] = []
            with_: list[dict[str, float]] = []
            for i in range(args.repeat):
                print(f"pair {i + 1}/{args.repeat}: {args.window:g} s without Prometheus ...", file=sys.stderr)
                without.append(window_cpu(pids, args.window))
                own.start()
                print(f"pair {i + 1}/{args.repeat}: {args.window:g} s with Prometheus scraping every "
                      f"{args.interval} s ...", file=sys.stderr)
                assert own.proc is not None
                with_.append(window_cpu({**pids, "prometheus": own.proc.pid}, args.window))
                own.stop()
            client = next(x for x in sidecars if x["workload"] == "client")
            print(f"{args.scrapes} back-to-back scrapes of the client's sidecar ...", file=sys.stderr)
            # what Prometheus scrapes: the merged endpoint (15020: proxy + agent + the app's, fetched per scrape)
            target = client["addresses"].get("merged", client["addresses"]["prometheus"])
            one = per_scrape({n: pids[n] for n in ("client-sidecar", "client-app") if n in pids}, target,
                             args.scrapes)
        finally:
            if own is not None:
                own.stop()
            if (run_dir / "state.json").exists():
                mesh_ctl("down", "--run-dir", str(run_dir))
    result = report(pids, without, with_, one, args.interval)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def report(pids: dict[str, int], without: list[dict[str, float]], with_: list[dict[str, float]],
           one: dict[str, Any], interval: int) -> dict[str, Any]:
    def stat(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    rows = {}
    print(f"\nCPU (% of one core) under the mesh's load, {len(without)} window pair(s):")
    print(f"  {'PROCESS':<20} {'WITHOUT':>14} {'WITH (every ' + str(interval) + ' s)':>20} {'DIFFERENCE':>12}")
    for name in pids:
        a = stat([w[name] for w in without])
        b = stat([w[name] for w in with_])
        rows[name] = {"without_pct": a[0], "without_sd": a[1], "with_pct": b[0], "with_sd": b[1],
                      "difference_pct": b[0] - a[0]}
        print(f"  {name:<20} {a[0]:8.2f} ± {a[1]:<4.2f} {b[0]:13.2f} ± {b[1]:<4.2f} {b[0] - a[0]:+11.2f}")
    own = stat([w["prometheus"] for w in with_])
    rows["prometheus"] = {"with_pct": own[0], "with_sd": own[1]}
    print(f"  {'prometheus':<20} {'-':>14} {own[0]:13.2f} ± {own[1]:<4.2f}   (its own CPU, scraping "
          f"{sum(n.endswith('-sidecar') for n in pids)} workloads)")
    pct = one["cpu_ms_per_scrape"] / 1000 / interval * 100
    parts = ", ".join(f"{n} {ms:.2f} ms" for n, ms in one["cpu_ms_per_scrape_by_process"].items())
    print(f"\nper scrape of {one['url']} ({one['bytes']} bytes of exposition): {one['cpu_ms_per_scrape']:.2f} ms CPU "
          f"({parts}), {one['wall_ms_per_scrape']:.2f} ms wall ({one['scrapes']} scrapes; each process's CPU "
          "without scrapes subtracted)")
    print(f"at one scrape per {interval} s: {pct:.4f} % of a core per workload")
    return {"windows": rows, "per_scrape": one, "interval_s": interval, "pct_of_core_at_interval": pct}


if __name__ == "__main__":
    sys.exit(main())
