"""Loading: multi-document YAML, JSON, kind: List, empty documents, syntax errors with lines, dirs, stdin."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mesh_ctl.resources import LoadError, load_documents, load_path, load_paths

VS = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s}\nspec: {hosts: [%s]}\n"


def test_multi_document_yaml_skips_empty_documents_and_defaults_the_namespace() -> None:
    got = load_documents("---\n" + VS % ("a", "a") + "---\n---\n# only a comment\n---\n" + VS % ("b", "b"), "f.yaml")
    assert [(r.name, r.namespace, r.document, r.origin) for r in got] == [
        ("a", "default", 1, "f.yaml"),
        ("b", "default", 4, "f.yaml"),
    ]
    assert got[0].api_version == "networking.istio.io/v1"
    assert got[0].key == ("networking.istio.io", "VirtualService", "default", "a")


def test_kind_list_items_are_expanded() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "x"},
                "spec": {"host": "x"},
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRuleList",
                "items": [
                    {
                        "apiVersion": "networking.istio.io/v1",
                        "kind": "DestinationRule",
                        "metadata": {"name": "y"},
                        "spec": {"host": "y"},
                    }
                ],
            },
        ],
    }
    assert [r.name for r in load_documents(json.dumps(doc), "list.json")] == ["x", "y"]


def test_kubernetes_yaml_conversions() -> None:
    (pa,) = load_documents(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\n"
        "spec:\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"
        "metadataX: 2024-01-02\n",
        "pa.yaml",
    )
    assert pa.spec == {"portLevelMtls": {"8080": {"mode": "DISABLE"}}}  # int key -> "8080"
    assert pa.raw["metadataX"] == "2024-01-02"  # timestamps stay strings


def test_yaml_syntax_error_names_document_line_and_column() -> None:
    with pytest.raises(LoadError) as err:
        load_documents(VS % ("a", "a") + "---\nkind: VirtualService\nspec:\n  hosts: [a\n  http: x\n", "vs.yaml")
    (problem,) = err.value.problems
    assert str(problem) == "vs.yaml: document #2: line 9, column 7: did not find expected ',' or ']'"


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(LoadError) as err:
        load_documents("kind: VirtualService\nspec:\n  hosts: [a]\n  hosts: [b]\n", "dup.yaml")
    assert str(err.value) == "dup.yaml: document #1: line 4, column 3: duplicate key 'hosts'"


def test_json_syntax_error_has_line_and_column() -> None:
    with pytest.raises(LoadError, match=r"bad.json: document #1: line 2, column 1: Expecting"):
        load_documents('{"kind": "VirtualService",\n}', "bad.json")


def test_a_document_that_is_not_a_mapping() -> None:
    with pytest.raises(LoadError, match="a document must be a mapping, got list"):
        load_documents("- a\n- b\n", "l.yaml")


def test_directories_sorted_and_recursive_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(VS % ("b", "b"))
    (tmp_path / "a.yml").write_text(VS % ("a", "a"))
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "c"},
                "spec": {"hosts": ["c"]},
            }
        )
    )
    (tmp_path / "notes.txt").write_text("not yaml")
    (tmp_path / ".hidden.yaml").write_text("{{{")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(VS % ("d", "d"))
    assert [r.name for r in load_path(tmp_path)] == ["a", "b", "c"]
    assert [r.name for r in load_path(tmp_path, recursive=True)] == ["a", "b", "c", "d"]


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "bad1.yaml").write_text("a: [\n")
    (tmp_path / "bad2.yaml").write_text("a: b: c\n")
    with pytest.raises(LoadError) as err:
        load_paths([tmp_path, tmp_path / "missing.yaml"])
    assert [p.origin for p in err.value.problems] == [
        str(tmp_path / "bad1.yaml"),
        str(tmp_path / "bad2.yaml"),
        str(tmp_path / "missing.yaml"),
    ]
    assert "No such file or directory" in str(err.value.problems[2])


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(VS % ("s", "s")))
    (r,) = load_path("-")
    assert (r.name, r.origin) == ("s", "<stdin>")
