"""One document at a time: envelope (apiVersion, kind, metadata), CRD schema, then Istio's semantic rules.

Order matters: the semantic checks of :mod:`virtual_service`, :mod:`destination_rule` and :mod:`security`
assume a schema-valid spec, so they run only when the schema found nothing (as the API server runs
admission webhooks only on objects that decode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh_ctl.resources import schema
from mesh_ctl.resources.common import Report
from mesh_ctl.resources.crds import load_crds
from mesh_ctl.resources.destination_rule import check_destination_rule
from mesh_ctl.resources.model import KINDS, KNOWN_UNSUPPORTED_KINDS, Resource, ValidationProblem
from mesh_ctl.resources.names import (
    k8s_label_key_problem,
    k8s_label_value_problem,
    k8s_name_problem,
    k8s_namespace_problem,
)
from mesh_ctl.resources.normalize import prune_nulls
from mesh_ctl.resources.security import check_authorization_policy, check_peer_authentication
from mesh_ctl.resources.virtual_service import check_virtual_service

TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
# ObjectMeta fields a client may send; the server-owned ones are accepted and ignored (as kubectl apply does).
METADATA = frozenset(
    {
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "ownerReferences",
        "finalizers",
        "managedFields",
        "selfLink",
        "generateName",
    }
)
MAX_ANNOTATIONS_BYTES = 256 * 1024

Semantic = Callable[[Mapping[str, Any], str, Mapping[str, Any]], Report]
SEMANTIC: dict[str, Semantic] = {
    "VirtualService": lambda spec, ns, _meta: check_virtual_service(spec, ns),
    "DestinationRule": lambda spec, ns, _meta: check_destination_rule(spec, ns),
    "PeerAuthentication": lambda spec, ns, _meta: check_peer_authentication(spec, ns),
    "AuthorizationPolicy": lambda spec, ns, meta: check_authorization_policy(spec, ns, meta.get("annotations")),
}


@dataclass
class DocumentReport:
    resource: Resource
    errors: list[ValidationProblem] = field(default_factory=list)
    warnings: list[ValidationProblem] = field(default_factory=list)
    schema_valid: bool = False  # the spec decoded: cross-resource checks may read it

    def add(self, path: str, reason: str, warning: bool = False) -> None:
        r = self.resource
        name = f"{r.namespace}/{r.name}" if r.name and r.kind in KINDS else ""
        problem = ValidationProblem(r.origin, r.kind if r.kind in KINDS else "", name, path, reason, r.document)
        (self.warnings if warning else self.errors).append(problem)


def _check_envelope(report: DocumentReport) -> bool:
    """apiVersion, kind and unknown top-level fields; False if the schema cannot be chosen."""
    raw = report.resource.raw or report.resource.to_dict()
    for key in raw:
        if key not in TOP_LEVEL:
            report.add(key, "unknown field")
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    ok = True
    if not isinstance(kind, str) or not kind:
        report.add("kind", "required field is missing" if kind is None else "must be a non-empty string")
        ok = False
    elif kind not in KINDS:
        supported = ", ".join(KINDS)
        if kind in KNOWN_UNSUPPORTED_KINDS:
            report.add("kind", f"{kind} is not supported by minimesh (supported: {supported})")
        else:
            report.add("kind", f"unknown kind {kind!r} (supported: {supported})")
        ok = False
    if not isinstance(api_version, str) or not api_version:
        report.add("apiVersion", "required field is missing" if api_version is None else "must be a non-empty string")
        return False
    if not ok:
        return False
    info = KINDS[str(kind)]
    group, slash, version = api_version.partition("/")
    if not slash or group != info.group:
        report.add("apiVersion", f"{kind} belongs to {info.group}, not {api_version!r}")
        return False
    served = load_crds().served.get(info.kind, info.versions)
    if version not in served:
        report.add("apiVersion", f"{api_version} is not served (served: {', '.join(served)})")
        return False
    return True


def _check_string_map(report: DocumentReport, value: Any, path: str, labels: bool) -> None:
    if not isinstance(value, dict):
        report.add(path, f"must be of type object, got {schema.type_name(value)}")
        return
    size = 0
    for key, item in value.items():
        p = schema.entry(path, key)
        problem = k8s_label_key_problem(key)
        if problem:
            report.add(p, problem)
        if not isinstance(item, str):
            report.add(p, f"must be of type string, got {schema.type_name(item)}")
            continue
        size += len(key) + len(item)
        if labels:
            problem = k8s_label_value_problem(item)
            if problem:
                report.add(p, problem)
    if not labels and size > MAX_ANNOTATIONS_BYTES:
        report.add(path, f"may not be more than {MAX_ANNOTATIONS_BYTES} bytes in total")


def _check_metadata(report: DocumentReport) -> None:
    raw = report.resource.raw or report.resource.to_dict()
    meta = raw.get("metadata")
    if meta is None:
        report.add("metadata.name", "required field is missing")
        return
    if not isinstance(meta, dict):
        report.add("metadata", f"must be of type object, got {schema.type_name(meta)}")
        return
    for key in meta:
        if key not in METADATA:
            report.add(schema.child("metadata", key), "unknown field")
    if "generateName" in meta:
        report.add("metadata.generateName", "not supported: give metadata.name")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        report.add("metadata.name", "required field is missing" if name is None else "must be a non-empty string")
    else:
        problem = k8s_name_problem(name)
        if problem:
            report.add("metadata.name", problem)
    namespace = meta.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str):
            report.add("metadata.namespace", f"must be of type string, got {schema.type_name(namespace)}")
        elif namespace:
            problem = k8s_namespace_problem(namespace)
            if problem:
                report.add("metadata.namespace", problem)
    for key in ("labels", "annotations"):
        if meta.get(key) is not None:
            _check_string_map(report, meta[key], f"metadata.{key}", labels=key == "labels")


def validate_resource(resource: Resource) -> DocumentReport:
    """Every problem of one document on its own (no other resource consulted)."""
    report = DocumentReport(resource)
    envelope_ok = _check_envelope(report)
    _check_metadata(report)
    if not envelope_ok:
        return report
    crd = load_crds().schema(resource.kind, resource.version)
    assert crd is not None  # _check_envelope checked the version is served
    raw = resource.raw or resource.to_dict()
    spec_schema = crd.get("properties", {}).get("spec", {})
    spec = raw.get("spec", {})
    if spec is None:
        spec = {}
    found: list[tuple[str, str]] = []
    schema.validate(spec, spec_schema, "spec", found)
    for path, reason in found:
        report.add(path, reason)
    if found or not isinstance(spec, dict):
        return report
    report.schema_valid = True
    # The schema treats a null in a non-nullable field as absent (the API server prunes it), and so does the
    # translator (normalize.prune_nulls): the semantic rules must see the spec without them too.
    semantic = SEMANTIC[resource.kind](prune_nulls(spec), resource.namespace, resource.metadata)
    seen = {(p.path, p.reason) for p in report.errors}
    for path, reason in semantic.errors:
        if (path, reason) not in seen:
            report.add(path, reason)
            seen.add((path, reason))
    for path, reason in semantic.warnings:
        report.add(path, reason, warning=True)
    return report
