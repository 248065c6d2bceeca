"""The CLI's error messages against a real `mesh_ctl serve`: each names the file, the field path and the
reason once, in plain words, then one summary line; the exit status is 1 and nothing is stored.

    mesh_ctl apply/analyze -f ... --run-dir RUN --> serve (HTTP/JSON API)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_control_plane import BAD_VS, DR, ControlPlane, control_plane
from tests.support.procs import free_port

__all__ = ["control_plane"]  # the fixture, shared with test_control_plane

pytestmark = pytest.mark.timeout(180)

BAD_LINE = "spec.http[0].route[1].weigth: unknown field"
BROKEN = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x\n"
STORE = "checked against the control plane's store"


def nothing_stored(cp: ControlPlane) -> bool:
    return all(cp.cli("get", kind, check=0).stdout == "" for kind in ("vs", "dr"))


def test_a_good_file_with_a_bad_one_is_refused_with_a_plain_summary(control_plane: ControlPlane,
                                                                     tmp_path: Path) -> None:
    cp = control_plane
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(DR)
    bad.write_text(BAD_VS)
    applied = cp.cli("apply", "-f", str(good), "-f", str(bad), check=1)
    assert applied.stdout == ""
    assert applied.stderr.splitlines() == [f"{bad}: VirtualService default/payment: {BAD_LINE}",
                                           "1 error in 1 of 2 documents (2 files); nothing was applied"]
    analyzed = cp.cli("analyze", "-f", str(good), "-f", str(bad), check=1)
    assert analyzed.stdout.splitlines() == [f"{bad}: VirtualService default/payment: {BAD_LINE}"]
    assert analyzed.stderr.splitlines() == [f"1 error in 1 of 2 documents (2 files); {STORE}"]
    assert nothing_stored(cp)
    assert cp.cli("analyze", "-f", str(good)).stdout.splitlines() == [
        "\u2714 No validation issues found when analyzing 1 document (1 file) against the control plane's store."]


def test_every_problem_of_every_file_of_a_directory(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "a-broken.yaml").write_text(BROKEN)
    (d / "b-bad.yaml").write_text(BAD_VS)
    (d / "c-broken.yaml").write_text(BROKEN.replace("name: x", "name: y"))
    (d / "d-good.yaml").write_text(DR)
    (d / "e-binary.yaml").write_bytes(b"\xff\xfe")
    (d / "f-empty.yaml").write_text("")
    problems = [
        f"{d / 'a-broken.yaml'}: document #1: line 4, column 1: did not find expected ',' or '}}'",
        f"{d / 'b-bad.yaml'}: VirtualService default/payment: {BAD_LINE}",
        f"{d / 'c-broken.yaml'}: document #1: line 4, column 1: did not find expected ',' or '}}'",
        f"{d / 'e-binary.yaml'}: not UTF-8 text (byte 0: invalid start byte)",
        f"{d / 'f-empty.yaml'}: the file is empty",
    ]
    summary = "5 errors: 2 of 6 files could not be loaded, and 3 of 4 documents are invalid"
    analyzed = cp.cli("analyze", "-f", str(d), check=1)
    assert analyzed.stdout.splitlines() == problems
    assert analyzed.stderr.splitlines() == [f"{summary}; {STORE}"]
    applied = cp.cli("apply", "-f", str(d), check=1)
    assert applied.stdout == ""
    assert applied.stderr.splitlines() == [*problems, f"{summary}; nothing was applied"]
    assert nothing_stored(cp)


@pytest.mark.parametrize(("what", "line"), [
    ("missing", "{path}: cannot read: No such file or directory"),
    ("empty-dir", "{path}: no .yaml, .yml or .json files in this directory"),
    ("empty-file", "{path}: the file is empty"),
    ("comments", "{path}: no documents in this file (only comments or '---')"),
    ("stdin", "<stdin>: standard input is empty"),
])
def test_a_file_that_is_no_good_gets_one_clear_line(control_plane: ControlPlane, tmp_path: Path, what: str,
                                                    line: str) -> None:
    path = tmp_path / what
    if what == "empty-dir":
        path.mkdir()
    elif what == "empty-file":
        path.write_text("")
    elif what == "comments":
        path.write_text("# nothing yet\n---\n")
    arg = "-" if what == "stdin" else str(path)
    expected = [line.format(path=path)]
    for command in ("apply", "analyze"):
        done = control_plane.cli(command, "-f", arg, stdin="", check=1)
        assert (done.stdout + done.stderr).splitlines() == expected, command


def test_no_control_plane_and_a_refused_address(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    port = free_port()
    refused = cp.cli("get", "vs", "--control-plane", f"127.0.0.1:{port}", check=1)
    assert (refused.stdout, refused.stderr) == (
        "", f"error: cannot reach the control plane at 127.0.0.1:{port} (from --control-plane): connection refused\n")
    assert cp.proc is not None and cp.proc.stop() == 0
    gone = cp.cli("get", "vs", check=1)
    assert (gone.stdout, gone.stderr) == ("", (
        f"error: no control plane is running for run dir {cp.run_dir} (nothing recorded in "
        f"{cp.run_dir / 'control-plane.json'}); start one with: mesh_ctl up --detach --run-dir {cp.run_dir}\n"))
