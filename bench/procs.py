"""Start and stop the benchmark's processes; free loopback ports.

Same conventions as ``tests/support/procs.py`` (new session per process, output to a log file, SIGTERM then
SIGKILL by PID), kept separate so that the benchmark does not depend on the test tree, plus two things the
benchmark needs: pipes for the load generator's JSON lines, and stopping the workers a master leaves behind
(nginx) by PID, checked against their start time so that a reused PID is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.procfs import descendants

REPO_ROOT = Path(__file__).resolve().parents[1]

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, never the same one twice in this run."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()[19]  # field 22: starttime


class Proc:
    """One process of the run. ``stdin``/``stdout`` are pipes only when asked for (the load generator)."""

    def __init__(
        self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None, pipes: bool
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.setdefault("PYTHONPATH", str(REPO_ROOT))
        if env:
            full_env.update(env)
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            env=full_env,
            cwd=REPO_ROOT,
            start_new_session=True,  # Ctrl-C reaches the orchestrator only; it stops us by PID
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def last_line(self) -> str:
        """The last non-empty line of the output: usually the error that stopped the process."""
        lines = [line.strip() for line in self.output_tail(4000).splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def output_tail(self, limit: int = 1500) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        tree = [(pid, _start_time(pid)) for pid in descendants(self.pid)[1:]] if self.alive() else []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        deadline = time.monotonic() + grace
        for pid, started in tree:  # workers of a master that did not take them down
            while started is not None and _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
            if started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


class ProcessSet:
    """Every process of the run; :meth:`close` stops them all, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None, pipes: bool = False
    ) -> Proc:
        proc = Proc(name, args, self.workdir / f"{name}.log", env, pipes)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        while self.procs:
            self.procs.pop().stop()


def wait_ready(proc: Proc, host: str, port: int, timeout: float) -> None:
    """Block until ``host:port`` accepts connections; raise RuntimeError with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {proc.last_line()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not listening on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)
