"""The vendored CRDs are Istio's, every CEL rule of the supported kinds is evaluated, versions match.

Everything the main tests need is in the repository: ``mesh_ctl/resources/crds/istio-crds.yaml`` (the four
documents of Istio's ``customresourcedefinitions.gen.yaml`` minimesh serves, with Istio's LICENSE beside it)
and, below, the SHA-256 of each of those documents as published by istio/api at :data:`ISTIO_API_COMMIT`.
Those digests were checked against the upstream file when they were recorded, so "the vendored documents
hash to these digests" is "the vendored documents are Istio's, byte for byte" without keeping Istio's whole
file (~0.9 MB, mostly kinds minimesh refuses) in the repository.

When ``../shared/istio`` is beside the repository (our machines), the first test also checks the upstream
file itself against the same digests and the vendored copy; nothing else depends on it, and nothing is skipped
without it.

To move to another Istio release: copy the four documents (unchanged) from the new
``kubernetes/customresourcedefinitions.gen.yaml`` into ``istio-crds.yaml``, update its header and
:data:`ISTIO_API_COMMIT`, and record the new digests (``_docs`` + ``hashlib.sha256``, printed by the failing
test's assertion); then fix whatever ``cel.RULES`` and ``KINDS`` the other tests here report.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.resources import KINDS, cel
from mesh_ctl.resources.crds import VENDORED_CRDS, CrdError, load_crds, parse_crds
from tests.unit.resources.helpers import errors

SHARED_DIR = Path(__file__).resolve().parents[4] / "shared" / "istio"
SHARED = SHARED_DIR / "customresourcedefinitions.gen.yaml"
LICENSE = VENDORED_CRDS.with_name("LICENSE")

ISTIO_API_COMMIT = "b8f8791d9653b2edc77a071d48887e582cfe84bf"
# SHA-256 of each supported kind's document (as :func:`_docs` cuts it) in istio/api @ISTIO_API_COMMIT
# kubernetes/customresourcedefinitions.gen.yaml; checked against that file when recorded.
ISTIO_DOC_SHA256 = {
    "AuthorizationPolicy": "3ea7bfba870ff88922f40fab25669128bf5573a2bf5be9f29d1649a21a69a3b0",
    "DestinationRule": "1f235ac2612d08461692fc1671d8e2f96db17e185ea54601e49b2730aa3f76e5",
    "PeerAuthentication": "12e53b8515a3ade74b4365467596a77bef5156f2a9ddf7a01e0eef70665e932e",
    "VirtualService": "7c3e8467c487dd8636424d5e53868324f91ff0c1688aa8030c985f3e3fe5cdae",
}
# The Apache License 2.0 text, as in istio/api (https://www.apache.org/licenses/LICENSE-2.0.txt).
LICENSE_SHA256 = "9fa6e54dafda853bb3cdc01486b677a55102f0d488282a85ba6e426d9125f8c5"
_DOC_SPLIT = re.compile(r"(?m)^---[ \t]*\n?")


def _docs(text: str) -> dict[str, str]:
    out = {}
    for chunk in _DOC_SPLIT.split(text):
        m = re.search(r"(?m)^    kind: (\w+)[ \t]*$", chunk)
        if m and m.group(1) in KINDS:
            body = "".join(line for line in chunk.splitlines(keepends=True) if not line.startswith("# "))
            out[m.group(1)] = body.rstrip("\n")
    return out


def _digests(text: str) -> dict[str, str]:
    return {kind: hashlib.sha256(body.encode()).hexdigest() for kind, body in _docs(text).items()}


def test_vendored_crds_are_byte_for_byte_istios() -> None:
    vendored = VENDORED_CRDS.read_text(encoding="utf-8")
    assert _digests(vendored) == ISTIO_DOC_SHA256
    if SHARED.exists():  # our machines: also the upstream file itself (elsewhere the digests stand for it)
        upstream = SHARED.read_text(encoding="utf-8")
        assert _digests(upstream) == ISTIO_DOC_SHA256
        assert _docs(vendored) == _docs(upstream)
        assert ISTIO_API_COMMIT in (SHARED_DIR / "README.md").read_text(encoding="utf-8")
        assert LICENSE.read_bytes() == (SHARED_DIR / "LICENSE").read_bytes()


def test_the_vendored_file_holds_only_the_supported_kinds_under_a_header_naming_their_source() -> None:
    text = VENDORED_CRDS.read_text(encoding="utf-8")
    chunks = _DOC_SPLIT.split(text)
    assert len(chunks) == len(KINDS)  # one document per supported kind, nothing else (no stray CRDs)
    for chunk in chunks:
        doc = yaml.safe_load(chunk)
        assert doc["kind"] == "CustomResourceDefinition"
        assert doc["spec"]["names"]["kind"] in KINDS
        assert doc["spec"]["group"] == KINDS[doc["spec"]["names"]["kind"]].group
    lines = text.splitlines()
    n = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header = "\n".join(lines[:n])
    # _docs drops "# " lines, so a comment inside a document would escape the digests: allow none there
    assert not [line for line in lines[n:] if line.startswith("#")]
    assert ISTIO_API_COMMIT in header
    assert "kubernetes/customresourcedefinitions.gen.yaml" in header
    assert "Apache License 2.0" in header


def test_istios_license_is_beside_the_vendored_crds() -> None:
    text = LICENSE.read_text(encoding="utf-8")
    assert "Apache License" in text.splitlines()[1]
    assert "Version 2.0, January 2004" in text
    assert hashlib.sha256(text.encode()).hexdigest() == LICENSE_SHA256


def test_served_versions_match_the_supported_kinds() -> None:
    crds = load_crds()
    for kind, info in KINDS.items():
        assert set(crds.served[kind]) == set(info.versions)
        assert info.storage_version == "v1"
        for version in info.versions:
            assert crds.schema(kind, version) is not None


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


PA_MODE = """
apiVersion: security.istio.io/{version}
kind: PeerAuthentication
metadata: {{name: pa, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"""
VS_V1ALPHA3 = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
"""


def test_the_validator_built_from_the_vendored_crds_accepts_and_rejects_known_documents() -> None:
    assert errors(PA_MODE.format(version="v1", mode="STRICT")) == []
    assert errors(PA_MODE.format(version="v1beta1", mode="PERMISSIVE")) == []
    assert errors(PA_MODE.format(version="v1", mode="BOGUS")) == [
        ("spec.mtls.mode", "unsupported value 'BOGUS': must be one of UNSET, DISABLE, PERMISSIVE, STRICT")
    ]
    assert errors(PA_MODE.format(version="v1alpha1", mode="STRICT")) == [
        ("apiVersion", "security.istio.io/v1alpha1 is not served (served: v1, v1beta1)")
    ]
    vs = VS_V1ALPHA3
    assert errors(vs) == []
    assert errors(vs + "  tcpRoutes: []\n") == [("spec.tcpRoutes", "unknown field")]


def test_the_validator_reads_its_schemas_from_the_crd_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same document is judged by whatever the CRD file says: here, a copy whose PeerAuthentication
    # v1 schema also allows mode BOGUS.
    text = VENDORED_CRDS.read_text(encoding="utf-8")
    start = text.index("    kind: PeerAuthentication")
    enum = "                    - STRICT\n"  # spec.mtls.mode of the first (v1) version
    at = text.index(enum, start)
    edited = tmp_path / "crds.yaml"
    edited.write_text(text[:at] + enum + enum.replace("STRICT", "BOGUS") + text[at + len(enum) :], encoding="utf-8")
    monkeypatch.setenv("MINIMESH_ISTIO_CRDS", str(edited))
    assert errors(PA_MODE.format(version="v1", mode="BOGUS")) == []
    assert errors(PA_MODE.format(version="v1beta1", mode="BOGUS")) != []  # only the v1 schema was edited
    monkeypatch.delenv("MINIMESH_ISTIO_CRDS")
    assert errors(PA_MODE.format(version="v1", mode="BOGUS")) != []


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
