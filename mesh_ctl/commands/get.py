"""Show stored Istio resources, like `kubectl get`.

    mesh_ctl get KIND [NAME ...] [-n NAMESPACE | -A] [-o table|yaml|json|name]

KIND is VirtualService / virtualservices / vs, DestinationRule / dr, PeerAuthentication / pa,
AuthorizationPolicy / ap. ``-o yaml`` and ``-o json`` print the stored documents (with the server's
``resourceVersion``, ``generation``, ``creationTimestamp``), which `mesh_ctl apply -f` takes back as they are;
several resources print as a ``kind: List``. Exit status 1 if a named resource does not exist.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mesh_ctl import client
from mesh_ctl.resources import kind_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", help="vs, dr, pa, ap (or their full names)")
    p.add_argument("names", metavar="NAME", nargs="*", help="only these resources")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json", "name"), default="table")
    client.add_arguments(p)


def age(timestamp: object, now: dt.datetime | None = None) -> str:
    """kubectl's AGE: ``45s``, ``12m``, ``5h``, ``3d``; ``<unknown>`` without a timestamp."""
    if not isinstance(timestamp, str):
        return "<unknown>"
    try:
        then = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _detail(kind: str, spec: Mapping[str, Any]) -> tuple[str, str]:
    if kind == "VirtualService":
        return "HOSTS", json.dumps(list(spec.get("hosts") or []))
    if kind == "DestinationRule":
        return "HOST", str(spec.get("host", ""))
    if kind == "PeerAuthentication":
        return "MODE", str((spec.get("mtls") or {}).get("mode", "UNSET"))
    return "ACTION", str(spec.get("action", "ALLOW"))


def table(items: Sequence[Mapping[str, Any]], kind: str, all_namespaces: bool) -> list[str]:
    rows = []
    header = "HOSTS"
    for doc in items:
        meta = doc.get("metadata") or {}
        header, detail = _detail(kind, doc.get("spec") or {})
        row = [str(meta.get("namespace", ""))] if all_namespaces else []
        rows.append([*row, str(meta.get("name", "")), detail, str(meta.get("resourceVersion", "")),
                     age(meta.get("creationTimestamp"))])
    head = [*(["NAMESPACE"] if all_namespaces else []), "NAME", header, "REVISION", "AGE"]
    return render_table(head, rows)


def render_table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]


def run(args: argparse.Namespace) -> int:
    info = kind_info(args.kind)
    if info is None:
        print(f'error: the server doesn\'t have a resource type "{args.kind}" (known: virtualservices/vs, '
              "destinationrules/dr, peerauthentications/pa, authorizationpolicies/ap)", file=sys.stderr)
        return 1
    api = client.from_args(args)
    namespace = None if args.all_namespaces else args.namespace
    items: list[dict[str, Any]] = []
    missing = 0
    try:
        if args.names:
            if args.all_namespaces:
                print("error: a resource cannot be retrieved by name across all namespaces", file=sys.stderr)
                return 1
            for name in args.names:
                try:
                    items.extend(api.resources(info.kind, args.namespace, name)["items"])
                except client.ControlPlaneError as e:
                    if e.status != 404:
                        raise
                    print(f'Error from server (NotFound): {info.plural}.{info.group} "{name}" not found',
                          file=sys.stderr)
                    missing += 1
        else:
            items = api.resources(info.kind, namespace)["items"]
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    if args.output in ("yaml", "json"):
        single = len(args.names) == 1 and len(items) == 1
        doc: Any = items[0] if single else {"apiVersion": "v1", "kind": "List", "items": items,
                                            "metadata": {"resourceVersion": ""}}
        if items or not args.names:
            print(json.dumps(doc, indent=2) if args.output == "json"
                  else yaml.safe_dump(doc, sort_keys=False).rstrip())
    elif args.output == "name":
        for doc in items:
            print(f"{info.kind.lower()}.{info.group}/{doc['metadata']['name']}")
    elif items:
        print("\n".join(table(items, info.kind, args.all_namespaces)))
    elif not args.names:
        where = "any namespace" if args.all_namespaces else f"{args.namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
    return 1 if missing else 0
