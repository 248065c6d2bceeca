"""The README's walkthrough, executed: every ``$ command`` of its ```` ```console ```` blocks runs, in order,
on a fresh run dir, and its output must show what the README shows. The README cannot drift from the code.

How a block reads (the README is written for people; these rules keep it checkable):

- ``$ COMMAND`` runs with bash, stdout and stderr together, from the repository root; the lines after it,
  up to the next ``$``, are its expected output. A comment after the command is for the reader, except
  ``# exit N``, the exit status the command must have (default 0).
- Expected lines must appear in the output in that order (other lines may come between). Numbers may differ
  (PIDs, timings, counts, addresses) and so may runs of spaces; ``...`` inside a line stands for anything, a
  line of only ``...`` for any number of lines.
- A foreground ``mesh_ctl up`` (no ``--detach``) keeps running in the background: its expected lines must
  appear in its output, and it must have exited 0 by the end (a later ``mesh_ctl down`` stops it, as Ctrl-C
  would).
- Commands that only look (``status``, ``proxy-status``, ``get``, ``tail``, ``curl`` ...) are repeated until
  their output matches, for 30 s at most: what they show may take a moment to happen (a push, a refused call).
  Commands that change something run once.

Isolation: the mesh gets a loopback block of its own (``MINIMESH_BASE_ADDRESS``, ``MINIMESH_CONTROL_PLANE_ADDRESS``)
and a fresh run dir (``MINIMESH_HOME``); the README's addresses, ``.minimesh/`` and ``.venv/bin/`` in commands
are rewritten to them, so the test runs beside another mesh.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mesh_ctl.runtime import control
from mesh_ctl.runtime.state import RunDir
from tests.support.live_mesh import free_base_address
from tests.support.procs import REPO_ROOT
from tests.support.prometheus import prometheus_binary

pytestmark = pytest.mark.timeout(600)

README = REPO_ROOT / "README.md"
LOOKING = ("mesh_ctl status", "mesh_ctl top", "mesh_ctl proxy-status", "mesh_ctl proxy-config", "mesh_ctl get",
           "mesh_ctl ca status", "tail ", "curl ", "grep ", "cat ")
RETRY_S = 30.0
UP_READY_S = 120.0


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0
    line: int = 0  # in the README, for messages


def walkthrough(text: str) -> list[Step]:
    """The ``$`` commands of the README's ```console blocks, with their expected output."""
    steps: list[Step] = []
    in_block = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() == "```console"
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            command = line[2:].strip()
            m = re.search(r"#\s*exit (\d+)", command)
            steps.append(Step(command, [], int(m.group(1)) if m else 0, number))
        elif steps and line.strip():
            steps[-1].expected.append(line)
    return steps


RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b")  # mesh_ctl's run ids: a time and 6 random hex digits
HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{16,}\b")  # serial numbers, fingerprints


def _normalize(line: str) -> str:
    line = HEX.sub("HEX", RUN_ID.sub("RUN", line))
    return re.sub(r"\s+", " ", re.sub(r"\d+", "0", line)).strip()


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(_normalize(p)) for p in expected.split("...")]
    return re.compile(r"\s*" + r".*".join(p for p in parts) + r"\s*$" if len(parts) > 1 else
                      r"\s*" + parts[0] + r"\s*$")


def mismatch(expected: list[str], output: str) -> str | None:
    """None if ``expected`` appears in ``output`` as described in the module docstring, else what is missing."""
    actual = [_normalize(line) for line in output.splitlines()]
    i = 0
    skipping = False
    for want in expected:
        if want.strip() == "...":
            skipping = True
            continue
        pattern = _pattern(want)
        while i < len(actual) and not pattern.match(actual[i]):
            i += 1
        if i == len(actual):
            return f"missing: {want!r}" + (" (after skipped lines)" if skipping else "")
        i += 1
    return None


class Walkthrough:
    def __init__(self, tmp: Path) -> None:
        base = free_base_address()  # 127.a.b.10
        prefix = base.rsplit(".", 1)[0]
        self.run_dir = tmp / "run"
        self.cp_host = f"{prefix}.9"
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "MINIMESH_HOME": str(self.run_dir), "MINIMESH_BASE_ADDRESS": base,
                    "MINIMESH_CONTROL_PLANE_ADDRESS": self.cp_host, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "COLUMNS": "200"}
        self.rewrites = [(".venv/bin/", f"{bin_dir}/"), (".minimesh/", f"{self.run_dir}/"),
                         ("127.0.0.1:15014", f"{self.cp_host}:15014"), ("127.0.0.1:15010", f"{self.cp_host}:15010"),
                         ("127.0.0.1:9090", f"{self.cp_host}:9090")]
        self.rewrites += [(f"127.0.0.{n}:", f"{prefix}.{n}:") for n in range(10, 20)]
        self.foreground: list[tuple[Step, subprocess.Popen[str], Path]] = []

    def command(self, step: Step) -> str:
        command = step.command
        for old, new in self.rewrites:
            command = command.replace(old, new)
        return command

    def run(self, step: Step) -> None:
        command = self.command(step)
        if re.match(r"^(\S*/)?mesh_ctl up\b", command) and "--detach" not in command:
            self._foreground(step, command)
            return
        looking = any(command.startswith(p) or f"| {p}" in command for p in LOOKING)
        deadline = time.monotonic() + (RETRY_S if looking else 0)
        while True:
            done = subprocess.run(["bash", "-c", command], capture_output=False, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=self.env, timeout=240,
                                  check=False)
            problem = mismatch(step.expected, done.stdout)
            if done.returncode != step.exit_code:
                problem = f"exit {done.returncode}, the README says {step.exit_code}"
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"README line {step.line}: $ {step.command}\n{problem}\n--- output:\n"
                                     f"{done.stdout}")
            time.sleep(0.5)

    def _foreground(self, step: Step, command: str) -> None:
        log = self.run_dir.parent / f"foreground-{len(self.foreground)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], stdout=out, stderr=subprocess.STDOUT, text=True,
                                    cwd=REPO_ROOT, env=self.env, start_new_session=True)
        self.foreground.append((step, proc, log))
        deadline = time.monotonic() + UP_READY_S
        while (problem := mismatch(step.expected, log.read_text(errors="replace"))) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"README line {step.line}: $ {step.command}\n{problem}\n--- output:\n"
                                     f"{log.read_text(errors='replace')[:4000]}")
            time.sleep(0.2)

    def finish(self) -> None:
        for step, proc, log in self.foreground:
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # what Ctrl-C does
                code = proc.wait(timeout=60)
            assert code == 0, f"README line {step.line}: `{step.command}` exited {code}\n{log.read_text()[-3000:]}"

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            control.down(RunDir(self.run_dir), io.StringIO(), timeout=60)
        for _, proc, _ in self.foreground:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_the_matching_rules_can_fail() -> None:
    out = "NAME   KIND\nclient.default   sidecar   SYNCED   13s\npayment-v1.default sidecar SYNCED 2s\n"
    assert mismatch(["NAME KIND", "client.default sidecar SYNCED 99s"], out) is None
    assert mismatch(["client.default sidecar SYNCED 13s", "NAME KIND"], out) is not None  # order matters
    assert mismatch(["client.default sidecar STALE 13s"], out) is not None  # words matter
    assert mismatch(["client.default ... 13s"], out) is None
    assert mismatch(["...", "payment-v1.default ..."], out) is None
    assert mismatch(["client.default sidecar SYNCED SDS 13s"], out) is not None  # a column the README shows
    assert mismatch(["stopping run 20261207-193116-74b668 ..."], "stopping run 20261208-101010-0fa9c1 (pid 3)") is None
    assert mismatch(["serial 616c9906fae659128387d1a6fc4841bb"], "serial 9e1c7cc62698217c7df1c1b1cda93abd") is None
    steps = walkthrough("```console\n$ mesh_ctl get vs   # exit 1\nerror: x\n\n```\n```bash\n$ not this\n```\n")
    assert [(s.command, s.expected, s.exit_code) for s in steps] == [("mesh_ctl get vs   # exit 1", ["error: x"], 1)]


def test_every_command_of_the_readme_walkthrough(tmp_path: Path) -> None:
    prometheus_binary()  # the walkthrough reads the Prometheus `mesh_ctl up` runs
    steps = walkthrough(README.read_text())
    assert len(steps) >= 20, "the README's walkthrough is in ```console blocks"
    w = Walkthrough(tmp_path)
    try:
        for step in steps:
            w.run(step)
        w.finish()
    finally:
        w.cleanup()
    print(f"\n{len(steps)} README commands ran and showed what the README shows")
