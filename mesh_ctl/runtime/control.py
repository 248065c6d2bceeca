"""Acting on a mesh from outside its supervisor: start it detached, stop it, report on it.

Everything here works from the run dir alone (state file, lock, summary), so it works from any shell, and
after the supervisor died: the processes recorded in the state file are recognised by PID + argv + start
time (``procs.is_ours``) and only those are ever signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mesh_ctl.addressing import can_bind
from mesh_ctl.runtime import procs
from mesh_ctl.runtime.logs import generation, tail
from mesh_ctl.runtime.render import (
    control_plane_line,
    control_plane_lines,
    control_plane_record,
    hints,
    prometheus_line,
    prometheus_lines,
    prometheus_record,
    where_table,
)
from mesh_ctl.runtime.state import (
    ProcessRecord,
    RunDir,
    State,
    lock_is_held,
    read_json,
    read_state,
    remove,
)
from mesh_ctl.runtime.summary import Summary, error_lines, summary_line

PORTS_FREE_TIMEOUT = 10.0


class MeshRunningError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- finding


def running_supervisor(run_dir: RunDir) -> State | None:
    """The state of the mesh running from ``run_dir``, or None if its supervisor is not alive."""
    state = read_state(run_dir)
    if state is not None and supervisor_alive(state):
        return state
    return None


def supervisor_alive(state: State) -> bool:
    return procs.is_ours(state.supervisor_pid, state.supervisor_argv, state.supervisor_start_time)


def ensure_not_running(run_dir: RunDir) -> None:
    """Raise :class:`MeshRunningError` if a supervisor holds the run dir (from outside that supervisor)."""
    if lock_is_held(run_dir.lock):
        state = read_state(run_dir)
        who = f" (run {state.run_id}, supervisor pid {state.supervisor_pid})" if state else ""
        raise MeshRunningError(
            f"a mesh is already running from {run_dir.root}{who}.\nStop it with `mesh_ctl down --run-dir "
            f"{run_dir.root}`, or start another one with a different --run-dir and --base-address / "
            "--port-offset.")


def state_ports(state: State) -> list[tuple[str, int]]:
    out = []
    for p in state.processes:
        for role, address in p.addresses.items():
            if role != "target":  # the client dials this one; it does not listen
                host, _, port = address.rpartition(":")
                out.append((host.strip("[]"), int(port)))
    return out


def busy_ports(state: State) -> list[tuple[str, int]]:
    return [(h, p) for h, p in state_ports(state) if not can_bind(h, p)]


# --------------------------------------------------------------------------------------------- stopping


def reap_leftovers(state: State, grace: float) -> tuple[list[ProcessRecord], list[ProcessRecord]]:
    """Stop every recorded process that is still ours, last started first. Returns (stopped, survivors)."""
    stopped: list[ProcessRecord] = []
    survivors: list[ProcessRecord] = []
    for p in reversed(state.processes):
        if procs.is_ours(p.pid, p.argv, p.start_time):
            (stopped if procs.terminate(p.pid, p.argv, p.start_time, grace) else survivors).append(p)
    return stopped, survivors


def clean_stale(run_dir: RunDir, grace: float = 5.0) -> list[str]:
    """After a supervisor died: stop what it left running, wait for its ports, remove its state file.

    Call only when no supervisor holds the run dir. Returns what was done, for the user.
    """
    state = read_state(run_dir)
    if state is None:
        return []
    notes = [f"note: run {state.run_id} in {run_dir.root} was not stopped cleanly (supervisor pid "
             f"{state.supervisor_pid} is gone); cleaning up"]
    stopped, survivors = reap_leftovers(state, grace)
    notes += [f"  stopped leftover {p.name} (pid {p.pid})" for p in stopped]
    if survivors:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in survivors)
        raise MeshRunningError(f"could not stop leftover processes of run {state.run_id}: {names}")
    procs.wait_until(lambda: not busy_ports(state), PORTS_FREE_TIMEOUT)
    remove(run_dir.state)
    return notes


def down(run_dir: RunDir, out: TextIO, timeout: float = 120.0, grace: float = 5.0) -> int:
    """Stop the mesh running from ``run_dir`` and wait until its processes are gone and its ports free."""
    state = read_state(run_dir)
    if state is None and lock_is_held(run_dir.lock):  # a supervisor still starting: wait for its state
        procs.wait_until(lambda: run_dir.state.exists() or not lock_is_held(run_dir.lock), 10.0)
        state = read_state(run_dir)
    if state is None:
        print(f"no mesh is running from {run_dir.root}", file=out)
        return 0
    pid = state.supervisor_pid
    if supervisor_alive(state):
        print(f"stopping run {state.run_id} (supervisor pid {pid}) ...", file=out, flush=True)
        log = run_dir.log("supervisor")
        seen = _position(log)
        os.kill(pid, signal.SIGTERM)
        if not procs.wait_until(lambda: not supervisor_alive(state), timeout, 0.1):
            print(f"warning: supervisor pid {pid} did not stop within {timeout:g} s; killing it", file=out)
            procs.terminate(pid, state.supervisor_argv, state.supervisor_start_time, 0.0)
        for line in _new_lines(log, seen):  # what a background supervisor had to say while stopping
            if line.startswith(("warning:", "error:")):
                print(f"  {line}", file=out)
    else:
        print(f"supervisor pid {pid} of run {state.run_id} is gone; stopping what it left", file=out)
    stopped, survivors = reap_leftovers(state, grace)
    for p in stopped:
        print(f"  stopped leftover {p.name} (pid {p.pid})", file=out)
    procs.wait_until(lambda: not busy_ports(state), PORTS_FREE_TIMEOUT)
    busy = busy_ports(state)
    remove(run_dir.state)
    for s in _summaries(run_dir, state.run_id):
        print("final totals: " + summary_line(s), file=out)
    ok = True
    if survivors:
        ok = False
        print("error: still running: " + ", ".join(f"{p.name} (pid {p.pid})" for p in survivors), file=out)
    if busy:
        ok = False
        print("error: still in use: " + ", ".join(f"{h}:{p}" for h, p in busy), file=out)
    if ok:
        print(f"stopped; all {len(state.processes)} processes are gone and their ports are free", file=out)
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------- status


def status(run_dir: RunDir) -> dict[str, Any]:
    """Everything `mesh_ctl status` shows, as JSON-able data."""
    state = read_state(run_dir)
    if state is None:
        last = [s.to_json() for s in _summaries(run_dir, None)]
        return {"run_dir": str(run_dir.root), "running": False, "last_summary": last}
    alive = supervisor_alive(state)
    by_role = {(p.workload, p.role): p for p in state.processes}
    workloads = []
    for w in state.workloads:
        entry: dict[str, Any] = {
            "name": w.name, "namespace": w.namespace, "app_kind": w.app, "version": w.version,
            "service_account": w.service_account, "spiffe_id": w.spiffe_id, "address": w.address,
            "ports": w.ports, "in_mesh": w.in_mesh,
        }
        for role in ("app", "sidecar"):
            p = by_role.get((w.name, role))
            entry[role] = None if p is None else {
                "pid": p.pid, "alive": procs.is_ours(p.pid, p.argv, p.start_time), "addresses": p.addresses,
                "log": p.log, "restarts": p.restarts}
        workloads.append(entry)
    return {
        "run_dir": str(run_dir.root),
        "running": alive,
        "run_id": state.run_id,
        "status": state.status if alive else "supervisor-dead",
        "supervisor": {"pid": state.supervisor_pid, "alive": alive},
        "started_at": state.started_at,
        "address_mode": state.address_mode,
        "control_plane": control_plane_status(run_dir, state),
        "prometheus": prometheus_status(state),
        "workloads": workloads,
        "traffic": state.traffic,
        "summary": [s.to_json() for s in _summaries(run_dir, state.run_id)],
    }


def control_plane_status(run_dir: RunDir, state: State) -> dict[str, Any] | None:
    """The control plane of this mesh: what it says about itself (``control-plane.json``, written once it
    serves) and the supervisor's record of it; None for `up --static` (no control plane)."""
    from mesh_ctl.client import discovery  # not at import time: `status` stays light

    record = control_plane_record(state)
    if record is None:
        return None
    live = discovery(run_dir)
    alive = procs.is_ours(record.pid, record.argv, record.start_time)
    serving = live is not None and live.get("pid") == record.pid
    return {
        "pid": record.pid,
        "alive": alive,
        "serving": serving,  # alive and its discovery file is written: its ports are open
        "xds_address": str(live["xds_address"]) if serving and live else record.addresses.get("xds"),
        "api_address": str(live["api_address"]) if serving and live else record.addresses.get("api"),
        "restarts": record.restarts,
        "log": record.log,
    }


def prometheus_status(state: State) -> dict[str, Any] | None:
    """The run's Prometheus: its URL, pid, whether it is alive and ready (``GET /-/ready``); None when the
    run has none (`up --no-prometheus`, or none installed)."""
    record = prometheus_record(state)
    if record is None or state.prometheus is None:
        return None
    alive = procs.is_ours(record.pid, record.argv, record.start_time)
    return {"url": state.prometheus, "pid": record.pid, "alive": alive,
            "ready": alive and _http_ok(f"{state.prometheus}/-/ready"), "restarts": record.restarts,
            "log": record.log}


def _process_note(up: bool, alive: bool, restarts: int, supervised: bool, up_note: str = "") -> str:
    """What `status` says of a supervised process: up, starting, or not running; and its restarts."""
    if up:
        note = up_note
    elif alive:
        note = " (starting)"
    else:
        note = " (not running: the supervisor restarts it)" if supervised else " (not running)"
    if restarts:
        note += f" (restarted {restarts}x)"
    return note


def prometheus_status_line(p: dict[str, Any], supervised: bool = True) -> str:
    note = _process_note(p["ready"], p["alive"], p["restarts"], supervised, " (ready)")
    return prometheus_line(p["url"], p["pid"], note)


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def control_plane_status_line(cp: dict[str, Any], supervised: bool = True) -> str:
    note = _process_note(cp["serving"], cp["alive"], cp["restarts"], supervised)
    return control_plane_line(cp["xds_address"], cp["api_address"], cp["pid"], note)


def status_text(run_dir: RunDir) -> list[str]:
    st = status(run_dir)
    state = read_state(run_dir)
    if "run_id" in st and state is not None:
        head = (f"run {st['run_id']} from {st['run_dir']}: {st['status']} (supervisor pid "
                f"{st['supervisor']['pid']}{'' if st['running'] else ', dead'}), started {st['started_at']}")
        lines = [head, ""]
        if st["control_plane"] is not None:
            lines += [control_plane_status_line(st["control_plane"], supervised=st["running"]), ""]
        if st["prometheus"] is not None:
            lines += [prometheus_status_line(st["prometheus"], supervised=st["running"]), ""]
        lines += [*where_table(state, alive=lambda pid: _alive_in(state, pid)), ""]
        lines += _summary_text(st["summary"]) or ["(no load reports yet)"]
        return lines
    lines = [f"no mesh is running from {st['run_dir']}"]
    lines += ["last run: " + summary_line(Summary.from_json(s)) for s in st.get("last_summary", [])]
    return lines


def _summary_text(summaries: list[dict[str, Any]]) -> list[str]:
    """Each load client's line, and under it the first error of each failing status and what it means."""
    lines = []
    for entry in summaries:
        s = Summary.from_json(entry)
        lines.append(summary_line(s, with_errors=False))
        lines += [f"    {line}" for line in error_lines(s)]
    return lines


def _alive_in(state: State, pid: int) -> bool:
    return any(p.pid == pid and procs.is_ours(p.pid, p.argv, p.start_time) for p in state.processes)


def _summaries(run_dir: RunDir, run_id: str | None) -> list[Summary]:
    data = read_json(run_dir.summary)
    if not isinstance(data, dict) or (run_id is not None and data.get("run_id") != run_id):
        return []
    return [Summary.from_json(c) for c in data.get("clients", []) if isinstance(c, dict)]


# --------------------------------------------------------------------------------------------- detached


def launch_detached(run_dir: RunDir, run_id: str, up_args: Sequence[str], out: TextIO, timeout: float) -> int:
    """Run ``mesh_ctl up --supervise`` in the background (own session, output to logs/supervisor.log, which
    it rotates itself once it holds the run dir) and return once its state file says "ready"; on failure, show
    the supervisor's log and return 1."""
    log = run_dir.log("supervisor")
    argv = [sys.executable, "-m", "mesh_ctl", "up", "--supervise", "--run-id", run_id, *up_args]
    popen = procs.spawn(argv, log=log, cwd=run_dir.root, env=procs.child_env(), die_with_parent=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            state = read_state(run_dir)
            if state is not None and state.run_id == run_id and state.status == "ready":
                break
            code = popen.poll()
            if code is not None:
                print(f"error: the mesh did not start (supervisor exited with code {code}); its log, {log}:",
                      file=out)
                print(_tail(log, 40), file=out)
                return 1
            if time.monotonic() > deadline:
                print(f"error: the mesh was not ready after {timeout:g} s; stopping it. Log: {log}", file=out)
                print(_tail(log, 40), file=out)
                procs.stop_child(popen, 30.0)
                return 1
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("interrupted; stopping the background supervisor", file=out)
        procs.stop_child(popen, 30.0)
        return 130
    print(f"minimesh is up in the background: run {run_id}, supervisor pid {popen.pid}, "
          f"{state.address_mode} addresses\n", file=out)
    for line in [*control_plane_lines(state), *prometheus_lines(state), *where_table(state), "", *state.traffic, "",
                 *hints(state, state.run_dir)]:
        print(line, file=out)
    print(f"  supervisor log: {log}", file=out)
    return 0


def _position(path: Path) -> tuple[int, int]:
    """Where the log at ``path`` ends now: (inode, size); (0, 0) if there is none."""
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return st.st_ino, st.st_size


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _new_lines(path: Path, position: tuple[int, int]) -> list[str]:
    """The lines added to the log at ``path`` since ``position`` (:func:`_position`). The supervisor rotates
    its log: if it did meanwhile, the file at ``position`` is now ``path.1``, and ``path`` is all new."""
    inode, offset = position
    if inode and _position(path)[0] != inode:
        data = _read_from(generation(path, 1), offset) + _read_from(path, 0)
    else:
        data = _read_from(path, offset)
    return data.decode(errors="replace").splitlines()


def _tail(path: Path, n: int) -> str:
    lines = tail(path, n)
    return "\n".join(f"    {line}" for line in lines) if lines else "    (no log)"

