"""Validate a batch (one ``apply``/``analyze``/``delete``) against the state it would produce.

Every document is checked on its own (:func:`validate_resource`), duplicates inside the batch are refused,
then the cross-resource checks (:mod:`crossref`) run on ``existing - deletions + batch`` and each problem
is blamed on a document of the batch, or on a deletion. All problems of the batch are collected; the
caller refuses the whole batch when there is any error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mesh_ctl.resources.crossref import ImplicitSubsets, duplicate_destination_rules, host_conflicts, missing_subsets
from mesh_ctl.resources.model import KINDS, Resource, ResourceKey, ValidationProblem
from mesh_ctl.resources.names import host_matches, resolve_host
from mesh_ctl.resources.validate import DocumentReport, validate_resource

DELETE_ORIGIN = "<delete>"


@dataclass
class BatchReport:
    documents: list[DocumentReport]
    errors: list[ValidationProblem] = field(default_factory=list)
    warnings: list[ValidationProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _problem(resource: Resource, path: str, reason: str, origin: str | None = None) -> ValidationProblem:
    return ValidationProblem(
        origin or resource.origin,
        resource.kind,
        f"{resource.namespace}/{resource.name}",
        path,
        reason,
        0 if origin else resource.document,
    )


def validate_batch(
    resources: Sequence[Resource],
    existing: Mapping[ResourceKey, Resource] | None = None,
    deletions: Sequence[ResourceKey] = (),
    implicit_subsets: ImplicitSubsets | None = None,
) -> BatchReport:
    """All problems of applying ``resources`` (and deleting ``deletions``) on top of ``existing``.

    ``existing`` must iterate in the order the resources were first created (the store keeps that order):
    it decides which of two conflicting VirtualServices is the newer one. ``implicit_subsets(host)`` names
    the subsets a host has without a DestinationRule (see :mod:`crossref`).
    """
    existing = existing or {}
    documents = [validate_resource(r) for r in resources]
    report = BatchReport(documents)
    first_seen: dict[ResourceKey, DocumentReport] = {}
    for doc in documents:
        r = doc.resource
        if not r.name or r.kind not in KINDS:
            continue
        earlier = first_seen.get(r.key)
        if earlier is not None:
            e = earlier.resource
            doc.add(
                "metadata.name",
                f"{r.key} is also defined in {e.origin} document #{e.document}: one definition per apply",
            )
        else:
            first_seen[r.key] = doc

    pre: dict[ResourceKey, Resource] = dict(existing)
    post: dict[ResourceKey, Resource] = {k: v for k, v in existing.items() if k not in set(deletions)}
    batch_docs: dict[ResourceKey, DocumentReport] = {}
    for key, doc in first_seen.items():
        batch_docs[key] = doc
        if doc.schema_valid:
            post[key] = doc.resource  # replaces the stored one in place: creation order is kept
    order = list(post)

    # A document that is already wrong on its own gets no cross-resource findings on top (they would be
    # noise); it still takes part in the state, so other documents can refer to it.
    quiet = {key for key, doc in batch_docs.items() if doc.errors}
    pre_missing = {(f.key, f.path) for f in missing_subsets(pre, implicit_subsets)}
    changed_drs = [k for k in (*batch_docs, *deletions) if k.kind == "DestinationRule"]
    for finding in missing_subsets(post, implicit_subsets):
        if finding.key in batch_docs:
            if finding.key not in quiet:
                batch_docs[finding.key].add(finding.path, finding.reason)
            continue
        if (finding.key, finding.path) in pre_missing:
            continue  # already broken before this change
        culprits = [k for k in changed_drs if k in finding.related or _same_host(k, finding.host, pre, post)]
        message = f"subset {finding.detail} is still used by {finding.key} at {finding.path}"
        for key in culprits or changed_drs:
            if key in batch_docs:
                batch_docs[key].add("spec.subsets", message)
            else:
                old = pre[key]
                report.errors.append(_problem(old, "", f"cannot delete: {message}", DELETE_ORIGIN))
    for finding in host_conflicts(post, order):
        if finding.key in batch_docs and finding.key not in quiet:
            batch_docs[finding.key].add(finding.path, finding.reason)
    for finding in duplicate_destination_rules(post):
        if finding.key in batch_docs:
            batch_docs[finding.key].add(finding.path, finding.reason, warning=True)

    for doc in documents:
        report.errors.extend(doc.errors)
        report.warnings.extend(doc.warnings)
    return report


def _same_host(
    key: ResourceKey, host: str, pre: Mapping[ResourceKey, Resource], post: Mapping[ResourceKey, Resource]
) -> bool:
    for state in (pre, post):
        r = state.get(key)
        if r is not None and host_matches(resolve_host(str(r.spec.get("host", "")), r.namespace), host):
            return True
    return False
