"""Inject faults into a service's calls: writes ``fault`` on the routes of its VirtualService, shows the change.

    mesh_ctl fault SERVICE [--abort STATUS] [--delay DURATION] [--percent P] [--subset SUBSET] [-n NAMESPACE]
                           [--dry-run] [-o yaml]
    mesh_ctl fault SERVICE --clear [--subset SUBSET]

    $ mesh_ctl fault payment --abort UNAVAILABLE --percent 30
    VirtualService default/payment (host payment.default.svc.cluster.local)
      ROUTE     TO               BEFORE   AFTER
      http[0]   v1 50%, v2 50%   -        abort UNAVAILABLE 30%
      (before: the topology's split; no VirtualService existed)
    virtualservice.networking.istio.io/payment created (revision 1)

This is Istio's VirtualService ``http[].fault``, translated as Istio translates it: the caller's sidecar
answers that share of the calls itself (an abort: the gRPC status as a trailers-only reply, "fault filter
abort", response flag FI) or holds them for the delay before forwarding them (flag DI). An aborted call never
reaches the service and is never retried (the fault filter runs before the router).

--abort: a gRPC status name (UNAVAILABLE or unavailable, written as Istio's upper-case grpcStatus) or an
HTTP status from 200 to 599 (httpStatus). --delay: a duration of at least 1ms (fixedDelay). --percent: the
share of calls, 0 to 100 (decimals allowed), for both; default 100. --abort-percent and --delay-percent set
them apart. The command writes the whole fault block: what it does not name is removed. --clear removes it.

Which routes: every route of the VirtualService that forwards calls, so that every call to the service can
be hit, whatever its match (routes that answer by themselves are left alone). With --subset v2: the routes
whose calls all go to v2, because an Istio fault belongs to a whole http route, not to one of its
destinations; a route that sends calls to v2 and elsewhere is refused, with what to do instead (shift it to
v2 alone, or leave out --subset), and so is a subset that no route sends calls to alone. Without a
VirtualService, one is created whose route keeps the current split (the topology's). Bad values, unknown
services and subsets are refused and change nothing (exit 1).
"""

from __future__ import annotations

import argparse

from mesh_ctl.commands._change import add_change_options, add_service_argument
from mesh_ctl.commands._policy import Block, refuse, run_policy
from mesh_ctl.edits.flags import fault_block


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_argument(p)
    p.add_argument("--abort", metavar="STATUS", help="a gRPC status name (UNAVAILABLE) or an HTTP status (503)")
    p.add_argument("--delay", metavar="DURATION", help="hold calls this long before forwarding them (200ms, 1s)")
    p.add_argument("--percent", metavar="P", help="the share of calls, 0 to 100 (default 100)")
    p.add_argument("--abort-percent", metavar="P", help="the share of calls aborted (default: --percent)")
    p.add_argument("--delay-percent", metavar="P", help="the share of calls delayed (default: --percent)")
    p.add_argument("--subset", metavar="SUBSET", help="only the routes whose calls all go to this subset")
    p.add_argument("--clear", action="store_true", help="remove the fault")
    add_change_options(p, "the fault of each route")


def run(args: argparse.Namespace) -> int:
    values = (args.abort, args.delay, args.percent, args.abort_percent, args.delay_percent)
    if args.clear and any(v is not None for v in values):
        return refuse("--clear removes the fault: give it without --abort, --delay or a percent", usage=True)

    def build() -> Block:
        return None if args.clear else fault_block(args.abort, args.delay, args.percent, args.abort_percent,
                                                   args.delay_percent)

    return run_policy(args, "fault", build, args.subset)
