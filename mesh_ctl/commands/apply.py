"""Create or update Istio resources, like `kubectl apply -f`.

    mesh_ctl apply -f FILE|DIR|- [-f ...] [-R] [--dry-run]

YAML (several documents, ``---``) or JSON; a directory means its .yaml/.yml/.json files (-R: the whole
tree); ``-`` reads standard input. The control plane validates the whole batch against what is stored
(schema, Istio's rules, subsets that must exist, what minimesh can translate) and stores all of it or
nothing: each error is printed as ``FILE: Kind namespace/name: field.path: reason`` and the exit status is
1. Accepted changes are pushed to the proxies they concern (debounced, 100 ms).
"""

from __future__ import annotations

import argparse
import sys

from mesh_ctl import client
from mesh_ctl.resources import LoadError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="file, directory or - (stdin); repeatable")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would change; store nothing")
    client.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        files = client.read_files(args.filename, args.recursive)
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        result = client.from_args(args).apply(files, dry_run=args.dry_run)
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    for line in result.get("warnings", []):
        print(f"Warning: {line}", file=sys.stderr)
    for line in result.get("lines", []):
        print(line)
    return 0
