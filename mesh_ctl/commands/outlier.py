"""Eject failing endpoints of a service: writes the DestinationRule's ``trafficPolicy.outlierDetection``, shows
the change.

    mesh_ctl outlier SERVICE [--consecutive-errors N] [--interval DURATION] [--base-ejection DURATION]
                             [--max-ejection-percent P] [--consecutive-5xx-errors N] [-n NAMESPACE]
                             [--dry-run] [-o yaml]
    mesh_ctl outlier SERVICE --clear

    $ mesh_ctl outlier payment --consecutive-errors 3 --interval 5s --base-ejection 30s
    DestinationRule default/payment (host payment.default.svc.cluster.local)
      FIELD                                 BEFORE   AFTER
      trafficPolicy.outlierDetection        off      on
        consecutiveGatewayErrors            -        3
        consecutive5xxErrors                -        0
        interval                            -        5s
        baseEjectionTime                    -        30s
        maxEjectionPercent                  -        default (10%)
    destinationrule.networking.istio.io/payment configured (revision 4)

An endpoint that fails --consecutive-errors calls in a row (default 5) is ejected for --base-ejection times
the number of times it was ejected (default 30s), checked every --interval (default 10s), at most
--max-ejection-percent of the endpoints at once (default 10; Envoy still ejects one).

The errors counted are Istio's consecutiveGatewayErrors: UNAVAILABLE and DEADLINE_EXCEEDED (Envoy maps them
to 503 and 504), connection failures and resets, which say that the endpoint is down or overloaded.
consecutive5xxErrors would also count INTERNAL, UNKNOWN, DATA_LOSS and UNIMPLEMENTED, which an application
returns for one bad request and which say nothing about the endpoint, so the command writes it as 0 (off)
unless --consecutive-5xx-errors is given; left at Istio's default of 5, it would also cap
--consecutive-errors, since every gateway error is a 5xx. (Envoy counts a grpc-status only when it comes
without a response body, as UNAVAILABLE from a server that is shutting down does.)

The whole outlierDetection block is replaced; the rest of the DestinationRule is kept. Without a
DestinationRule one is created with the topology's subsets. --clear removes the block (no outlier detection).
"""

from __future__ import annotations

import argparse

from mesh_ctl.commands._change import add_change_options, add_service_argument
from mesh_ctl.commands._policy import Block, refuse, run_policy
from mesh_ctl.edits.flags import outlier_block


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_argument(p)
    p.add_argument("--consecutive-errors", metavar="N", help="gateway errors in a row that eject (default 5)")
    p.add_argument("--interval", metavar="DURATION", help="how often ejections are decided (default 10s)")
    p.add_argument("--base-ejection", metavar="DURATION", help="the first ejection's length (default 30s)")
    p.add_argument("--max-ejection-percent", metavar="P", help="the most endpoints ejected at once (default 10)")
    p.add_argument("--consecutive-5xx-errors", metavar="N",
                   help="also eject after N 5xx-mapped errors in a row, application errors included (default 0: off)")
    p.add_argument("--clear", action="store_true", help="remove outlier detection")
    add_change_options(p, "the outlier detection")


def run(args: argparse.Namespace) -> int:
    values = (args.consecutive_errors, args.interval, args.base_ejection, args.max_ejection_percent,
              args.consecutive_5xx_errors)
    if args.clear and any(v is not None for v in values):
        return refuse("--clear removes outlier detection: give it without other options", usage=True)

    def build() -> Block:
        return None if args.clear else outlier_block(args.consecutive_errors, args.consecutive_5xx_errors,
                                                     args.interval, args.base_ejection, args.max_ejection_percent)

    return run_policy(args, "outlierDetection", build)
