"""Delete Istio resources, like `kubectl delete`.

    mesh_ctl delete KIND NAME [NAME ...] [-n NAMESPACE] [--ignore-not-found] [--dry-run]
    mesh_ctl delete -f FILE|DIR|- [-R]

A deletion that would leave a stored VirtualService pointing at a subset that no longer exists is refused
(the error names the VirtualService and the field), and nothing more is deleted. Exit status 1 on an error
or a resource that does not exist (unless --ignore-not-found).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mesh_ctl import client
from mesh_ctl.resources import LoadError, kind_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", nargs="?", help="vs, dr, pa, ap (or their full names)")
    p.add_argument("names", metavar="NAME", nargs="*")
    p.add_argument("-f", "--filename", action="append", metavar="FILE|DIR|-",
                   help="delete the resources these files define")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    p.add_argument("--ignore-not-found", action="store_true", help="a missing resource is not an error")
    p.add_argument("--dry-run", action="store_true", help="check only; delete nothing")
    client.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"dry_run": args.dry_run, "ignore_not_found": args.ignore_not_found}
    if args.filename:
        if args.kind:
            print("error: give either -f or KIND NAME, not both", file=sys.stderr)
            return 2
        try:
            body["files"] = client.read_files(args.filename, args.recursive)
        except LoadError as e:
            for problem in e.problems:
                print(problem, file=sys.stderr)
            return 1
    else:
        info = kind_info(args.kind or "")
        if info is None or not args.names:
            print("error: give KIND NAME [NAME ...] (KIND: vs, dr, pa, ap) or -f FILE", file=sys.stderr)
            return 2
        body.update(kind=info.kind, namespace=args.namespace, names=args.names)
    try:
        result = client.from_args(args).delete(body)
    except client.ControlPlaneError as e:
        for done in e.body.get("deleted", []):
            for line in done.get("lines", []):
                print(line)
        client.print_error(e)
        return 1
    for done in result.get("results", []):
        for line in done.get("lines", []):
            print(line)
    return 0
