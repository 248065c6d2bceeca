"""A real child writing fast through the supervisor's log path (its output on a pipe, a pump thread, a rotating
log): the files stay bounded while it writes, the child is never held up, and nothing is lost at the end.

The child is spawned exactly as the supervisor spawns the mesh's processes (``procs.spawn(log=None)``,
``procs.child_env()``: unbuffered, so each ``print`` is two writes, the text and the newline).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh_ctl.runtime import procs
from mesh_ctl.runtime.logs import LogPump, RotatingLog, generations

pytestmark = pytest.mark.timeout(120)

LINES = 100_000
CAP = 256 * 1024
FILES = 3
WRITER = """
import sys, time
start = time.monotonic()
for i in range({lines}):
    print(f"access {{i:07d}} " + "." * 80)
    if i % 1000 == 0:
        print(f"stderr {{i:07d}}", file=sys.stderr)
print(f"done {lines} lines in {{time.monotonic() - start:.3f}} s", file=sys.stderr)
"""
EXPECTED = [line for i in range(LINES) for line in (f"access {i:07d} " + "." * 80, f"stderr {i:07d}")
            if line.startswith("access") or i % 1000 == 0]
LINE = len(EXPECTED[0]) + 1  # the longest line, with its newline


def sizes(path: Path) -> list[int]:
    """The sizes of the log's files now (a file rotated away between listing and stat is skipped)."""
    out = []
    for p in generations(path):
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:
            pass
    return out


def test_a_child_writing_fast_through_a_pipe_keeps_its_log_bounded_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "writer-sidecar.log"
    log = RotatingLog(path, max_bytes=CAP, max_files=FILES)
    started = time.monotonic()
    popen = procs.spawn([sys.executable, "-c", WRITER.format(lines=LINES)], log=None, cwd=tmp_path,
                        env=procs.child_env())
    assert popen.stdout is not None and popen.stderr is None  # stdout and stderr on one pipe
    pump = LogPump(popen.stdout, log, "writer")
    deadline = time.monotonic() + 90
    checks = 0
    try:
        while True:  # bounded while it writes: at most FILES files, none over the cap
            observed = sizes(path)
            assert len(observed) <= FILES and max(observed, default=0) <= CAP, observed
            checks += 1
            try:
                popen.wait(timeout=0.02)
                break
            except subprocess.TimeoutExpired:
                assert time.monotonic() < deadline, "the writer did not finish: is its pipe read?"
    finally:
        procs.stop_child(popen, 5.0)
    assert popen.returncode == 0
    assert pump.join(10), "the pipe did not reach EOF after the writer exited"
    elapsed = time.monotonic() - started

    files = generations(path)
    assert [p.name for p in files] == ["writer-sidecar.log", "writer-sidecar.log.1", "writer-sidecar.log.2"]
    assert all(p.stat().st_size <= CAP for p in files)
    # Full files: each rotated one holds all the whole lines that fit (one ends inside a line only if the
    # child's two writes of a line fell on either side of the cap, the file being full to the byte).
    for p in files[1:]:
        size = p.stat().st_size
        assert CAP - LINE < size <= CAP and (p.read_bytes().endswith(b"\n") or size == CAP), (p.name, size)
    # The newest lines, every one of them, in order, up to the child's last words (nothing lost at the end).
    kept = b"".join(p.read_bytes() for p in reversed(files)).decode().splitlines()
    if kept[0] not in EXPECTED:  # the oldest file may begin with the rest of a line whose start rotated away
        kept = kept[1:]
    assert kept[-1].startswith(f"done {LINES} lines in "), kept[-3:]
    assert kept[:-1] == EXPECTED[len(EXPECTED) - len(kept) + 1:]
    assert len(kept) * LINE > (FILES - 1) * CAP
    total = pump.bytes
    assert log.rotations >= total // CAP - 1 and log.dropped == 0
    child_s = float(kept[-1].split()[-2])
    print(f"\n{total / 1e6:.1f} MB through the pipe in {elapsed:.2f} s ({total / 1e6 / elapsed:.1f} MB/s; the "
          f"child's own time {child_s:.2f} s), {log.rotations} rotations, {checks} bound checks while writing")
