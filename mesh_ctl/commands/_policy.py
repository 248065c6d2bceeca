"""What the policy verbs (fault, retries, lb, outlier) share: turn the flags into the Istio block, send it
to the control plane (``POST /v1/set-policy``), and show the block before and after."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from mesh_ctl import client
from mesh_ctl.commands._change import print_outcome, table
from mesh_ctl.edits.describe import ROUTE_BLOCKS, policy_rows
from mesh_ctl.edits.flags import FlagError

Block = dict[str, Any] | None


def refuse(message: str, usage: bool = False) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2 if usage else 1


def run_policy(args: Any, field: str, build: Callable[[], Block], subset: str | None = None) -> int:
    """Build the block (None: clear it), send it, show the result; the exit status."""
    try:
        value = build()
    except FlagError as e:
        return refuse(str(e), e.usage)
    try:
        result = client.from_args(args).set_policy(args.service, args.namespace, field, value, subset, args.dry_run)
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    show(result, field, args.output)
    return 0


def show(result: Mapping[str, Any], field: str, output: str) -> None:
    print(f"{result.get('resource')} (host {result.get('host')})")
    targets = result.get("targets") or []
    if field in ROUTE_BLOCKS and targets:
        text = ROUTE_BLOCKS[field]
        print("\n".join(table([["ROUTE", "TO", "BEFORE", "AFTER"]]
                              + [[t["label"], t["to"], text(t["before"]), text(t["after"])] for t in targets])))
    for t in targets if field not in ROUTE_BLOCKS else ():
        print("\n".join(table([["FIELD", "BEFORE", "AFTER"], *policy_rows(field, t["before"], t["after"])])))
    if result.get("before_source") == "topology" and result.get("created"):
        print("  (before: the topology's split; no VirtualService existed)")
    for note in result.get("notes") or ():
        print(f"  {note}")
    print_outcome(result, output)
