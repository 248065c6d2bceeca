"""How the commands that edit a service's resources (set-weight, fault, retries, lb, outlier) take their
options and show what they changed: a before/after table, notes, then kubectl's line with the revision.

Exit status: 0 done (or nothing to do), 1 refused (a bad value, an unknown service or subset, an edit that
cannot be made; nothing was changed), 2 a malformed command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mesh_ctl import client


def add_service_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", metavar="SERVICE", help="the service (short name or FQDN), e.g. payment")


def add_change_options(p: argparse.ArgumentParser, shown: str) -> None:
    """``-n``, ``--dry-run``, ``-o diff|yaml`` and the control plane's address; ``shown``: what the diff shows."""
    p.add_argument("-n", "--namespace", default="default", help="the service's namespace (default: default)")
    p.add_argument("--dry-run", action="store_true", help="show the change; store nothing")
    p.add_argument("-o", "--output", choices=("diff", "yaml"), default="diff",
                   help=f"diff: {shown} before and after (default); yaml: also the resource")
    client.add_arguments(p)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns, each line indented by two spaces."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def print_outcome(result: Mapping[str, Any], output: str) -> None:
    """The warnings, kubectl's lines (with the revision, or "(dry run)") and, with ``-o yaml``, the resource."""
    for line in result.get("warnings", []):
        print(f"Warning: {line}", file=sys.stderr)
    for line in result.get("lines", []):
        print(f"{line} (revision {result.get('revision')})" if not result.get("dry_run") else line)
    if output == "yaml" and result.get("document"):
        print("---\n" + yaml.safe_dump(result["document"], sort_keys=False).rstrip())
