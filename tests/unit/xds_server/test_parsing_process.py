"""The management API's parsing process (mesh_ctl.xds.parsing) never outlives the control plane: its queue pipe
gives it no EOF, so before it has the parent's death signal, one was left behind by every control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT

SCRIPT = """
import asyncio, os, sys
from mesh_ctl.xds.parsing import FileParser

async def main():
    parser = FileParser()
    loaded = await parser.load([("a.yaml", "kind: VirtualService")])
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read()
                .rsplit(")", 1)[1].split()[1] == str(os.getpid())]
    print(" ".join(map(str, children)), flush=True)
    await asyncio.sleep(60)  # killed here

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_parsing_process_dies_with_the_control_plane() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert proc.stdout is not None
        children = [int(p) for p in proc.stdout.readline().split()]
        assert children, "no parsing process was started"
        assert all(alive(pid) for pid in children)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children), f"left behind: {children}"
