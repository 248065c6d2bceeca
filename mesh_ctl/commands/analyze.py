"""Validate Istio resources without applying them, like `istioctl analyze -f`.

    mesh_ctl analyze -f FILE|DIR|- [-f ...] [-R] [--offline]

Checks each document (schema, Istio's rules, what minimesh can translate) and the batch against what the
running control plane stores (subsets that must exist, conflicting hosts). Nothing is stored. Every problem
of every file is printed, in file order: ``FILE: Kind namespace/name: field.path: reason`` (a file that
cannot be read or parsed, too), then a summary (``1 error in 1 of 2 documents (2 files)``); errors make the
exit status 1, warnings do not. With no control plane running for the run dir (or --offline) the files are
checked on their own, against an empty store; a control plane named with --control-plane (or
$MINIMESH_CONTROL_PLANE) that cannot be reached is an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from mesh_ctl import client
from mesh_ctl.commands._common import combined_counts, in_file_order, plural, problems_summary
from mesh_ctl.resources.loader import in_order, load_files, read_paths

AGAINST_STORE = "against the control plane's store"
OFFLINE = "offline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="file, directory or - (stdin); repeatable")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("--offline", action="store_true", help="do not ask the control plane; check the files alone")
    client.add_arguments(p)


def offline(texts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The same checks as the control plane's (and the same answer), against an empty store."""
    from mesh_ctl.store import ConfigStore
    from mesh_ctl.translate import check_resource

    loaded = load_files(texts)
    with tempfile.TemporaryDirectory(prefix="mesh_ctl-analyze-") as d:
        report = ConfigStore(d, checks=[check_resource]).analyze(loaded.resources)
    errors = in_order([*loaded.problems, *report.errors], [origin for origin, _ in texts])
    return {"errors": [str(p) for p in errors], "warnings": [str(w) for w in report.warnings],
            "documents": loaded.documents, "counts": loaded.counts(errors)}


def run(args: argparse.Namespace) -> int:
    inputs = read_paths(args.filename, args.recursive)
    result: dict[str, Any] = {"errors": [], "warnings": [], "counts": {}}
    where = OFFLINE
    if inputs.texts and args.offline:
        result = offline(inputs.texts)
    elif inputs.texts:
        api = client.from_args(args)
        try:
            result, where = api.analyze(client.payload(inputs.texts)), AGAINST_STORE
        except client.ControlPlaneError as e:
            if e.status or api.endpoint.how in ("flag", "env"):  # an answer, or the one asked for is not there
                client.print_error(e)
                return 1
            print(f"note: {e.brief}; checking the files on their own, as --offline does", file=sys.stderr)
            result = offline(inputs.texts)
    errors = in_file_order(inputs, [str(line) for line in result.get("errors", [])])
    warnings = [str(w) for w in result.get("warnings", [])]
    for line in errors:
        print(line)
    for line in warnings:
        print(f"Warning: {line}")
    counts = combined_counts(inputs, result.get("counts") or {})
    if errors:
        summary = problems_summary(len(errors), counts)
        if summary is not None:
            print(f"{summary}; checked {where}" if inputs.texts else summary, file=sys.stderr)
        return 1
    if not warnings:
        print(f"\u2714 No validation issues found when analyzing {plural(counts.get('documents', 0), 'document')} "
              f"({plural(counts['files'], 'file')}) {where}.")
    return 0
