"""CPU time and memory of a process tree, read from ``/proc`` (Linux only).

CPU is ``utime + stime`` (fields 14 and 15 of ``/proc/<pid>/stat``, in clock ticks, usually 10 ms). For a
process the kernel sums these over all its threads, live and exited, so one read per process covers a
multi-threaded proxy; worker processes (nginx's master + worker) are found by walking ``ppid`` links and
added. The measurement is a difference of two samples taken around a phase, per PID, so a process's CPU
before the phase never counts.

The machine's own busy time (``/proc/stat``: user + nice + system + irq + softirq, all CPUs) minus the CPU
of every benchmark process gives the *background* load: other work on a shared machine that competes for
the same cores. It is reported so that a noisy run can be told from a real difference.

RSS is ``VmRSS`` from ``/proc/<pid>/status``, summed over the tree (shared pages of a master and its worker
are counted twice, as ``ps`` would; for a single-process proxy it is exact).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the ``comm`` field (which may contain spaces), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime, stime) of ``pid`` (all its threads) in clock ticks, or None if the process is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After comm: state(3) ppid(4) ... utime(14) stime(15) -> indexes 11 and 12 here.
    return int(fields[11]), int(fields[12])


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (breadth first)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid = parent_of(int(name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(name))
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], ()))
        i += 1
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (user + nice + system + irq + softirq)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass(frozen=True, slots=True)
class CpuSample:
    """(utime, stime) ticks per PID of one process tree at one moment."""

    ticks: dict[int, tuple[int, int]]

    def user_sys_since(self, before: CpuSample) -> tuple[float, float]:
        """User and system CPU seconds between ``before`` and this sample (new PIDs count from zero)."""
        user = system = 0
        for pid, (u, s) in self.ticks.items():
            u0, s0 = before.ticks.get(pid, (0, 0))
            user += u - u0
            system += s - s0
        return user / CLOCK_TICKS, system / CLOCK_TICKS

    def seconds_since(self, before: CpuSample) -> float:
        """CPU seconds (user + system) between ``before`` and this sample."""
        return sum(self.user_sys_since(before))


def sample_cpu(roots: Iterable[int]) -> CpuSample:
    ticks: dict[int, tuple[int, int]] = {}
    for root in roots:
        for pid in descendants(root):
            t = cpu_ticks(pid)
            if t is not None:
                ticks[pid] = t
    return CpuSample(ticks)


def tree_rss(root: int) -> int:
    """Resident set of ``root`` and its descendants, in bytes."""
    return sum(rss_bytes(pid) for pid in descendants(root))
