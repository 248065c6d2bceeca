"""Hostile configuration against a real `mesh_ctl serve` (issue 9.5): a 581-byte YAML alias bomb sent through
`mesh_ctl apply` took the control plane from 66 MB to 2.5 GB. Now it is refused before anything is expanded,
with one clear error, and the control plane is unaffected (memory, and it keeps serving)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.integration.test_control_plane import DR, ControlPlane, free_block
from tests.support.procs import ProcessGroup, free_port

pytestmark = pytest.mark.timeout(120)

LEVELS = "abcdefghi"
BOMB = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bomb}\nspec:\n  hosts: [payment]\n"
        '  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
        + "".join(f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in itertools.pairwise(LEVELS)))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_an_alias_bomb_is_refused_and_the_control_plane_is_unaffected(procs: ProcessGroup, tmp_path: Path) -> None:
    cp = ControlPlane(procs, tmp_path / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
    proc = cp.start()
    (tmp_path / "dr.yaml").write_text(DR)
    cp.cli("apply", "-f", str(tmp_path / "dr.yaml"))
    before = rss_mb(proc.popen.pid)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 700
    for command in ("apply", "analyze"):
        done = cp.cli(command, "-f", str(bomb), check=1)
        lines = (done.stdout + done.stderr).splitlines()
        assert lines[0] == (f"{bomb}: document #1: its YAML aliases expand it to more than 1,000,000 values (an alias "
                            "bomb?); write the values out, or use fewer aliases"), lines
        assert len(lines) <= 2, lines  # the problem, and the summary line
    after = rss_mb(proc.popen.pid)
    print(f"\ncontrol plane RSS {before:.1f} MB before the bomb, {after:.1f} MB after")
    assert after < before + 20, (before, after)
    assert proc.alive()
    assert "payment" in cp.cli("get", "dr").stdout  # still serving, the store unchanged
    assert cp.cli("get", "vs", "bomb", check=1).returncode == 1
