"""How load problems read: a file as a whole (no fake "document" segment), every file of a batch, and the
counts behind the CLI's summary line."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mesh_ctl.resources import LoadError, ValidationProblem, load_paths
from mesh_ctl.resources.loader import in_order, load_files, read_paths

VS = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s}\nspec: {hosts: [%s]}\n"


@pytest.mark.parametrize(
    ("problem", "line"),
    [
        (ValidationProblem("vs.yaml", "VirtualService", "default/a", "spec.hosts", "required"),
         "vs.yaml: VirtualService default/a: spec.hosts: required"),
        (ValidationProblem("vs.yaml", "VirtualService", "default/a", "", "bad", 1),
         "vs.yaml: VirtualService default/a: bad"),
        (ValidationProblem("vs.yaml", "", "", "kind", "unknown kind 'X'", 2),
         "vs.yaml: document #2: kind: unknown kind 'X'"),
        (ValidationProblem("vs.yaml", "VirtualService", "", "metadata.name", "required", 3),
         "vs.yaml: document #3 (VirtualService): metadata.name: required"),
        (ValidationProblem("nope.yaml", "", "", "", "cannot read: No such file or directory"),
         "nope.yaml: cannot read: No such file or directory"),
        (ValidationProblem("x.yaml", "VirtualService", "", "", "odd"), "x.yaml: VirtualService: odd"),
        (ValidationProblem("", "", "", "", "alone"), "alone"),
    ],
)
def test_a_problem_line_never_has_an_empty_or_placeholder_segment(problem: ValidationProblem, line: str) -> None:
    assert str(problem) == line
    assert ": :" not in str(problem) and "?" not in str(problem) and not str(problem).startswith(":")


def test_every_file_is_parsed_to_its_end_and_counted() -> None:
    loaded = load_files([
        ("good.yaml", VS % ("a", "a")),
        ("two.yaml", VS % ("b", "b") + "---\n" + VS % ("c", "c")),
        ("broken.yaml", VS % ("d", "d") + "---\nkind: VirtualService\nspec: {hosts: [x\n"),
        ("empty.yaml", ""),
        ("comments.yaml", "# nothing here\n---\n"),
        ("list.json", '{"kind": "List", "items": [{"kind": "VirtualService"}, {"kind": "VirtualService"}]}'),
        ("<stdin>", "  \n"),
    ])
    # The document before the syntax error is kept (and will be validated); a List is one document.
    assert [r.name for r in loaded.resources] == ["a", "b", "c", "d", "", ""]
    assert [str(p) for p in loaded.problems] == [
        "broken.yaml: document #2: line 8, column 1: did not find expected ',' or ']'",
        "empty.yaml: the file is empty",
        "comments.yaml: no documents in this file (only comments or '---')",
        "<stdin>: standard input is empty",
    ]
    assert (loaded.files, loaded.documents) == (7, 6)  # good 1, two 2, broken 2, list 1
    assert loaded.counts(loaded.problems) == {"files": 7, "documents": 6, "invalid_documents": 1, "file_errors": 3}


def test_read_paths_reports_each_unreadable_path_once_and_keeps_the_order(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.yaml").write_text(VS % ("a", "a"))
    (d / "b.yaml").write_bytes(b"\xff\xfe")
    (d / "c.yaml").symlink_to(d / "c.yaml")  # a loop: reading it fails even as root
    (d / "notes.txt").write_text("ignored")
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "only-subdirs").mkdir()
    (tmp_path / "only-subdirs" / "sub").mkdir()
    missing = tmp_path / "nope.yaml"
    inputs = read_paths([d, missing, tmp_path / "empty-dir", tmp_path / "only-subdirs"])
    assert [origin for origin, _ in inputs.texts] == [str(d / "a.yaml")]
    assert [str(p) for p in inputs.problems] == [
        f"{d / 'b.yaml'}: not UTF-8 text (byte 0: invalid start byte)",
        f"{d / 'c.yaml'}: cannot read: Too many levels of symbolic links",
        f"{missing}: cannot read: No such file or directory",
        f"{tmp_path / 'empty-dir'}: no .yaml, .yml or .json files in this directory",
        f"{tmp_path / 'only-subdirs'}: no .yaml, .yml or .json files in this directory (its subdirectories are "
        "read only with -R)",
    ]
    assert inputs.files == 4 and inputs.directories == 2 and len(inputs.order) == 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "locked.yaml"
    f.write_text(VS % ("a", "a"))
    f.chmod(0)
    assert [str(p) for p in read_paths([f]).problems] == [f"{f}: cannot read: Permission denied"]


def test_empty_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    inputs = read_paths(["-"])
    assert inputs.texts == [("<stdin>", "")] and not inputs.problems
    assert [str(p) for p in load_files(inputs.texts).problems] == ["<stdin>: standard input is empty"]


def test_load_paths_names_every_problem_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: [\n")
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "c.yaml").write_text(VS % ("c", "c"))
    with pytest.raises(LoadError) as err:
        load_paths([tmp_path / "zz-missing.yaml", tmp_path])
    assert [p.origin for p in err.value.problems] == [
        str(tmp_path / "zz-missing.yaml"), str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]


def test_in_order_sorts_by_file_then_document_and_keeps_a_documents_order() -> None:
    p = [ValidationProblem("b", "", "", "", "b2", 2), ValidationProblem("a", "", "", "x", "a1", 1),
         ValidationProblem("b", "", "", "", "b1", 1), ValidationProblem("?", "", "", "", "other", 1),
         ValidationProblem("a", "", "", "y", "a1 again", 1)]
    assert [q.reason for q in in_order(p, ["a", "b"])] == ["a1", "a1 again", "b1", "b2", "other"]
