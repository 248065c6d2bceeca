"""The validating webhook's metrics for ``apply``: istiod's ``galley_validation_passed`` /
``galley_validation_failed`` (pkg/webhooks/validation/server/monitoring.go), one verdict per resource.

Labels as Istio's webhook sets them from the admission request: ``group`` (``networking.istio.io``),
``version`` (``v1``), ``resource`` (the plural, ``virtualservices``), and for a failure its ``reason``:
``invalid_resource`` (the validator refused it), ``unknown_type`` (a kind minimesh does not serve) or
``yaml_decode_error`` (a document that is no resource at all: no group, version or resource is known). A
resource with several problems fails once. Dry runs are not counted (Istio skips them too).
"""

from __future__ import annotations

from collections.abc import Sequence

from mesh_ctl.monitoring.families import INVALID_RESOURCE, UNKNOWN_TYPE, YAML_DECODE_ERROR, ControlPlaneMetrics
from mesh_ctl.resources import Resource, ValidationProblem, kind_info

Key = tuple[str, int, str, str]  # origin, document, kind, namespace/name


def _key(r: Resource) -> Key:
    return r.origin, r.document, r.kind, f"{r.namespace}/{r.name}"


def _resource_of(p: ValidationProblem, by_document: dict[tuple[str, int], list[Resource]]) -> Resource | None:
    """The resource a problem is about: same file and document, and same kind and name when the problem names
    them (the validator's "unsupported kind" names neither)."""
    for r in by_document.get((p.origin, p.document), ()):
        if not p.kind or (r.kind == p.kind and f"{r.namespace}/{r.name}" == p.name):
            return r
    return None


def record_validation(metrics: ControlPlaneMetrics, resources: Sequence[Resource],
                      problems: Sequence[ValidationProblem]) -> None:
    by_document: dict[tuple[str, int], list[Resource]] = {}
    for r in resources:
        by_document.setdefault((r.origin, r.document), []).append(r)
    failed: set[Key] = set()
    for p in problems:
        resource = _resource_of(p, by_document)
        key = _key(resource) if resource is not None else (p.origin, p.document, p.kind, p.name)
        if key in failed:
            continue
        failed.add(key)
        kind = resource.kind if resource is not None else p.kind
        info = kind_info(kind) if kind else None
        if not kind:
            metrics.validation_failed_for("", "", "", YAML_DECODE_ERROR)
        elif info is None:
            group, version = (resource.group, resource.version) if resource is not None else ("", "")
            metrics.validation_failed_for(group, version, kind.lower(), UNKNOWN_TYPE)
        else:
            version = resource.version if resource is not None else info.storage_version
            metrics.validation_failed_for(info.group, version, info.plural, INVALID_RESOURCE)
    for r in resources:
        info = kind_info(r.kind)
        if _key(r) not in failed and info is not None:
            metrics.validation_passed_for(info.group, r.version, info.plural)
