"""The vendored CRDs are Istio's, every CEL rule of the supported kinds is evaluated, versions match."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.resources import KINDS, cel
from mesh_ctl.resources.crds import VENDORED_CRDS, CrdError, load_crds, parse_crds

SHARED = Path(__file__).resolve().parents[4] / "shared" / "istio" / "customresourcedefinitions.gen.yaml"


def _docs(text: str) -> dict[str, str]:
    out = {}
    for chunk in re.split(r"(?m)^---[ \t]*\n?", text):
        m = re.search(r"(?m)^    kind: (\w+)[ \t]*$", chunk)
        if m and m.group(1) in KINDS:
            body = "".join(line for line in chunk.splitlines(keepends=True) if not line.startswith("# "))
            out[m.group(1)] = body.rstrip("\n")
    return out


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/istio is not beside the repository")
def test_vendored_crds_are_byte_for_byte_istios() -> None:
    assert _docs(VENDORED_CRDS.read_text()) == _docs(SHARED.read_text())


def test_served_versions_match_the_supported_kinds() -> None:
    crds = load_crds()
    for kind, info in KINDS.items():
        assert set(crds.served[kind]) == set(info.versions)
        assert info.storage_version == "v1"


def _rules(node: Any) -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        for r in node.get("x-kubernetes-validations", ()):
            found.append((r["message"], r["rule"]))
        for v in node.values():
            found.extend(_rules(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_rules(v))
    return found


def test_every_cel_rule_of_the_supported_kinds_is_evaluated() -> None:
    crds = load_crds()
    rules = {r for schema in crds.schemas.values() for r in _rules(schema)}
    assert len(rules) == len(cel.RULES)
    for message, rule in rules:
        assert cel.lookup(message, rule) is not None, (message, rule)


def test_a_changed_rule_is_not_evaluated_but_recorded() -> None:
    assert cel.lookup("key must not be empty", "self.all(key, key.size() > 1)") is None
    assert ("key must not be empty", "self.all(key, key.size() > 1)") in cel.UNEVALUATED


def test_a_crd_file_without_a_kind_is_an_error(tmp_path: Path) -> None:
    one = yaml.safe_dump({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"})
    with pytest.raises(CrdError, match="no CustomResourceDefinition for AuthorizationPolicy"):
        parse_crds(one, tmp_path / "x.yaml")


def test_env_override_points_at_another_crd_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "crds.yaml"
    copy.write_text(VENDORED_CRDS.read_text())
    monkeypatch.setenv("MINIMESH_ISTIO_CRDS", str(copy))
    assert load_crds().path == copy
    monkeypatch.setenv("MINIMESH_ISTIO_CRDS", str(tmp_path / "missing.yaml"))
    with pytest.raises(CrdError, match="set \\$MINIMESH_ISTIO_CRDS"):
        load_crds()
