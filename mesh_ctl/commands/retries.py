"""Set how a service's calls are retried: writes ``retries`` on the routes of its VirtualService, shows the change.

    mesh_ctl retries SERVICE --attempts N [--on CONDITIONS] [--per-try-timeout DURATION] [--subset SUBSET]
                             [-n NAMESPACE] [--dry-run] [-o yaml]
    mesh_ctl retries SERVICE --clear [--subset SUBSET]

    $ mesh_ctl retries payment --attempts 3 --on unavailable,cancelled --per-try-timeout 200ms
    VirtualService default/payment (host payment.default.svc.cluster.local)
      ROUTE     TO               BEFORE                         AFTER
      http[0]   v1 50%, v2 50%   Istio's default (2 retries)    3 retries on unavailable,cancelled, 200ms per try
    virtualservice.networking.istio.io/payment configured (revision 2)

This is Istio's VirtualService ``http[].retries``: --attempts is how many times a failed call is retried
(``attempts``; 0 turns retries off, so a call is tried once), --on the conditions (``retryOn``: Envoy's
gRPC conditions cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, which act on a
grpc-status the server sends without a response body; HTTP ones such as 5xx, reset, connect-failure,
refused-stream; bare HTTP codes such as 503), --per-try-timeout the time each try gets (at least 1ms). What
the command does not name takes Istio's default: the retry conditions connect-failure, refused-stream,
unavailable, cancelled and 503. --clear removes the block: Istio's default policy (2 retries) again.

Which routes: every route that forwards calls, or with --subset the routes whose calls all go to that subset
(as `mesh_ctl fault` chooses them). Bad values, unknown services and subsets are refused and change nothing
(exit 1).
"""

from __future__ import annotations

import argparse

from mesh_ctl.commands._change import add_change_options, add_service_argument
from mesh_ctl.commands._policy import Block, refuse, run_policy
from mesh_ctl.edits.flags import retries_block


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_argument(p)
    p.add_argument("--attempts", metavar="N", help="retries per call (0: no retry)")
    p.add_argument("--on", metavar="CONDITIONS", help="comma-separated: unavailable,cancelled,5xx,503 ...")
    p.add_argument("--per-try-timeout", metavar="DURATION", help="each try's time limit (200ms, 1s)")
    p.add_argument("--subset", metavar="SUBSET", help="only the routes whose calls all go to this subset")
    p.add_argument("--clear", action="store_true", help="back to Istio's default policy (2 retries)")
    add_change_options(p, "the retry policy of each route")


def run(args: argparse.Namespace) -> int:
    if args.clear and any(v is not None for v in (args.attempts, args.on, args.per_try_timeout)):
        return refuse("--clear goes back to Istio's default policy: give it without --attempts, --on or "
                      "--per-try-timeout", usage=True)

    def build() -> Block:
        return None if args.clear else retries_block(args.attempts, args.on, args.per_try_timeout)

    return run_policy(args, "retries", build, args.subset)
