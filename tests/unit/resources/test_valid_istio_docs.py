"""Real Istio documents (istio.io docs, the Bookinfo samples, Istio's own CRD test data) are accepted.

Files are in ``data/istio/``, each with its source URL. Each document is validated on its own, on top of
every DestinationRule of the data (so the VirtualServices' subsets exist), as ``kubectl apply`` of that
document would be on a cluster holding them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_ctl.resources import Resource, ResourceKey, load_path, validate_batch

DATA = Path(__file__).parent / "data" / "istio"
FILES = sorted(DATA.glob("*.yaml"))

# Subsets that examples route to but whose DestinationRule is not shown on the same page.
SUPPORT = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-prod-subsets}
spec:
  host: ratings.prod.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
"""


def _destination_rules() -> dict[ResourceKey, Resource]:
    from mesh_ctl.resources import load_documents

    out: dict[ResourceKey, Resource] = {}
    for f in FILES:
        for r in load_path(f):
            if r.kind == "DestinationRule":
                out[r.key] = r  # the last definition wins, as with successive kubectl applies
    for r in load_documents(SUPPORT, "<support>"):
        out[r.key] = r
    return out


CASES = [(f.name, i, r) for f in FILES for i, r in enumerate(load_path(f), 1)]


def test_at_least_a_dozen_documents_from_istio() -> None:
    assert len(FILES) >= 10
    assert len(CASES) >= 30
    assert {r.kind for _, _, r in CASES} == {
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
    }
    for f in FILES:
        assert "istio" in f.read_text().splitlines()[0], f"{f.name}: first line names the source"


@pytest.mark.parametrize("resource", [c[2] for c in CASES], ids=[f"{c[0]}#{c[1]}" for c in CASES])
def test_istio_document_is_accepted(resource: Resource) -> None:
    existing = {k: v for k, v in _destination_rules().items() if k != resource.key}
    report = validate_batch([resource], existing)
    assert [str(e) for e in report.errors] == []
