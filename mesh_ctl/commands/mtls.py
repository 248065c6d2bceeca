"""Set the mutual TLS mode of the mesh, a namespace or a workload: writes a PeerAuthentication and shows what
changed.

    mesh_ctl mtls strict|permissive|disable [-n NAMESPACE] [--workload W] [--dry-run] [-o yaml]

    $ mesh_ctl mtls strict
    PeerAuthentication istio-system/default (mesh-wide): PERMISSIVE -> STRICT
    peerauthentication.security.istio.io/default created (revision 3)
      WORKLOAD     NAMESPACE   BEFORE       AFTER
      client       default     PERMISSIVE   STRICT
      payment-v1   default     PERMISSIVE   STRICT

Where the policy goes (named as in Istio's documentation):

- no option: ``default`` in the root namespace (``istio-system``; ``--root-namespace``): the whole mesh;
- ``-n N``: ``default`` in N: every workload of N;
- ``--workload W`` (namespace ``-n``, default ``default``): ``W`` in that namespace with a selector: ``app: W``
  when workloads carry that label (Istio's docs' convention), else the labels of the workload named W;
  ``--selector KEY=VALUE`` sets the labels yourself.

STRICT: sidecars accept mTLS only; PERMISSIVE (Istio's default): mTLS and plaintext on the same port;
DISABLE: plaintext only, and clients stop originating mTLS to those workloads (auto-mTLS). Precedence:
workload > namespace > mesh. The table shows every workload's effective mode before and after the change
(``port:MODE`` for port-level overrides); the sidecars get the change within a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mesh_ctl import client
from mesh_ctl.translate.istio import PEER_AUTHENTICATION, ROOT_NAMESPACE, index_resources
from mesh_ctl.translate.peer_authn import MtlsPolicy

MODES = ("strict", "permissive", "disable")
ORIGIN = "<mesh_ctl mtls>"
API_VERSION = "security.istio.io/v1"

Workload = Mapping[str, Any]  # an entry of /v1/workloads: name, namespace, labels, ...


class TargetError(ValueError):
    """The workload or selector cannot be resolved."""


def label_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mode", choices=MODES, help="the mutual TLS mode")
    p.add_argument("-n", "--namespace", default=None,
                   help="a namespace-wide policy (with --workload: the workload's namespace, default: default)")
    p.add_argument("--workload", metavar="W", help="a policy for one workload (app label or workload name)")
    p.add_argument("--selector", metavar="KEY=VALUE", action="append", type=label_pair,
                   help="with --workload: select these labels instead (repeatable)")
    p.add_argument("--root-namespace", default=ROOT_NAMESPACE,
                   help=f"the mesh's root namespace, where mesh-wide policies live (default: {ROOT_NAMESPACE})")
    p.add_argument("--dry-run", action="store_true", help="show the change; store nothing")
    p.add_argument("-o", "--output", choices=("diff", "yaml"), default="diff",
                   help="diff: the modes before and after (default); yaml: also the PeerAuthentication")
    client.add_arguments(p)


# ---------------------------------------------------------------------------------------------- pure parts


def peer_authentication(mode: str, namespace: str, name: str, selector: Mapping[str, str] | None = None,
                        ) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if selector:
        spec["selector"] = {"matchLabels": dict(selector)}
    spec["mtls"] = {"mode": mode.upper()}
    return {"apiVersion": API_VERSION, "kind": PEER_AUTHENTICATION,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def workload_selector(workload: str, namespace: str, workloads: Sequence[Workload]) -> dict[str, str]:
    """``app: W`` if a workload of ``namespace`` has it, else the labels of the workload named W."""
    here = [w for w in workloads if w.get("namespace") == namespace]
    if any((w.get("labels") or {}).get("app") == workload for w in here):
        return {"app": workload}
    named = next((w for w in here if w.get("name") == workload), None)
    if named is not None and named.get("labels"):
        return {str(k): str(v) for k, v in named["labels"].items()}
    known = ", ".join(sorted(str(w.get("name")) for w in here)) or "none"
    raise TargetError(f"no workload {workload!r} in namespace {namespace!r} (by app label or name; workloads "
                      f"there: {known}); use --selector KEY=VALUE to select labels yourself")


def target(mode: str, namespace: str | None, workload: str | None, selector: Sequence[tuple[str, str]] | None,
           root_namespace: str, workloads: Sequence[Workload]) -> tuple[dict[str, Any], str]:
    """(the PeerAuthentication to apply, its scope in words)."""
    if selector and not workload:
        raise TargetError("--selector needs --workload (the policy's name)")
    if workload:
        ns = namespace or "default"
        labels = dict(selector) if selector else workload_selector(workload, ns, workloads)
        if ns == root_namespace:
            raise TargetError(f"a policy with a selector in the root namespace {root_namespace!r} applies to "
                              "nothing (Istio ignores it): give the workload's namespace with -n")
        scope = "workload " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return peer_authentication(mode, ns, workload, labels), scope
    ns = namespace or root_namespace
    scope = "mesh-wide" if ns == root_namespace else f"namespace {ns}"
    return peer_authentication(mode, ns, "default"), scope


def replaced(stored: Sequence[Mapping[str, Any]], doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The stored PeerAuthentications with ``doc`` applied (it keeps the creation time of the one it replaces;
    a new one is the newest)."""
    meta = doc["metadata"]
    out: list[Mapping[str, Any]] = []
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for d in stored:
        m = d.get("metadata") or {}
        if (m.get("namespace") or "default", m.get("name")) == (meta["namespace"], meta["name"]):
            created = str(m.get("creationTimestamp") or created)
            continue
        out.append(d)
    out.append({**doc, "metadata": {**meta, "creationTimestamp": created}})
    return out


def describe(policy: MtlsPolicy) -> str:
    ports = " ".join(f"{p}:{m}" for p, m in sorted(policy.port_modes.items()))
    return f"{policy.mode} ({ports})" if ports else policy.mode


def effective_modes(docs: Sequence[Mapping[str, Any]], workloads: Sequence[Workload], root_namespace: str,
                    ) -> dict[tuple[str, str], str]:
    istio = index_resources(list(docs), root_namespace=root_namespace)
    return {(str(w.get("namespace")), str(w.get("name"))): describe(istio.mtls(str(w.get("namespace")),
                                                                             w.get("labels") or {}))
            for w in workloads}


def mode_of(docs: Sequence[Mapping[str, Any]], namespace: str, name: str) -> str:
    for d in docs:
        m = d.get("metadata") or {}
        if (m.get("namespace") or "default", m.get("name")) == (namespace, name):
            mode = ((d.get("spec") or {}).get("mtls") or {}).get("mode")
            return str(mode or "UNSET")
    return "(none)"


def table(before: Mapping[tuple[str, str], str], after: Mapping[tuple[str, str], str]) -> list[str]:
    rows = [["WORKLOAD", "NAMESPACE", "BEFORE", "AFTER"]]
    for ns, name in sorted(after, key=lambda k: (k[0], k[1])):
        mark = "" if before.get((ns, name)) == after[(ns, name)] else "  *"
        rows.append([name, ns, before.get((ns, name), "-"), after[(ns, name)] + mark])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  " + "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# ---------------------------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    api = client.from_args(args)
    try:
        workloads = api.workloads().get("workloads", [])
        stored = api.resources(kind=PEER_AUTHENTICATION).get("items", [])
        doc, scope = target(args.mode, args.namespace, args.workload, args.selector, args.root_namespace,
                            workloads)
        meta = doc["metadata"]
        before = effective_modes(stored, workloads, args.root_namespace)
        after = effective_modes(replaced(stored, doc), workloads, args.root_namespace)
        text = yaml.safe_dump(doc, sort_keys=False)
        result = api.apply([{"origin": ORIGIN, "text": text}], dry_run=args.dry_run)
    except TargetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    print(f"PeerAuthentication {meta['namespace']}/{meta['name']} ({scope}): "
          f"{mode_of(stored, meta['namespace'], meta['name'])} -> {args.mode.upper()}")
    for line in result.get("warnings", []):
        print(f"Warning: {line}", file=sys.stderr)
    for line in result.get("lines", []):
        print(f"{line} (revision {result.get('revision')})" if not result.get("dry_run") else line)
    if workloads:
        print("\n".join(table(before, after)))
    if args.output == "yaml":
        print("---\n" + text.rstrip())
    return 0
