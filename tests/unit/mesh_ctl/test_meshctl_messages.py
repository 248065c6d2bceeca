"""The CLI's error messages: the file, the field path and the reason once, in plain words, a hint when one
helps, exit status 1. No control plane runs here: these are the messages that need none (or none found)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_ctl import client
from mesh_ctl.cli import main
from mesh_ctl.commands._common import problems_summary
from tests.support.procs import free_port

GOOD = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
"""
BAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - route:
    - {destination: {host: payment, subset: v1}, weigth: 100}
"""
BROKEN = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x\n"


@pytest.fixture(autouse=True)
def no_mesh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run in ``tmp_path`` with no control plane named by the environment, and none at the default address
    (a mesh the developer runs on 127.0.0.1:15014 must not answer these tests)."""
    monkeypatch.setattr(client, "DEFAULT_API", f"127.0.0.1:{free_port()}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(client.ENV_CONTROL_PLANE, raising=False)
    monkeypatch.delenv("MINIMESH_HOME", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


# ---------------------------------------------------------------------------------------------- the summary


@pytest.mark.parametrize(
    ("errors", "counts", "line"),
    [
        (1, {"files": 2, "documents": 2, "invalid_documents": 1}, "1 error in 1 of 2 documents (2 files)"),
        (1, {"files": 1, "documents": 1, "invalid_documents": 1}, "1 error in 1 document (1 file)"),
        (3, {"files": 1, "documents": 2, "invalid_documents": 2}, "3 errors in both documents (1 file)"),
        (4, {"files": 3, "documents": 5, "invalid_documents": 5}, "4 errors in all 5 documents (3 files)"),
        (1, {"files": 2, "file_errors": 1}, "1 error: 1 of 2 files could not be loaded"),
        (2, {"files": 2, "file_errors": 2}, "2 errors: none of the 2 files could be loaded"),
        (2, {"files": 2, "file_errors": 2, "directories": 1},
         "2 errors: none of the 2 files and directories could be loaded"),
        (3, {"files": 4, "documents": 3, "invalid_documents": 1, "file_errors": 2},
         "3 errors: 2 of 4 files could not be loaded, and 1 of 3 documents is invalid"),
        (1, {"files": 1, "file_errors": 1}, None),  # the error line says it all
        (1, {"files": 0, "file_errors": 1, "directories": 1}, None),
    ],
)
def test_the_summary_counts_in_plain_words(errors: int, counts: dict[str, int], line: str | None) -> None:
    assert problems_summary(errors, counts) == line


# ---------------------------------------------------------------------------------- files that are no good


@pytest.mark.parametrize(
    ("setup", "argv", "stdin", "line"),
    [
        (None, ["-f", "nope.yaml"], None, "nope.yaml: cannot read: No such file or directory"),
        ("emptydir", ["-f", "emptydir"], None, "emptydir: no .yaml, .yml or .json files in this directory"),
        ("empty.yaml", ["-f", "empty.yaml"], None, "empty.yaml: the file is empty"),
        (None, ["-f", "-"], "", "<stdin>: standard input is empty"),
    ],
)
def test_a_file_that_is_no_good_gets_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path, setup: str | None, argv: list[str], stdin: str | None,
                                              line: str) -> None:
    if setup == "emptydir":
        (tmp_path / setup).mkdir()
    elif setup is not None:
        (tmp_path / setup).write_text("")
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert run(capsys, "analyze", *argv, "--offline") == (1, [line], [])
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code, out, err = run(capsys, "apply", *argv)
    assert (code, out) == (1, [])
    if (setup is None and stdin is None) or setup == "emptydir":  # refused before asking a control plane
        assert err == [line]
    else:  # the control plane parses: there is none here
        assert err == ["error: no control plane is running for run dir .minimesh (nothing recorded in "
                       ".minimesh/control-plane.json); start one with: mesh_ctl up --detach"]


def test_analyze_reports_every_problem_of_every_file_of_a_directory(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "a-broken.yaml").write_text(BROKEN)
    (d / "b-bad.yaml").write_text(BAD)
    (d / "c-broken.yaml").write_text(GOOD.replace("payment", "other") + "---\n" + BROKEN)
    (d / "d-good.yaml").write_text(GOOD)
    (d / "e-empty.yaml").write_text("")
    code, out, err = run(capsys, "analyze", "-f", "cfg", "--offline")
    assert code == 1
    assert out == [
        "cfg/a-broken.yaml: document #1: line 4, column 1: did not find expected ',' or '}'",
        "cfg/b-bad.yaml: VirtualService default/payment: spec.http[0].route[0].weigth: unknown field",
        "cfg/c-broken.yaml: document #2: line 12, column 1: did not find expected ',' or '}'",
        "cfg/e-empty.yaml: the file is empty",
    ]
    assert err == ["4 errors: 1 of 5 files could not be loaded, and 3 of 5 documents are invalid; checked offline"]


def test_analyze_with_no_control_plane_says_so_once_and_checks_offline(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    code, out, err = run(capsys, "analyze", "-f", "good.yaml", "-f", "bad.yaml")
    assert (code, out) == (1, ["bad.yaml: VirtualService default/payment: spec.http[0].route[0].weigth: unknown field"])
    assert err == [
        "note: no control plane is running for run dir .minimesh (nothing recorded in .minimesh/control-plane.json); "
        "checking the files on their own, as --offline does",
        "1 error in 1 of 2 documents (2 files); checked offline",
    ]
    assert run(capsys, "analyze", "-f", "good.yaml", "--offline") == (
        0, ["\u2714 No validation issues found when analyzing 1 document (1 file) offline."], [])


def test_apply_with_an_unreadable_file_names_it_and_the_missing_control_plane_once(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    code, out, err = run(capsys, "apply", "-f", "good.yaml", "-f", "nope.yaml", "--run-dir", "run")
    assert (code, out) == (1, [])
    assert err == ["nope.yaml: cannot read: No such file or directory",
                   "error: no control plane is running for run dir run (nothing recorded in run/control-plane.json); "
                   "start one with: mesh_ctl up --detach --run-dir run"]


# ------------------------------------------------------------------------------------ no control plane


def test_no_control_plane_for_the_run_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "get", "vs") == (1, [], [
        "error: no control plane is running for run dir .minimesh (nothing recorded in .minimesh/control-plane.json); "
        "start one with: mesh_ctl up --detach"])


def test_the_recorded_control_plane_has_exited(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(gone.stdout)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "control-plane.json").write_text(json.dumps(
        {"pid": pid, "api_address": f"127.0.0.1:{free_port()}"}))
    assert run(capsys, "proxy-status", "--run-dir", "run") == (1, [], [
        f"error: no control plane is running for run dir run (the one recorded in run/control-plane.json, pid {pid}, "
        "has exited); start one with: mesh_ctl up --detach --run-dir run"])


def test_an_explicit_address_that_refuses(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    assert run(capsys, "get", "vs", "--control-plane", f"127.0.0.1:{port}") == (1, [], [
        f"error: cannot reach the control plane at 127.0.0.1:{port} (from --control-plane): connection refused"])
    monkeypatch.setenv(client.ENV_CONTROL_PLANE, f"127.0.0.1:{port}")
    from_env = f"error: cannot reach the control plane at 127.0.0.1:{port} (from $MINIMESH_CONTROL_PLANE): " \
        "connection refused"
    assert run(capsys, "ca", "status") == (1, [], [from_env])
    Path("good.yaml").write_text(GOOD)
    # analyze does not fall back to --offline when the control plane it was told to use is not there
    assert run(capsys, "analyze", "-f", "good.yaml") == (1, [], [from_env])


def test_an_address_that_is_not_host_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "get", "vs", "--control-plane", "localhost") == (1, [], [
        "error: invalid control plane address 'localhost' (from --control-plane): expected HOST:PORT, e.g. "
        "127.0.0.1:15014"])


def test_a_control_plane_that_does_not_answer() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        api = client.Client(client.find(address), timeout=0.2)
        with pytest.raises(client.ControlPlaneError) as info:
            api.info()
    assert str(info.value) == (f"cannot reach the control plane at {address} (from --control-plane): no answer "
                               "within 0.2 s")
    assert info.value.status == 0 and info.value.hint == ""


def test_an_endpoint_given_by_code_names_its_source() -> None:
    port = free_port()
    with pytest.raises(client.ControlPlaneError) as info:
        client.Client(client.Endpoint(f"127.0.0.1:{port}", "mesh_ctl up")).info()
    assert str(info.value) == (f"cannot reach the control plane at 127.0.0.1:{port} (from mesh_ctl up): "
                               "connection refused")
