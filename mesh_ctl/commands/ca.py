"""The mesh's certificate authority (in the running control plane): status, trust bundle, root rotation, tokens.

    mesh_ctl ca status [-o table|json]
    mesh_ctl ca root                                   the trust bundle, PEM (every root proxies must trust)
    mesh_ctl ca rotate-root [--publish-delay 10s] [--wait [--timeout DURATION]]
    mesh_ctl ca rotate-root --step [--force]           move a rotation in progress to its next phase now
    mesh_ctl ca mint-token --namespace N --service-account S [--ttl 24h] [-o token|json]

A root rotation keeps old and new roots trusted together until it completes: (a) a new root joins the
trust bundle [old, new] and is pushed to every proxy; (b) after the publish delay the new root signs;
(c) when the last certificate the old root signed has expired, the old root leaves the bundle. `ca status`
shows the phase and when the next step happens. `mint-token` prints a bootstrap token: the proof of identity
a workload's sidecar presents with its CSR (`authorization: Bearer <token>`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mesh_ctl import client
from mesh_ctl.ca.options import duration_arg

POLL = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ca_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser("status", help="phase, roots (fingerprints, not-after) and the trust bundle")
    s.add_argument("-o", "--output", choices=("table", "json"), default="table")
    client.add_arguments(s)
    r = sub.add_parser("root", help="print the trust bundle (PEM)")
    client.add_arguments(r)
    rot = sub.add_parser("rotate-root", help="rotate the self-signed root with overlap")
    rot.add_argument("--publish-delay", metavar="DURATION", type=duration_arg,
                     help="how long the new root is only trusted before it signs (default: the control "
                          "plane's, 10s)")
    rot.add_argument("--step", action="store_true", help="move the rotation in progress to its next phase now")
    rot.add_argument("--force", action="store_true",
                     help="with --step: retire the old root even though certificates it signed are still valid")
    rot.add_argument("--wait", action="store_true", help="wait until the rotation has completed")
    rot.add_argument("--timeout", metavar="DURATION", type=duration_arg,
                     help="with --wait: give up after this long (exit 1; the rotation goes on)")
    client.add_arguments(rot)
    m = sub.add_parser("mint-token", help="mint a bootstrap token for a workload identity")
    m.add_argument("--namespace", "-n", required=True)
    m.add_argument("--service-account", "-s", required=True)
    m.add_argument("--ttl", metavar="DURATION", type=duration_arg, help="token lifetime (default: 24h)")
    m.add_argument("-o", "--output", choices=("token", "json"), default="token")
    client.add_arguments(m)


def _when(t: object, now: float) -> str:
    if not isinstance(t, int | float):
        return "-"
    clock = time.strftime("%H:%M:%S", time.localtime(t))
    delta = round(t - now)
    return f"{clock} (in {delta} s)" if delta > 0 else f"{clock} ({-delta} s ago)" if delta < 0 else f"{clock} (now)"


def status_lines(st: dict[str, Any]) -> list[str]:
    now = float(st.get("now") or time.time())
    lines = [f"CA:      {st.get('mode')} ({st.get('directory')}), trust domain {st.get('trust_domain')}"]
    phase = st.get("phase")
    if phase == "publishing":
        lines.append(f"Phase:   publishing: new root trusted, old root signs until {_when(st.get('switch_at'), now)}")
    elif phase == "switched":
        lines.append(f"Phase:   switched: new root signs; old root trusted until {_when(st.get('retire_at'), now)}")
    else:
        lines.append("Phase:   stable")
    signing = st.get("signing") or {}
    lines.append(f"Signing: {str(signing.get('fingerprint', ''))[:16]}  {signing.get('subject')}  "
                 f"not after {signing.get('not_after')}")
    lines.append("Trust bundle:")
    rows = [["ROLE", "FINGERPRINT (SHA-256)", "NOT AFTER", "SUBJECT"]]
    rows += [[str(r.get("role")), str(r.get("fingerprint")), str(r.get("not_after")), str(r.get("subject"))]
             for r in st.get("bundle", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    refused = ", ".join(f"{k} {v}" for k, v in sorted((st.get("refused") or {}).items())) or "none"
    lines.append(f"Issued:  {st.get('issued', 0)} certificate(s); refused: {refused}")
    return lines


def _rotate(c: client.Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"step": True, "force": args.force} if args.step else {}
    if args.publish_delay is not None and not args.step:
        body["publish_delay_s"] = args.publish_delay.total_seconds()
    st = c.call("POST", "/v1/ca/rotate-root", body)
    print("\n".join(status_lines(st)))
    if not args.wait:
        return 0
    target = next((r["fingerprint"] for r in st.get("bundle", []) if r.get("role") == "pending"),
                  (st.get("signing") or {}).get("fingerprint"))
    deadline = time.monotonic() + args.timeout.total_seconds() if args.timeout else None
    phase = st.get("phase")
    while not (st.get("phase") == "stable" and (st.get("signing") or {}).get("fingerprint") == target):
        if deadline is not None and time.monotonic() > deadline:
            print(f"error: the rotation is still in phase {st.get('phase')} after the timeout", file=sys.stderr)
            return 1
        time.sleep(POLL)
        st = c.call("GET", "/v1/ca/status")
        if st.get("phase") != phase:
            phase = st.get("phase")
            print("-> " + status_lines(st)[1].removeprefix("Phase:").strip(), flush=True)
    print(f"rotation complete: root {str(target)[:16]} signs and is the only trusted root")
    return 0


def run(args: argparse.Namespace) -> int:
    c = client.from_args(args)
    try:
        if args.ca_command == "status":
            st = c.call("GET", "/v1/ca/status")
            print(json.dumps(st, indent=2) if args.output == "json" else "\n".join(status_lines(st)))
        elif args.ca_command == "root":
            sys.stdout.write(str(c.call("GET", "/v1/ca/root")["pem"]))
        elif args.ca_command == "rotate-root":
            return _rotate(c, args)
        elif args.ca_command == "mint-token":
            body: dict[str, Any] = {"namespace": args.namespace, "service_account": args.service_account}
            if args.ttl is not None:
                body["ttl_s"] = args.ttl.total_seconds()
            out = c.call("POST", "/v1/ca/tokens", body)
            print(json.dumps(out, indent=2) if args.output == "json" else out["token"])
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    return 0
