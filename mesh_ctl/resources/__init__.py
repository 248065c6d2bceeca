"""Istio resources in: load, validate (field paths in every error), normalise for the translator.

Architecture (each step only uses the ones above it)::

    loader.py            text / file / dir / stdin -> [Resource]        (YAML or JSON, kind: List, line numbers)
    crds.py              Istio's CRDs (crds/istio-crds.yaml) -> OpenAPI v3 schema per kind and version
    schema.py + cel.py   a spec against its schema: types, enums, unknown fields, oneOf, CEL rules
    names.py, regex.py   RFC 1123 names, hosts, labels, Go durations, RE2 syntax
    virtual_service.py   Istio's semantic rules per kind (pilot's validation.go, reworded with field paths)
    destination_rule.py
    security.py          PeerAuthentication, AuthorizationPolicy (+ what minimesh cannot enforce)
    validate.py          one document: envelope -> schema -> semantic          => DocumentReport
    crossref.py          several documents: subsets exist, hosts do not conflict
    batch.py             one apply/delete/analyze against the state after it   => BatchReport
    normalize.py         Resource -> the translator's plain dict
    weights.py           set-weight: the VirtualService to apply

Public API (``from mesh_ctl.resources import ...``):

- ``load_documents(text, origin) -> list[Resource]``, ``load_path(path | "-", recursive=False)``,
  ``load_paths(paths, recursive=False)``: raise :class:`LoadError` (an :class:`InvalidConfig`) on syntax.
- ``validate_batch(resources, existing=None, deletions=()) -> BatchReport`` (``.ok``, ``.errors``,
  ``.warnings``); ``validate_resource(resource) -> DocumentReport`` for one document alone.
- ``Resource`` (``api_version`` as written, ``kind``, ``metadata``, ``spec``, ``origin``, ``key``),
  ``ResourceKey(group, kind, namespace, name)``, ``ValidationProblem(origin, kind, name, path, reason)``
  rendered ``FILE: VirtualService default/payment: spec.http[0].route[1].weight: must be >= 0``.
- ``normalized(resource) -> dict``: ``{"apiVersion": "<group>/v1", "kind", "metadata", "spec"}`` (see
  :mod:`normalize`); ``parse_duration("1m30s") -> 90.0``.
- ``weights_virtual_service(host, namespace, {"v1": 90, "v2": 10}, existing_vs=None, known_subsets=None)``.
- ``KINDS``, ``kind_info("vs")``: the supported kinds (networking v1/v1beta1/v1alpha3 VirtualService and
  DestinationRule; security v1/v1beta1 PeerAuthentication and AuthorizationPolicy).

The durable store that uses all this is :mod:`mesh_ctl.store`.
"""

from __future__ import annotations

from mesh_ctl.resources.batch import BatchReport, validate_batch
from mesh_ctl.resources.loader import load_documents, load_path, load_paths
from mesh_ctl.resources.model import (
    KINDS,
    InvalidConfig,
    KindInfo,
    LoadError,
    Resource,
    ResourceKey,
    ValidationProblem,
    kind_info,
)
from mesh_ctl.resources.names import parse_duration
from mesh_ctl.resources.normalize import normalized
from mesh_ctl.resources.validate import DocumentReport, validate_resource
from mesh_ctl.resources.weights import weights_virtual_service

__all__ = [
    "KINDS",
    "BatchReport",
    "DocumentReport",
    "InvalidConfig",
    "KindInfo",
    "LoadError",
    "Resource",
    "ResourceKey",
    "ValidationProblem",
    "kind_info",
    "load_documents",
    "load_path",
    "load_paths",
    "normalized",
    "parse_duration",
    "validate_batch",
    "validate_resource",
    "weights_virtual_service",
]
