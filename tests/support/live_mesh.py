"""A mesh started the way a user starts it (`mesh_ctl up --detach` on loopback addresses of its own), driven
through the CLI and the control plane's API, and a recording load generator, for the acceptance tests of the
control plane (``test_traffic_shifting``) and of security (``test_security``).

:class:`Load` calls the payment service through the client's sidecar (grpcio, one channel, open loop) and
records every call (:class:`Call`); :class:`Mesh` knows the run dir, runs `mesh_ctl` against it, waits until
every sidecar ACKed the latest configuration, reads the workloads' Prometheus metrics and stops everything it
saw by PID.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from mesh_ctl.addressing import busy_sockets, can_bind, plan
from mesh_ctl.client import Client, ControlPlaneError, Endpoint
from mesh_ctl.runtime import control
from mesh_ctl.runtime import procs as rprocs
from mesh_ctl.runtime.prometheus import PROMETHEUS_PORT
from mesh_ctl.runtime.specs import ControlPlaneAddresses
from mesh_ctl.runtime.state import RunDir, State, read_state
from mesh_ctl.topology import default_topology
from payment_service import api
from payment_service.loadgen import version_of
from payment_service.proto import payment_pb2 as pb
from payment_service.rate import RateSchedule
from tests.support.procs import REPO_ROOT

AUTHORITY = "payment:8080"
LOAD_RPS = 220.0
CALL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Call:
    seq: int
    start: float  # time.monotonic() when the call was started
    end: float
    status: str  # gRPC status name
    version: str  # the x-payment-version response header ("unknown" if none)
    reply_version: str  # the reply's version field ("" on failure)
    served_by: str  # the reply's served_by field
    canary: bool  # sent with x-canary: true


class Load:
    """Open-loop load (``rps`` calls per second, up to ``concurrency`` in flight) on ONE channel to ``target``,
    every call recorded. ``canary(seq)`` decides which calls carry ``x-canary: true``. Use as a context
    manager: it stops, waits for calls in flight (each has a 5 s deadline) and closes the channel."""

    def __init__(self, target: str, rps: float = LOAD_RPS, concurrency: int = 16,
                 canary: Callable[[int], bool] | None = None) -> None:
        self.channel = grpc.insecure_channel(target, options=api.channel_options(AUTHORITY))
        self.stub = api.Stub(self.channel)
        self.rps = rps
        self.canary = canary or (lambda _: False)
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._stop = threading.Event()
        self._schedule: RateSchedule | None = None
        self._next = 0
        self._threads = [threading.Thread(target=self._worker, daemon=True, name=f"load-{i}")
                         for i in range(concurrency)]

    def __enter__(self) -> Load:
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self._schedule = RateSchedule(self.rps, time.monotonic())
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CALL_TIMEOUT + 5)
        self.channel.close()

    @property
    def calls(self) -> list[Call]:
        """Every finished call so far, in start order."""
        with self._lock:
            return sorted(self._calls, key=lambda c: c.start)

    def started_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for c in self._calls if c.start >= t)

    def _worker(self) -> None:
        assert self._schedule is not None
        while not self._stop.is_set():
            with self._lock:
                due = self._schedule.next_slot(time.monotonic())
                seq = self._next
                self._next += 1
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._call(seq)

    def _call(self, seq: int) -> None:
        canary = self.canary(seq)
        metadata = (("x-canary", "true"),) if canary else ()
        request = pb.ChargeRequest(customer_id=f"cust-{seq % 10}", amount=1000 + seq % 9000, currency="EUR")
        start = time.monotonic()
        try:
            reply, call = self.stub.Charge.with_call(request, timeout=CALL_TIMEOUT, metadata=metadata)
            status, version = "OK", version_of(call.initial_metadata())
            reply_version, served_by = reply.version, reply.served_by
        except grpc.RpcError as e:
            failed: Any = e  # also the finished grpc.Call
            status = e.code().name
            version = version_of(failed.initial_metadata(), failed.trailing_metadata())
            reply_version, served_by = "", f"{status}: {e.details()}"
        record = Call(seq, start, time.monotonic(), status, version, reply_version, served_by, canary)
        with self._lock:
            self._calls.append(record)

def failures(calls: Sequence[Call]) -> list[Call]:
    return [c for c in calls if c.status != "OK"]

def free_base_address() -> str:
    """A 127.x.y.10 where every socket of the default mesh, and the control plane's and Prometheus's on
    127.x.y.9, can be bound right now."""
    rng = random.Random()
    for _ in range(50):
        base = f"127.{rng.randint(64, 250)}.{rng.randint(1, 250)}.10"
        cp = ControlPlaneAddresses.for_offset(base.rsplit(".", 1)[0] + ".9", 0)
        if not busy_sockets(plan(default_topology(), base_address=base, mode="per-workload")) and all(
                can_bind(h, p) for _, _, h, p in [*cp.sockets(), ("prometheus", "web", cp.host, PROMETHEUS_PORT)]):
            return base
    raise RuntimeError("no free loopback addresses found")


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Poll ``check`` until true; returns how long it took (AssertionError after ``timeout`` s)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout} s: {what}")
        time.sleep(interval)
    return time.monotonic() - started


class Mesh:
    """The module's mesh: the CLI against its run dir, its control plane's API, its apps and sidecars."""

    def __init__(self, run_dir: Path, work: Path) -> None:
        self.run_dir = run_dir
        self.work = work
        self.seen: dict[int, tuple[list[str], int | None]] = {}  # every pid we saw, to clean up

    # -------------------------------------------------------------------------------------- the CLI

    def cli(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "mesh_ctl", *args, "--run-dir", str(self.run_dir)],
                              capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
        if check is not None:
            assert done.returncode == check, (f"mesh_ctl {' '.join(args)}: exit {done.returncode}\n"
                                              f"{done.stdout}{done.stderr}")
        return done

    def write(self, name: str, text: str) -> Path:
        path = self.work / name
        path.write_text(text)
        return path

    def apply(self, name: str, text: str) -> str:
        """`mesh_ctl apply -f <file>`; waits until every sidecar runs the result."""
        out = self.cli("apply", "-f", str(self.write(name, text))).stdout
        self.wait_converged()
        return out

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = json.loads(self.cli("status", "-o", "json").stdout)
        return st

    # -------------------------------------------------------------------------------------- the control plane

    def api(self) -> Client:
        """The management API at the address `up` gave it (not found through control-plane.json: while the
        control plane restarts, that lookup falls back to the default 127.0.0.1:15014, someone else's)."""
        cp = next(p for p in self.state().processes if p.role == "control-plane")
        return Client(Endpoint(cp.addresses["api"], "the test's mesh", token_file=self.run_dir / "api-token"),
                      timeout=10)

    def proxy_status(self) -> dict[str, Any]:
        return self.api().proxy_status()

    def converged(self) -> bool:
        """The last stored revision is pushed and every one of the 3 sidecars ACKed everything it was sent."""
        try:
            ps = self.proxy_status()
        except ControlPlaneError:  # not reachable (yet)
            return False
        statuses = {t["status"] for p in ps["proxies"] for t in p["types"]}
        # Each proxy's own revision too: the pushed revision is installed before its translation ends (a big
        # configuration takes seconds), and until then the proxies are SYNCED with the previous one.
        revisions = {str(p["revision"]) for p in ps["proxies"]}
        return (str(ps["pushed_revision"]) == str(ps["store_revision"]) and not ps["debounce_pending"]
                and revisions == {str(ps["store_revision"])}
                and len(ps["proxies"]) == 3 and statuses <= {"SYNCED", "NOT SENT"})

    def wait_converged(self, timeout: float = 20.0) -> float:
        return wait_until("every sidecar runs the latest configuration", self.converged, timeout)

    def versions(self) -> dict[str, dict[str, str | None]]:
        """proxy name -> type -> the version it ACKed."""
        return {p["name"]: {t["type"]: t["acked_version"] for t in p["types"]} for p in self.proxy_status()["proxies"]}

    # -------------------------------------------------------------------------------------- processes

    def state(self) -> State:
        state = read_state(RunDir(self.run_dir))
        assert state is not None, "the mesh is not running"
        for p in [*state.processes]:
            self.seen[p.pid] = (p.argv, p.start_time)
        self.seen[state.supervisor_pid] = (state.supervisor_argv, state.supervisor_start_time)
        return state

    def workload(self, name: str) -> dict[str, Any]:
        return next(w for w in self.status()["workloads"] if w["name"] == name)

    def client_target(self) -> str:
        return str(self.workload("client")["sidecar"]["addresses"]["outbound"])

    def prometheus(self, workload: str) -> str:
        w = self.workload(workload)
        with urllib.request.urlopen(f"http://{w['address']}:{w['ports']['prometheus']}/stats/prometheus",
                                    timeout=5) as r:
            return str(r.read().decode())

    def up(self, *options: str) -> None:
        """`mesh_ctl up --detach` on loopback addresses of its own (workloads on 127.x.y.10+, the control plane
        on 127.x.y.9) with ``options``; fails the test if it does not come up. Call :meth:`stop` in any case."""
        base = free_base_address()
        done = subprocess.run(
            [sys.executable, "-m", "mesh_ctl", "up", "--detach", "--run-dir", str(self.run_dir), "--base-address",
             base, "--control-plane-address", base.rsplit(".", 1)[0] + ".9", "--ready-timeout", "30", *options],
            capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, check=False)
        assert done.returncode == 0, f"{done.stdout}{done.stderr}"
        self.state()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.state()
        control.down(RunDir(self.run_dir), io.StringIO(), timeout=60)
        for pid, (argv, started) in self.seen.items():
            rprocs.terminate(pid, argv, started, 2.0)


@contextlib.contextmanager
def running_mesh(tmp_path_factory: Any, name: str, *up_options: str) -> Iterator[Mesh]:
    """A module's mesh: `up` in a directory of its own with ``up_options``, stopped whatever happens."""
    work = tmp_path_factory.mktemp(name)
    m = Mesh(work / "run", work)
    try:
        m.up(*up_options)
        yield m
    finally:
        m.stop()


_SAMPLE = re.compile(r"^istio_requests_total\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def requests_total(text: str, **labels: str) -> float:
    """Sum of ``istio_requests_total`` over the series whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and labels.items() <= dict(_LABEL.findall(m.group(1))).items():
            total += float(m.group(2))
    return total
