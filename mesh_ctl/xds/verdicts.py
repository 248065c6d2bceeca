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


def record_validation(metrics: ControlPlaneMetrics, resources: Sequence[Resource],
                      problems: Sequence[ValidationProblem]) -> None:
    by_key = {_key(r): r for r in resources}
    failed: set[Key] = set()
    for p in problems:
        key = (p.origin, p.document, p.kind, p.name)
        if key in failed:
            continue
        failed.add(key)
        resource = by_key.get(key)
        info = kind_info(p.kind) if p.kind else None
        if not p.kind:
            metrics.validation_failed_for("", "", "", YAML_DECODE_ERROR)
        elif info is None:
            group, version = (resource.group, resource.version) if resource is not None else ("", "")
            metrics.validation_failed_for(group, version, p.kind.lower(), UNKNOWN_TYPE)
        else:
            version = resource.version if resource is not None else info.storage_version
            metrics.validation_failed_for(info.group, version, info.plural, INVALID_RESOURCE)
    for key, r in by_key.items():
        info = kind_info(r.kind)
        if key not in failed and info is not None:
            metrics.validation_passed_for(info.group, r.version, info.plural)
