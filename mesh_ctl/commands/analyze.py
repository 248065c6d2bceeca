"""Validate Istio resources without applying them, like `istioctl analyze -f`.

    mesh_ctl analyze -f FILE|DIR|- [-f ...] [-R] [--offline]

Checks each document (schema, Istio's rules, what minimesh can translate) and the batch against what the
running control plane stores (subsets that must exist, conflicting hosts). Nothing is stored. Errors print
as ``FILE: Kind namespace/name: field.path: reason`` and make the exit status 1; warnings do not. With no
control plane running (or --offline) the files are checked on their own, against an empty store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

from mesh_ctl import client
from mesh_ctl.resources import LoadError, load_documents


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="file, directory or - (stdin); repeatable")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("--offline", action="store_true", help="do not ask the control plane; check the files alone")
    client.add_arguments(p)


def offline(files: list[dict[str, str]]) -> dict[str, Any]:
    """The same checks as the control plane's, against an empty store."""
    from mesh_ctl.store import ConfigStore
    from mesh_ctl.translate import check_resource

    resources = []
    for f in files:
        resources.extend(load_documents(f["text"], f["origin"]))
    with tempfile.TemporaryDirectory(prefix="mesh_ctl-analyze-") as d:
        report = ConfigStore(d, checks=[check_resource]).analyze(resources)
    return {"errors": [str(p) for p in report.errors], "warnings": [str(w) for w in report.warnings],
            "documents": len(resources)}


def run(args: argparse.Namespace) -> int:
    try:
        files = client.read_files(args.filename, args.recursive)
        if args.offline:
            result, where = offline(files), "offline"
        else:
            try:
                result, where = client.from_args(args).analyze(files), "against the control plane's store"
            except client.ControlPlaneError as e:
                if e.status:
                    client.print_error(e)
                    return 1
                print(f"note: {e}\nnote: checking the files on their own (--offline)", file=sys.stderr)
                result, where = offline(files), "offline"
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    errors, warnings = result.get("errors", []), result.get("warnings", [])
    for line in errors:
        print(line)
    for line in warnings:
        print(f"Warning: {line}")
    count = result.get("documents", "?")
    if errors:
        print(f"{len(errors)} error(s) in {count} document(s) ({where})", file=sys.stderr)
        return 1
    if not warnings:
        print(f"\u2714 No validation issues found when analyzing {count} document(s) ({where}).")
    return 0
