"""Choose how a service's calls are spread over its endpoints: writes the DestinationRule's
``trafficPolicy.loadBalancer``, shows the change.

    mesh_ctl lb SERVICE least-request|round-robin|random [-n NAMESPACE] [--dry-run] [-o yaml]
    mesh_ctl lb SERVICE --clear

    $ mesh_ctl lb payment round-robin
    DestinationRule default/payment (host payment.default.svc.cluster.local)
      FIELD                               BEFORE                    AFTER
      trafficPolicy.loadBalancer.simple   default (LEAST_REQUEST)   ROUND_ROBIN
      created with the topology's subsets (v1, v2), which acted as its DestinationRule until now
    destinationrule.networking.istio.io/payment created (revision 3)

``loadBalancer.simple``: LEAST_REQUEST (Istio's default: of two endpoints picked at random, the one with
fewer calls in flight), ROUND_ROBIN, RANDOM. The whole loadBalancer block is replaced; the rest of the
DestinationRule (subsets, connection pool, outlier detection) is kept. Without a DestinationRule one is
created with the topology's subsets. A subset, or the service port's portLevelSettings, with a loadBalancer
of its own keeps it for its calls: the output says so. --clear removes the block (Istio's default again).
"""

from __future__ import annotations

import argparse

from mesh_ctl.commands._change import add_change_options, add_service_argument
from mesh_ctl.commands._policy import Block, refuse, run_policy
from mesh_ctl.edits.flags import lb_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_argument(p)
    p.add_argument("policy", metavar="POLICY", nargs="?", help="least-request, round-robin or random")
    p.add_argument("--clear", action="store_true", help="back to Istio's default (LEAST_REQUEST)")
    add_change_options(p, "the load balancer")


def run(args: argparse.Namespace) -> int:
    if args.clear == (args.policy is not None):
        return refuse("give a policy (least-request, round-robin, random) or --clear", usage=True)

    def build() -> Block:
        return None if args.clear else {"simple": lb_policy(args.policy)}

    return run_policy(args, "loadBalancer", build)
