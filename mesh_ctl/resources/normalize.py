"""The translator's view of a validated resource: a plain dict, one spelling for everything.

``normalized(resource)`` returns ``{"apiVersion", "kind", "metadata", "spec"}`` where

- ``apiVersion`` is the group's storage version (``networking.istio.io/v1``, ``security.istio.io/v1``):
  v1, v1beta1 and v1alpha3 share one schema, so only the label changes (the stored document keeps what the
  user wrote);
- ``metadata`` has ``name``, ``namespace`` (``default`` when absent), ``labels`` and ``annotations`` (both
  ``{}`` when absent) and, for stored resources, ``resourceVersion``, ``generation``,
  ``creationTimestamp`` and ``uid``;
- ``spec`` is the spec as written (camelCase, Istio's field names) with nulls removed (the API server
  prunes them; for Istio's wrapper fields null means unset) and the one snake_case alias the CRDs allow,
  ``mirror_percent``, renamed ``mirrorPercent``. Values are not rewritten: ``LEAST_CONN``, durations such
  as ``"1m30s"`` and deprecated fields reach the translator as written
  (:func:`mesh_ctl.resources.names.parse_duration` reads durations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh_ctl.resources.model import KINDS, Resource

SERVER_FIELDS = ("resourceVersion", "generation", "creationTimestamp", "uid")


def prune_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def _rename_aliases(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    if kind == "VirtualService":
        for http in spec.get("http") or ():
            if isinstance(http, dict) and "mirror_percent" in http:
                legacy = http.pop("mirror_percent")
                http.setdefault("mirrorPercent", legacy)
    return spec


def normalized_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return _rename_aliases(kind, prune_nulls(spec))


def normalized(resource: Resource) -> dict[str, Any]:
    """The translator's dict for ``resource`` (see the module docstring). A fresh copy every call."""
    info = KINDS.get(resource.kind)
    api_version = f"{info.group}/{info.storage_version}" if info is not None else resource.api_version
    meta = resource.metadata
    metadata: dict[str, Any] = {
        "name": resource.name,
        "namespace": resource.namespace,
        "labels": dict(meta.get("labels") or {}),
        "annotations": dict(meta.get("annotations") or {}),
    }
    for key in SERVER_FIELDS:
        if key in meta:
            metadata[key] = meta[key]
    return {
        "apiVersion": api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "spec": normalized_spec(resource.kind, resource.spec),
    }
