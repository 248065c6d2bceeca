"""Create or update Istio resources, like `kubectl apply -f`.

    mesh_ctl apply -f FILE|DIR|- [-f ...] [-R] [--dry-run]

YAML (several documents, ``---``) or JSON; a directory means its .yaml/.yml/.json files (-R: the whole
tree); ``-`` reads standard input. The control plane validates the whole batch against what is stored
(schema, Istio's rules, subsets that must exist, what minimesh can translate) and stores all of it or
nothing: each error is printed as ``FILE: Kind namespace/name: field.path: reason``, then a summary
(``1 error in 1 of 2 documents (2 files); nothing was applied``), and the exit status is 1. A file that
cannot be read is named with the reason (``nope.yaml: cannot read: No such file or directory``); nothing is
applied then, but the other files are still checked, so every problem is named at once. Accepted changes
are pushed to the proxies they concern (debounced, 100 ms).
"""

from __future__ import annotations

import argparse
import sys

from mesh_ctl import client
from mesh_ctl.commands._common import combined_counts, in_file_order, problems_summary
from mesh_ctl.resources.loader import Inputs, read_paths

NOTHING_APPLIED = "nothing was applied"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="file, directory or - (stdin); repeatable")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would change; store nothing")
    client.add_arguments(p)


def _refused(inputs: Inputs, lines: list[str], counts: dict[str, int] | None, warnings: list[str]) -> int:
    """Print every problem (the unreadable files' and the control plane's, in file order) and the summary
    (unless the control plane did not say what the files held: ``counts`` None)."""
    errors = in_file_order(inputs, lines)
    for line in errors:
        print(line, file=sys.stderr)
    for line in warnings:
        print(f"Warning: {line}", file=sys.stderr)
    summary = None if counts is None else problems_summary(len(errors), combined_counts(inputs, counts))
    if summary is not None:
        print(f"{summary}; {NOTHING_APPLIED}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    inputs = read_paths(args.filename, args.recursive)
    if not inputs.texts:
        return _refused(inputs, [], {}, [])
    try:
        # With a file that cannot be read nothing is applied; the others are still checked (a dry run), so
        # that every problem is named at once.
        result = client.from_args(args).apply(client.payload(inputs.texts),
                                              dry_run=args.dry_run or bool(inputs.problems))
    except client.ControlPlaneError as e:
        if e.problems:
            return _refused(inputs, e.problems, e.counts or None, e.warnings)
        for problem in inputs.problems:
            print(problem, file=sys.stderr)
        client.print_error(e)
        return 1
    if inputs.problems:
        return _refused(inputs, [], result.get("counts") or None, [str(w) for w in result.get("warnings", [])])
    for line in result.get("warnings", []):
        print(f"Warning: {line}", file=sys.stderr)
    for line in result.get("lines", []):
        print(line)
    return 0
