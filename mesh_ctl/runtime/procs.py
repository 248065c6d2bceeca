"""Processes by PID: start children that die with their supervisor, recognise them later, stop them.

Resource handling:
- :func:`spawn` puts each child in its own session (a Ctrl-C in the terminal reaches only the supervisor,
  which then stops the children in order) and, on Linux, asks the kernel to SIGKILL it when the thread
  that started it dies (``prctl(PR_SET_PDEATHSIG)``). That thread must live as long as the supervisor, so
  spawn only from the main thread (this is why the supervisor does not use trio's ``open_process``, which
  calls ``Popen`` in a worker thread that exits when idle).
- Output: appended to a log file, or (``log=None``, what the supervisor does for the mesh's processes) on
  pipes the caller reads, so that it can cap the logs (:mod:`mesh_ctl.runtime.logs`). Either way the child
  holds no descriptor of ours beyond stdin (/dev/null), stdout and stderr (``close_fds``).
- A PID alone can be reused; a process is "ours" only if its ``/proc/<pid>/cmdline`` is the argv we started
  and its start time matches. Only such processes are ever signalled, and only by PID.

Error handling: a process that is already gone is not an error anywhere here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
# Resolved once in the parent: after fork only async-signal-safe work should happen in the child.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if _LINUX else None


def kill_with_parent(parent_pid: int) -> None:
    """In a child (``preexec_fn``, a pool initializer): SIGKILL it when its parent dies (Linux), including if
    it already has."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None,
    cwd: Path,
    env: dict[str, str],
    stdout_pipe: bool = False,
    die_with_parent: bool = True,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, its output appended to ``log`` (stdout piped instead if asked).

    With ``log=None`` the output goes to pipes the caller must read to EOF (:class:`~mesh_ctl.runtime.logs.
    LogPump`): stdout and stderr together on ``popen.stdout``; with ``stdout_pipe``, stdout on ``popen.stdout``
    and stderr on ``popen.stderr``. That is how the supervisor caps the logs (:mod:`mesh_ctl.runtime.logs`).
    ``pass_fds``: descriptors the child inherits under the same numbers (held listening sockets)."""
    parent = os.getpid()
    preexec = (lambda: kill_with_parent(parent)) if die_with_parent else None

    def popen(stdout: int | IO[bytes], stderr: int | IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=preexec,  # noqa: PLW1509
        )

    if log is None:
        return popen(subprocess.PIPE, subprocess.PIPE if stdout_pipe else subprocess.STDOUT)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return popen(subprocess.PIPE if stdout_pipe else out, out)


def child_env() -> dict[str, str]:
    """The environment for every child: ours, unbuffered, and able to import this project's packages."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists():  # running from a source tree, not an installed package
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in parts:
            env["PYTHONPATH"] = os.pathsep.join([*parts, str(root)])  # appended: an explicit path wins
    return env


# --------------------------------------------------------------------------------------------- identity


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid``, or None if there is no such process (or it cannot be read)."""
    if _LINUX:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None
    try:  # other Unixes: ps joins the argv with spaces
        out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                             check=False, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text.split(" ") if out.returncode == 0 and text else None


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks after boot); None if unknown."""
    stat = _stat(pid)
    if stat is None:
        return None
    try:
        return int(stat[19])
    except (IndexError, ValueError):
        return None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 = state is index 0)."""
    if not _LINUX:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = _stat(pid)
    return not (stat and stat[0] in ("Z", "X"))


def is_ours(pid: int, argv: Sequence[str], started: int | None) -> bool:
    """Whether ``pid`` is alive and is still the process started with ``argv`` (at ``started``)."""
    if pid <= 1 or not alive(pid):
        return False
    actual = cmdline(pid)
    if actual is None:
        return False
    if _LINUX:
        if actual != list(argv):
            return False
    elif " ".join(actual) != " ".join(argv):
        return False
    return started is None or start_time(pid) in (None, started)


# --------------------------------------------------------------------------------------------- stopping


def stop_child(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM our child, wait up to ``grace`` s, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def terminate(pid: int, argv: Sequence[str], started: int | None, grace: float) -> bool:
    """Stop a process that is not our child (found in a state file), if it is still ours.

    SIGTERM, wait up to ``grace`` s, SIGKILL, wait up to 5 s. Returns True when it is gone.
    """
    def gone() -> bool:
        return not is_ours(pid, argv, started)

    if gone():
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(gone, grace):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_until(gone, 5.0)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` s have passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
