"""Helpers for the resources tests: YAML in, (path, reason) pairs out."""

from __future__ import annotations

import textwrap

from mesh_ctl.resources import Resource, ResourceKey, load_documents, validate_batch

PAYMENT_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def docs(text: str, origin: str = "test.yaml") -> list[Resource]:
    return load_documents(textwrap.dedent(text), origin)


def state(*texts: str) -> dict[ResourceKey, Resource]:
    out: dict[ResourceKey, Resource] = {}
    for text in texts:
        for r in docs(text, "<state>"):
            out[r.key] = r
    return out


def errors(text: str, *existing: str) -> list[tuple[str, str]]:
    report = validate_batch(docs(text), state(*existing))
    return [(p.path, p.reason) for p in report.errors]
