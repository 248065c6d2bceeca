"""The local supervisor behind `mesh_ctl up`: one process that owns every process of the mesh.

Lifecycle (:meth:`Supervisor.run`)::

    lock the run dir -> clean up a dead run's leftovers -> check every address:port is free
    -> bootstraps (validated as Envoy Bootstraps) -> start the control plane, wait for its API's /ready ->
    a bootstrap token per workload from its CA -> start apps, wait until they listen -> start sidecars,
    wait for /ready (they have their configuration and their certificate from the control plane) -> start
    the load clients (with `up --non-mesh-client`, also legacy-client: no sidecar), wait for their first report
    -> state.json "ready", print what runs where -> every second: summary.json + live summary (+ new
    tokens when half their lifetime is over)
    -> SIGINT / SIGTERM / SIGHUP -> stop clients, sidecars, apps, control plane (SIGTERM, grace, SIGKILL),
    print totals

The control plane, the apps and the sidecars are restarted when they die (as Kubernetes restarts istiod and a
kubelet a pod's containers): at once the first time (each child's pidfd wakes the loop the moment it exits),
then after a back-off that doubles up to :data:`RESTART_BACKOFF_MAX` while it keeps dying within
:data:`RESTART_STABLE_AFTER` seconds of its start. The new process replaces the old one's record in
state.json (same place, so the stop order holds) with ``restarts`` counted. Sidecars keep serving their
last configuration meanwhile and reconnect by themselves; the store on disk makes the restarted control
plane serve the same configuration. The sidecars' traffic ports are held here and handed to every pyproxy
started for them (:mod:`mesh_ctl.runtime.sockets`), so a restarting sidecar's callers wait instead of being
refused; a workload whose app died, or whose sidecar waits out a back-off, is reported not ready to the
control plane until its processes are all ready again (:mod:`mesh_ctl.runtime.readiness`).

Resource handling: children are spawned from this (main) thread with PDEATHSIG, so they die if the
supervisor is killed outright; ``finally`` stops whatever was started however :meth:`run` ends; the state
file is written after every start, so `mesh_ctl down` can find processes of a supervisor that crashed.

Logs (:mod:`mesh_ctl.runtime.logs`): each child's stdout and stderr are pipes; a thread per pipe appends what
the child writes to ``logs/<name>.log``, rotated at ``--log-max-size`` with ``--log-max-files`` files kept.
After stopping a child the supervisor reads its pipe to the end, so its last lines are in the log. The
supervisor's own lines go to ``logs/supervisor.log`` (rotated the same way) in both modes: in the foreground
as a copy of what it prints (without the live summary), detached as its only output.

Error handling: a process that fails to start or become ready stops the start-up; the message names the
workload and its log file and quotes the log's tail. A process that dies later is reported once and the
rest keeps running (`mesh_ctl status` shows it dead).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from mesh_ctl.addressing import Placement, listening
from mesh_ctl.client import ControlPlaneError
from mesh_ctl.runtime import control, procs
from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.identity import TOKEN_REFRESH_S, mint_tokens
from mesh_ctl.runtime.in_force import in_force
from mesh_ctl.runtime.logs import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, LogPump, RotatingLog, tail, text_stream
from mesh_ctl.runtime.prepare import StartupError, preflight, prepare
from mesh_ctl.runtime.readiness import Readiness
from mesh_ctl.runtime.render import control_plane_lines, hints, prometheus_lines, traffic_lines, where_table
from mesh_ctl.runtime.sockets import HeldSockets
from mesh_ctl.runtime.specs import ControlPlaneAddresses, NonMeshClient, ProcessSpec, build_specs
from mesh_ctl.runtime.state import (
    ProcessRecord,
    RunDir,
    State,
    SupervisorLock,
    WorkloadRecord,
    remove,
    set_store_aside,
    write_json,
    write_state,
)
from mesh_ctl.runtime.summary import Summary, parse_client_line, summary_line, summary_lines
from mesh_ctl.topology import Topology

RESTART_BACKOFF_FIRST = 0.0  # the first restart after a stable run is immediate
RESTART_BACKOFF_BASE = 1.0  # then 1, 2, 4 ... s while it keeps dying young
RESTART_BACKOFF_MAX = 30.0
RESTART_STABLE_AFTER = 30.0  # a process that ran this long resets the back-off
RESTART_POLL = 0.25  # how often the supervisor looks for a restartable process that exited (without pidfds)
READY_POLL = 0.05  # how often it probes a workload that is not ready, and retries telling the control plane
DRAIN_TIMEOUT = 5.0  # how long to wait, after a child exited, for the end of its output


class StartupInterruptedError(Exception):
    pass


def restart_delay(quick_crashes: int) -> float:
    """Seconds before restarting a process that died after ``quick_crashes`` consecutive short runs
    (1 = it died once: restart at once)."""
    if quick_crashes <= 1:
        return RESTART_BACKOFF_FIRST
    return min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_BASE * 2.0 ** (quick_crashes - 2))


@dataclass(frozen=True, slots=True)
class UpOptions:
    run_dir: RunDir
    topology: Topology
    placement: Placement
    run_id: str
    proxy_log_level: str = "info"
    ready_timeout: float = 30.0
    grace: float = 10.0  # per process; above pyproxy's (and Istio's) 5 s drain
    live_summary: bool = True
    foreground: bool = True  # False for the background supervisor of `up --detach`
    python: str = sys.executable
    control_plane: ControlPlaneAddresses | None = None  # None: `up --static`, no control plane
    port_offset: int = 0
    cert_ttl: str | None = None  # the sidecars' certificate lifetime (pyproxy --cert-ttl); None: 24 h
    non_mesh: NonMeshClient | None = None  # `up --non-mesh-client`: a load client with no sidecar
    log_max_bytes: int = DEFAULT_MAX_BYTES  # each file in logs/ (0: no rotation)
    log_max_files: int = DEFAULT_MAX_FILES  # files per log, the current one included
    fresh: bool = False  # `up --fresh`: set the config store of earlier runs aside, start with none
    prometheus: prom.PrometheusOptions | None = None  # None: `up --no-prometheus`, or none installed


@dataclass(eq=False, slots=True)
class Running:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    record: ProcessRecord
    log: Path
    output: RotatingLog
    pump: LogPump  # the child's output (stdout + stderr; a load client's stderr) -> ``output``
    summary: Summary | None = None
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False
    exit_reported: bool = False
    started: float = field(default_factory=time.monotonic)
    quick_crashes: int = 0  # consecutive exits soon after a start (restartable processes)
    restart_at: float | None = None  # when a restartable process that exited is started again
    pidfd: int | None = None  # readable once the process exited (restartable processes)


@dataclass(frozen=True, slots=True)
class _Exited:
    """Selector data of a child's pidfd."""

    running: Running


class Supervisor:
    def __init__(self, options: UpOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.o = options
        self.out = out
        self.err = err
        self._logs: dict[Path, RotatingLog] = {}  # every child's log, kept across restarts
        self._notes: list[str] = []  # said under the traffic lines of the banner (`up --fresh`)
        self._pumps: list[LogPump] = []  # every child's, restarted ones' included
        self._own_log: RotatingLog | None = None  # logs/supervisor.log
        self._tee: RotatingLog | None = None  # the foreground supervisor copies what it says there
        self._tty = out.isatty()
        self.groups: list[list[Running]] = []
        self.state: State | None = None
        self._signals: list[int] = []
        self._selector = selectors.DefaultSelector()
        self._wake: tuple[int, int] | None = None
        self._old_handlers: dict[int, Any] = {}
        self._drawn = 0
        self._env: dict[str, str] = {}
        self._held = HeldSockets()  # the sidecars' traffic ports, kept open across their restarts
        self._readiness: Readiness | None = None  # what the control plane is told (with a control plane)
        self._awaiting: set[str] = set()  # workloads not ready, until their processes are all ready again
        self._namespaces = {w.name: w.namespace for w in options.topology.workloads}
        self._tokens_at: float | None = None  # when the workloads' tokens were last minted
        self._tokens_warned = 0.0
        self._targets = prom.TargetFiles(prom.prometheus_dir(options.run_dir), self._namespaces,
                                         {w.name: dict(w.labels) for w in options.topology.workloads})

    # ----------------------------------------------------------------------------------------- run

    def run(self) -> int:
        """Start the mesh, supervise it until a signal, stop it. Returns the exit code."""
        lock = SupervisorLock(self.o.run_dir.lock)
        if not lock.acquire():
            state = control.running_supervisor(self.o.run_dir)
            pid = f" (supervisor pid {state.supervisor_pid})" if state else ""
            self._say(f"error: a mesh is already running from {self.o.run_dir.root}{pid}; "
                      "`mesh_ctl down` stops it", err=True)
            return 1
        self._install_signals()
        try:
            self._open_own_log()
            preflight(self.o.run_dir, self.o.placement, self.out, holding_lock=True,
                      control_plane=self.o.control_plane, prometheus=self.o.prometheus)
            if self.o.fresh:
                kept = set_store_aside(self.o.run_dir)
                if kept is not None:  # said in the banner (both modes: it is in the state's traffic lines)
                    self._notes.append(f"--fresh: the Istio resources of earlier runs were set aside in {kept} "
                                       f"(to restore them: mesh_ctl apply -f {kept / 'resources.yaml'})")
            bootstraps = prepare(self.o.run_dir, self.o.topology, self.o.placement, self.o.control_plane)
            self._start(bootstraps)
            self._announce()
            self._loop()
            return 0
        except (StartupError, control.MeshRunningError, ValueError, OSError) as e:
            self._say(f"error: {e}", err=True)
            return 1
        except StartupInterruptedError:
            self._say("interrupted during start-up; stopping what was started", err=True)
            return 130
        finally:
            self._stop_all()
            self._held.close()
            for r in self._all():
                self._unwatch_exit(r)
            self._finish()
            self._restore_signals()
            self._close_logs()
            lock.release()

    def _open_own_log(self) -> None:
        """``logs/supervisor.log``, once this supervisor holds the run dir (so it is the log's only writer).

        Detached, it is all this process prints: :attr:`out` and :attr:`err` write to it, and its stdout and
        stderr descriptors follow each new file, so that what Python prints on its own (a traceback) lands
        there too. In the foreground, :meth:`_say` copies its lines there."""
        o = self.o
        path = o.run_dir.log("supervisor")
        if o.foreground:
            log = self._tee = RotatingLog(path, o.log_max_bytes, o.log_max_files)
        else:
            log = RotatingLog(path, o.log_max_bytes, o.log_max_files, on_open=_redirect_stdout_stderr)
            self.out = self.err = text_stream(log)
        self._own_log = log
        mode = "foreground" if o.foreground else "detached"
        log.write(f"=== {_now()} supervisor pid {os.getpid()}, run {o.run_id} ({mode})\n".encode())

    def _child_log(self, name: str) -> RotatingLog:
        path = self.o.run_dir.log(name)
        log = self._logs.get(path)
        if log is None:
            log = self._logs[path] = RotatingLog(path, self.o.log_max_bytes, self.o.log_max_files)
        return log

    def _close_logs(self) -> None:
        """After :meth:`_stop_all`: whatever is still being read (a pipe held open by a grandchild) gets a last
        moment, then every log is closed."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for pump in self._pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
        for log in self._logs.values():
            log.close()
        if self._own_log is not None:
            dropped = sum(log.dropped for log in self._logs.values())
            if dropped:
                self._say(f"warning: {dropped} bytes of output could not be written to {self.o.run_dir.logs}",
                          err=True)
            self._own_log.close()

    def _start(self, bootstraps: dict[str, Path]) -> None:
        o = self.o
        self.state = State(
            run_id=o.run_id, run_dir=str(o.run_dir.root), supervisor_pid=os.getpid(),
            supervisor_argv=procs.cmdline(os.getpid()) or [],
            supervisor_start_time=procs.start_time(os.getpid()),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"), address_mode=o.placement.mode,
            workloads=_workload_records(o.topology, o.placement, o.non_mesh),
            traffic=traffic_lines(o.topology, o.placement, o.non_mesh),
            services={s.name: [b.name for b in s.subsets] for s in o.topology.services},
        )
        write_state(o.run_dir, self.state)
        specs = build_specs(o.topology, o.placement, bootstraps, python=o.python,
                            proxy_log_level=o.proxy_log_level, control_plane=o.control_plane, run_dir=o.run_dir,
                            port_offset=o.port_offset, cert_ttl=o.cert_ttl, non_mesh=o.non_mesh)
        env = self._env = procs.child_env()
        if o.control_plane is not None:
            self._readiness = Readiness(o.control_plane.api, o.run_dir.api_token)
        if o.prometheus is not None:  # last: it starts with every target known, and stops first
            self._prepare_prometheus(o.prometheus)
            specs = [*specs, [prom.process_spec(o.prometheus, o.run_dir)]]
            self.state.prometheus = o.prometheus.url
        for group_specs in specs:
            group: list[Running] = []
            self.groups.append(group)
            for spec in group_specs:
                group.append(self._spawn(spec, env))
                self.state.processes.append(group[-1].record)
                write_state(o.run_dir, self.state)
                self._refresh_targets()
            self._wait_ready(group)
            if o.control_plane is not None and group[0].spec.role == "control-plane":
                # What is in force: the split and policies of the stored resources, not only the topology's.
                target = o.non_mesh.target_workload if o.non_mesh is not None else None
                force = in_force(o.topology, _stored_resources(o.control_plane.api, o.run_dir.api_token), target)
                self.state.traffic = [*traffic_lines(o.topology, o.placement, o.non_mesh, force), *force.lines,
                                      *self._notes]
                self._mint_tokens()
        self.state.status = "ready"
        write_state(o.run_dir, self.state)

    def _prepare_prometheus(self, options: prom.PrometheusOptions) -> None:
        """prometheus.yml and empty target files, before anything starts (filled in as processes start)."""
        pdir = prom.prometheus_dir(self.o.run_dir)
        token = self.o.run_dir.api_token if self.o.control_plane is not None else None
        prom.write_config(pdir, options.scrape_interval, token)
        self._refresh_targets()

    def _refresh_targets(self) -> None:
        """Keep Prometheus's target files (file-based service discovery) equal to the processes supervised
        now: every started process that is alive or will be restarted. Rewritten (atomically) only when that
        changes: a process started or restarted at other addresses, a load client gone for good."""
        if self.o.prometheus is not None:
            self._targets.update(r.spec for r in self._all() if r.spec.restart or r.popen.poll() is None)

    def _mint_tokens(self) -> None:
        """A bootstrap token per workload, from the control plane's CA, for the sidecars' identity agents."""
        assert self.o.control_plane is not None
        try:
            mint_tokens(self.o.control_plane.api, self.o.topology.workloads, self.o.run_dir.tokens,
                        self.o.run_dir.api_token)
        except ControlPlaneError as e:
            raise StartupError(f"the control plane did not issue the workloads' bootstrap tokens: {e}") from None
        self._tokens_at = time.monotonic()

    def _refresh_tokens(self) -> None:
        """Mint new tokens when half their lifetime is over (the kubelet's job in Kubernetes). A control plane
        that does not answer right now is asked again at the next tick."""
        if self._tokens_at is None or time.monotonic() - self._tokens_at < TOKEN_REFRESH_S:
            return
        try:
            self._mint_tokens()
        except StartupError as e:
            if time.monotonic() - self._tokens_warned > 60:
                self._tokens_warned = time.monotonic()
                self._say(f"warning: {e}; trying again", err=True)

    def _spawn(self, spec: ProcessSpec, env: dict[str, str]) -> Running:
        output = self._child_log(spec.name)
        log = output.path
        fds = self._held.fds_for(spec)
        argv = [*spec.argv, *(arg for fd in fds for arg in ("--listen-fd", str(fd)))]
        output.write(f"=== {_now()} {' '.join(argv)}\n".encode())
        popen = procs.spawn(argv, log=None, cwd=self.o.run_dir.root, env=env, stdout_pipe=spec.reports,
                            pass_fds=fds)
        pipe = popen.stderr if spec.reports else popen.stdout
        assert pipe is not None
        pump = LogPump(pipe, output, spec.name)
        self._pumps.append(pump)
        record = ProcessRecord(
            name=spec.name, workload=spec.workload, role=spec.role, pid=popen.pid, argv=argv,
            start_time=procs.start_time(popen.pid), addresses=dict(spec.addresses), log=str(log),
        )
        running = Running(spec, popen, record, log, output, pump)
        if spec.restart:
            self._watch_exit(running)
        if spec.reports:
            assert popen.stdout is not None
            os.set_blocking(popen.stdout.fileno(), False)
            running.summary = Summary(client=spec.workload, target=_target(spec), note=spec.note)
            self._selector.register(popen.stdout, selectors.EVENT_READ, running)
        return running

    def _watch_exit(self, r: Running) -> None:
        """Wake the loop the moment ``r`` exits (a pidfd in the selector), so that it is restarted at once
        rather than at the next poll. Without pidfds (Linux < 5.3) the poll every RESTART_POLL s does it."""
        try:
            r.pidfd = os.pidfd_open(r.popen.pid)
        except (AttributeError, OSError):
            return
        self._selector.register(r.pidfd, selectors.EVENT_READ, _Exited(r))

    def _unwatch_exit(self, r: Running) -> None:
        if r.pidfd is not None:
            self._selector.unregister(r.pidfd)
            os.close(r.pidfd)
            r.pidfd = None

    def _wait_ready(self, group: list[Running]) -> None:
        deadline = time.monotonic() + self.o.ready_timeout
        pending = list(group)
        while pending:
            if self._signals:
                raise StartupInterruptedError
            for r in list(pending):
                code = r.popen.poll()
                if code is not None:
                    r.pump.join(DRAIN_TIMEOUT)  # its last words, into the log the message quotes
                    raise StartupError(_failure(r, f"exited with code {code} before it was ready"))
                if _is_ready(r):
                    pending.remove(r)
            if pending and time.monotonic() > deadline:
                raise StartupError(_failure(pending[0], f"was not ready after {self.o.ready_timeout:g} s"))
            self._pump(0.1 if pending else 0.0)

    def _announce(self) -> None:
        assert self.state is not None
        self._say(f"minimesh is up: run {self.o.run_id}, supervisor pid {os.getpid()}, "
                  f"{self.o.placement.mode} addresses\n")
        st = self.state
        for line in [*control_plane_lines(st), *prometheus_lines(st), *where_table(st), "", *st.traffic, "",
                     *hints(st, st.run_dir)]:
            self._say(line)
        if self.o.foreground:
            self._say("\nCtrl-C stops the mesh.\n")

    # ----------------------------------------------------------------------------------------- loop

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._signals:
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick = now + 1.0
            self._restart_exited()
            self._report_readiness()
            poll = READY_POLL if self._awaiting or (self._readiness and self._readiness.pending) else RESTART_POLL
            self._pump(max(0.0, min(next_tick, now + poll) - time.monotonic()))

    def _tick(self) -> None:
        for r in self._all():
            code = r.popen.poll()
            if code is not None and not r.exit_reported and not r.spec.restart:
                r.exit_reported = True
                self._say(f"warning: {r.spec.name} (pid {r.popen.pid}) exited with code {code}; log: {r.log}",
                          err=True)
        self._refresh_tokens()
        self._refresh_targets()
        self._write_summary()
        if self.o.live_summary:
            self._draw()

    def _restart_exited(self) -> None:
        """Start again each restartable process that exited, once its back-off is over."""
        for group in self.groups:
            for i, r in enumerate(group):
                if not r.spec.restart:
                    continue
                code = r.popen.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if r.restart_at is None:
                    lived = now - r.started
                    r.quick_crashes = r.quick_crashes + 1 if lived < RESTART_STABLE_AFTER else 1
                    delay = restart_delay(r.quick_crashes)
                    r.restart_at = now + delay
                    self._say(f"warning: {r.spec.name} (pid {r.popen.pid}) exited with code {code} after "
                              f"{lived:.1f} s; restarting it{f' in {delay:g} s' if delay else ''}; log: {r.log}",
                              err=True)
                    if r.spec.role == "app" or (r.spec.role == "sidecar" and delay):
                        self._not_ready(r.spec.workload)
                if now < r.restart_at:
                    continue
                group[i] = self._respawn(r)
                if r.spec.role == "control-plane" and self._readiness is not None:
                    self._readiness.control_plane_restarted()

    def _not_ready(self, workload: str) -> None:
        """``workload`` leaves the load-balancing set until its processes are all ready again."""
        namespace = self._namespaces.get(workload)
        if self._readiness is None or namespace is None:
            return
        if self._readiness.is_ready(namespace, workload):
            self._say(f"{workload}: not ready; out of the load-balancing set until it is back", err=True)
        self._readiness.set(namespace, workload, False)
        self._awaiting.add(workload)

    def _report_readiness(self) -> None:
        """Workloads whose processes are all ready again are ready; the control plane is told what changed."""
        if self._readiness is None:
            return
        for workload in list(self._awaiting):
            processes = [r for r in self._all() if r.spec.workload == workload and r.spec.restart]
            if all(r.popen.poll() is None and _is_ready(r) for r in processes):
                self._awaiting.discard(workload)
                self._readiness.set(self._namespaces[workload], workload, True)
                self._say(f"{workload}: ready again; back in the load-balancing set", err=True)
        self._readiness.sync()

    def _respawn(self, old: Running) -> Running:
        assert self.state is not None
        new = self._spawn(old.spec, self._env)
        new.quick_crashes = old.quick_crashes
        new.record.restarts = old.record.restarts + 1
        self.state.processes = [new.record if p is old.record else p for p in self.state.processes]
        write_state(self.o.run_dir, self.state)
        self._refresh_targets()
        self._say(f"{old.spec.name} restarted (pid {new.popen.pid}, restart {new.record.restarts})", err=True)
        return new

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for client output or a signal; parse whatever arrived."""
        for key, _ in self._selector.select(timeout):
            if key.data is None:  # the signal wake-up pipe
                with contextlib.suppress(BlockingIOError):
                    os.read(key.fd, 512)
                continue
            if isinstance(key.data, _Exited):  # the loop restarts it next (_restart_exited)
                self._unwatch_exit(key.data.running)
                continue
            self._read_reports(key.data)

    def _read_reports(self, r: Running) -> None:
        assert r.popen.stdout is not None and r.summary is not None
        if r.eof:
            return
        fd = r.popen.stdout.fileno()
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:  # EOF: the client is gone
                r.eof = True
                self._selector.unregister(r.popen.stdout)
                r.popen.stdout.close()
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            return
        r.output.write(data)  # keep the reports in the client's log too
        r.buffer += data
        *lines, rest = r.buffer.split(b"\n")
        r.buffer = bytearray(rest)
        for line in lines:
            report = parse_client_line(bytes(line))
            if report is not None:
                r.summary.update(report)

    # ----------------------------------------------------------------------------------------- output

    def _summaries(self) -> list[Summary]:
        return [r.summary for r in self._all() if r.summary is not None]

    def _write_summary(self) -> None:
        write_json(self.o.run_dir.summary, {
            "run_id": self.o.run_id,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "clients": [s.to_json() for s in self._summaries()],
        })

    def _draw(self) -> None:
        if self._tty:
            self._undraw()
            lines = [line for s in self._summaries() for line in summary_lines(s)]
            self._emit("".join(f"{line}\x1b[K\n" for line in lines))
            self._drawn = len(lines)
        else:
            self._emit("".join(summary_line(s) + "\n" for s in self._summaries()))

    def _undraw(self) -> None:
        if self._drawn:
            self._emit(f"\x1b[{self._drawn}F\x1b[J")  # back to the block's first line, clear below
            self._drawn = 0

    def _say(self, text: str, *, err: bool = False) -> None:
        if err:
            self._undraw()
        self._emit(text + "\n", err=err)
        if self._tee is not None:
            self._tee.write(f"{text}\n".encode("utf-8", "replace"))

    def _emit(self, text: str, *, err: bool = False) -> None:
        stream = self.err if err else self.out
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            # The terminal or pipe went away (hang-up, closed reader): keep supervising, silently, so the
            # shutdown still runs to the end.
            self.out = self.err = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the supervisor
            self._tty = False

    # ----------------------------------------------------------------------------------------- stopping

    def _all(self) -> list[Running]:
        return [r for group in self.groups for r in group]

    def _stop_all(self) -> None:
        """Stop every started process, last started first: SIGTERM, up to ``grace`` s, then SIGKILL.

        One at a time, so each process sees its downstream already gone (the client before its sidecar,
        the client's sidecar before the payment sidecars, ...) and has nothing left to drain. Another
        Ctrl-C while stopping skips the grace periods: whatever is left is killed at once.
        """
        if self.state is not None and self._all():
            self.state.status = "stopping"
            write_state(self.o.run_dir, self.state)
        signals_before = len(self._signals)
        for r in reversed(self._all()):
            if r.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    r.popen.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + self.o.grace
                while r.popen.poll() is None and time.monotonic() < deadline:
                    if len(self._signals) > signals_before:  # another Ctrl-C: do not wait out the grace
                        break
                    self._pump(0.02)
                if r.popen.poll() is None:
                    why = ("another signal arrived" if len(self._signals) > signals_before
                           else f"it did not stop within {self.o.grace:g} s of SIGTERM")
                    self._say(f"warning: killing {r.spec.name} (pid {r.popen.pid}): {why}", err=True)
                procs.stop_child(r.popen, 0.0)  # SIGKILL if still there, and reap
            if r.summary is not None:
                self._read_reports(r)  # the final report, if the client printed one
            if not r.pump.join(DRAIN_TIMEOUT):  # everything it wrote, into its log
                self._say(f"warning: the output of {r.spec.name} (pid {r.popen.pid}) is still open after it "
                          f"exited (a process it started?); {r.log} may miss its last lines", err=True)

    def _finish(self) -> None:
        summaries = self._summaries()
        if summaries:
            self._write_summary()
            self._undraw()
            self._say("\nfinal totals:")
            for s in summaries:
                self._say("  " + summary_line(s))
        if self.state is not None:
            remove(self.o.run_dir.state)
            self._say(f"minimesh stopped (run {self.o.run_id})")

    # ----------------------------------------------------------------------------------------- signals

    def _install_signals(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake = (r, w)
        self._selector.register(r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
        self._selector.close()


# --------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _redirect_stdout_stderr(fd: int) -> None:
    """Point this process's stdout and stderr at ``fd`` (the detached supervisor's current log file)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _workload_records(topology: Topology, placement: Placement,
                      non_mesh: NonMeshClient | None = None) -> list[WorkloadRecord]:
    out = []
    for w in topology.workloads:
        at = placement.of(w.name)
        out.append(WorkloadRecord(
            name=w.name, namespace=w.namespace, app=w.app, version=w.version,
            service_account=w.service_account,
            spiffe_id=topology.spiffe_id(w), address=at.address,
            ports={"app": at.app, "outbound": at.outbound, "inbound": at.inbound, "admin": at.admin,
                   "prometheus": at.prometheus, "merged": at.merged, "metrics": at.metrics},
        ))
    if non_mesh is not None:  # no sidecar, no identity; it listens only for its own metrics
        metrics_port = int(non_mesh.metrics.rpartition(":")[2])
        out.append(WorkloadRecord(
            name=non_mesh.name, namespace=non_mesh.namespace, app="payment-client", version=None,
            service_account="", spiffe_id="", address=non_mesh.address,
            ports={"app": None, "outbound": None, "inbound": None, "admin": None, "prometheus": None,
                   "merged": None, "metrics": metrics_port},
            in_mesh=False,
        ))
    return out


def _stored_resources(api: str, token_file: Path) -> list[dict[str, Any]]:
    """The Istio resources in the control plane's store (empty if it cannot tell: this is only a note)."""
    from mesh_ctl.client import Client, ControlPlaneError, Endpoint

    try:
        items = Client(Endpoint(api, "mesh_ctl up", token_file=token_file), timeout=5.0).resources().get("items", [])
    except ControlPlaneError:
        return []
    return [i for i in items if isinstance(i, dict)]


def _target(spec: ProcessSpec) -> str:
    """What a load client calls: the service's authority through its sidecar, or, for the client outside
    the mesh, the address it dials itself (and the authority)."""
    argv = list(spec.argv)
    authority = argv[argv.index("--authority") + 1] if "--authority" in argv else ""
    if spec.note or not authority:
        target = spec.addresses.get("target", "")
        return f"{target} ({authority})" if authority and target else target or authority
    return authority


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _is_ready(r: Running) -> bool:
    spec = r.spec
    if spec.ready == "first-report":
        return r.summary is not None and r.summary.reports > 0
    assert spec.ready_at is not None
    host, port = split_host_port(spec.ready_at)
    if spec.ready == "tcp":
        return listening(host, port)
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", spec.ready_path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _failure(r: Running, what: str) -> str:
    quoted = "\n".join(f"    {line}" for line in tail(r.log, 15)) or "    (empty)"
    return (f"{r.spec.workload}: {r.spec.name} ({' '.join(r.spec.argv[1:3])}) {what}.\n"
            f"  log: {r.log}\n  last lines:\n{quoted}")
