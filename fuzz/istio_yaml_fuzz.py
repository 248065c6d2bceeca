"""Istio YAML (:mod:`mesh_ctl.resources`) through what ``mesh_ctl apply`` does before the store takes it.

Mode byte bit 0 clear: the rest is the text of one file (UTF-8, invalid bytes replaced). Bit 0 set: the rest
is a JSON document (up to a NUL byte, usually a real manifest) with structure-aware edits
(:mod:`fuzz._mutate`), written back as JSON or, bit 1, as YAML.

Path: :func:`load_files` (never raises: problems are reported), :func:`validate_batch` against an empty store
(per-document envelope, CRD schema and Istio's semantic rules, then cross-resource checks), and for each
document that validated, the store's translation check (:func:`check_resource` on the normalized resource,
as ``mesh_ctl up``'s store runs it), which may only raise ``TranslationError``. The store catches
``ValueError``/``LookupError`` from its checks and reports them as problems, which would hide a crash there;
this target does not.
"""

from __future__ import annotations

import json

import yaml

from fuzz._input import Input
from fuzz._mutate import mutate
from mesh_ctl.resources import normalized, validate_batch
from mesh_ctl.resources.loader import load_files
from mesh_ctl.translate.check import check_resource
from mesh_ctl.translate.errors import TranslationError


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte()
    if mode & 1:
        text, _, edits = inp.rest().partition(b"\0")
        try:
            doc = mutate(json.loads(text), Input(edits))
            text_out = yaml.safe_dump(doc) if mode & 2 else json.dumps(doc)
        except (ValueError, yaml.YAMLError, RecursionError):
            return  # not a seed document, or one PyYAML / json cannot write (NaN in strict mode...)
    else:
        text_out = inp.rest().decode("utf-8", "replace")
    loaded = load_files([("fuzz.yaml", text_out)])
    assert loaded.files == 1
    for p in loaded.problems:
        str(p)
    report = validate_batch(loaded.resources)
    for p in (*report.errors, *report.warnings):
        str(p)
    for doc in report.documents:
        if doc.errors or not doc.schema_valid:
            continue
        try:
            check_resource(normalized(doc.resource))
        except TranslationError:
            pass
