"""Istio's CustomResourceDefinitions: the OpenAPI v3 schema of each supported kind and served version.

The CRDs come from ``crds/istio-crds.yaml`` beside this file: the VirtualService, DestinationRule,
PeerAuthentication and AuthorizationPolicy documents of Istio's ``customresourcedefinitions.gen.yaml``,
copied unchanged (``tests/unit/resources/test_crds.py`` checks each against the SHA-256 of Istio's document,
recorded there). ``$MINIMESH_ISTIO_CRDS`` points at another CRD file (Istio's full file works as is). The
file is parsed once, on first use, and only the documents of the supported kinds are parsed at all (a CRD
file is large; parsing the four kinds takes ~0.4 s).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh_ctl.resources.model import KINDS

ENV_CRDS = "MINIMESH_ISTIO_CRDS"
VENDORED_CRDS = Path(__file__).with_name("crds") / "istio-crds.yaml"
_DOC_SPLIT = re.compile(r"(?m)^---[ \t]*\n?")
_NAMES_KIND = re.compile(r"(?m)^    kind: (\w+)[ \t]*$")

Schema = Mapping[str, Any]


class CrdError(Exception):
    """The CRD file is missing, unreadable, or lacks a supported kind."""


@dataclass(frozen=True, slots=True)
class CrdSchemas:
    path: Path
    # (kind, version) -> the openAPIV3Schema of that served version
    schemas: Mapping[tuple[str, str], Schema]
    served: Mapping[str, tuple[str, ...]]  # kind -> served versions, in CRD order

    def schema(self, kind: str, version: str) -> Schema | None:
        return self.schemas.get((kind, version))


def crd_path() -> Path:
    override = os.environ.get(ENV_CRDS)
    return Path(override).expanduser() if override else VENDORED_CRDS


def parse_crds(text: str, path: Path) -> CrdSchemas:
    """Pick the supported kinds' CRDs out of a (multi-document) CRD file and index their schemas."""
    schemas: dict[tuple[str, str], Schema] = {}
    served: dict[str, tuple[str, ...]] = {}
    for chunk in _DOC_SPLIT.split(text):
        m = _NAMES_KIND.search(chunk)
        if m is None or m.group(1) not in KINDS:
            continue
        doc = yaml.load(chunk, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        kind = spec["names"]["kind"]
        if spec.get("group") != KINDS[kind].group:
            continue
        versions = []
        for v in spec["versions"]:
            if v.get("served", True):
                schemas[(kind, v["name"])] = v["schema"]["openAPIV3Schema"]
                versions.append(v["name"])
        served[kind] = tuple(versions)
    missing = sorted(set(KINDS) - set(served))
    if missing:
        raise CrdError(f"{path}: no CustomResourceDefinition for {', '.join(missing)}")
    return CrdSchemas(path, schemas, served)


@functools.cache
def _load(path: Path) -> CrdSchemas:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CrdError(f"cannot read Istio CRDs from {path}: {err} (set ${ENV_CRDS} to the CRD file)") from err
    return parse_crds(text, path)


def load_crds() -> CrdSchemas:
    """The schemas from :func:`crd_path`, parsed once per process and path."""
    return _load(crd_path())
