"""The xDS sync state of every proxy connected to the control plane, like `istioctl proxy-status`.

    mesh_ctl proxy-status [PROXY] [-o table|json]

    NAME                 KIND        CDS      LDS      EDS      RDS      CONNECTED
    client.default       sidecar     SYNCED   SYNCED   SYNCED   SYNCED   2m
    grpc-client-1        proxyless   SYNCED   SYNCED   SYNCED   STALE    10s

Per type: ``SYNCED`` (the proxy ACKed the latest config), ``STALE`` (a push awaits its ACK, or a change is
not pushed yet), ``NOT SENT`` (nothing sent: not subscribed), ``NACKED(reason)`` (the proxy rejected the
last push and keeps running the previous version). With PROXY, the versions and the last rejection of each
type of that proxy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mesh_ctl import client
from mesh_ctl.xds.status import COLUMNS, columns_for

# istioctl's column order, and SDS: the ROOTCA trust bundle this control plane serves
ORDER = ("CDS", "LDS", "EDS", "RDS", "SDS")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("proxy", metavar="PROXY", nargs="?", help="only this proxy (NAME or node id), in detail")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    client.add_arguments(p)


def since(t: object, now: float | None = None) -> str:
    if not isinstance(t, int | float):
        return "-"
    s = max(0, int((now or time.time()) - t))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def table(proxies: list[dict[str, Any]]) -> list[str]:
    head = ["NAME", "KIND", *ORDER, "CONNECTED"]
    rows = []
    for p in proxies:
        cells = columns_for(p.get("types", []))
        rows.append([str(p.get("name")), str(p.get("kind")), *(cells[c] for c in ORDER),
                     since(p.get("connected_at"))])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]


def detail(p: dict[str, Any]) -> list[str]:
    lines = [f"{p.get('name')}  ({p.get('kind')}, node {p.get('node_id')}, {p.get('peer')}, stream "
             f"{p.get('connection')}, connected {since(p.get('connected_at'))} ago)"]
    for t in sorted(p.get("types", []), key=lambda t: ORDER.index(t["type"]) if t["type"] in ORDER else 9):
        cell = columns_for([t]).get(t["type"], t["status"])
        lines.append(f"  {t['type']}: {cell if t['type'] in COLUMNS else t['status']}")
        lines.append(f"    current {t.get('current_version') or '-'}  sent {t.get('sent_version') or '-'}  "
                     f"acked {t.get('acked_version') or '-'}  resources {t.get('resources')}  "
                     f"subscribed {t.get('subscribed') or '-'}  pushes {t.get('pushes')}  acks {t.get('acks')}  "
                     f"nacks {t.get('nacks')}")
        nack = t.get("last_nack")
        if nack:
            lines.append(f"    last NACK ({since(nack.get('at'))} ago) of version {nack.get('version')}: "
                         f"{nack.get('message')}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        status = client.from_args(args).proxy_status()
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    proxies = status.get("proxies", [])
    if args.proxy:
        proxies = [p for p in proxies if args.proxy in (p.get("name"), p.get("node_id"), p.get("connection"))]
        if not proxies:
            print(f"error: no connected proxy named {args.proxy!r}", file=sys.stderr)
            return 1
    if args.output == "json":
        print(json.dumps({**status, "proxies": proxies}, indent=2))
    elif args.proxy:
        print("\n".join(line for p in proxies for line in detail(p)))
    elif proxies:
        print("\n".join(table(proxies)))
    else:
        print("No proxies connected.", file=sys.stderr)
    return 0
