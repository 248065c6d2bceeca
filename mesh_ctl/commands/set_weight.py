"""Split a service's traffic between its subsets: writes the service's VirtualService and shows the change.

    mesh_ctl set-weight SERVICE SUBSET=WEIGHT [SUBSET=WEIGHT ...] [-n NAMESPACE] [--relative] [--dry-run] [-o yaml]

    $ mesh_ctl set-weight payment v1=90 v2=10
    VirtualService default/payment (host payment.default.svc.cluster.local)
      SUBSET   BEFORE   AFTER
      v1       50%      90%
      v2       50%      10%
    virtualservice.networking.istio.io/payment configured (revision 4)

The default route (the last ``http`` route without ``match``) of the service's VirtualService gets one
destination per subset named, with these weights; the rest of the VirtualService is kept, and a subset of the
old route that is not named leaves it (it gets no more traffic, and the output says so). Without a
VirtualService, one named after the service is created.

A weight is a percentage: 0 to 100, and the weights add up to 100 Istio
itself accepts any sum and gives each destination weight / total; ``--relative`` asks for exactly that, and
without it a sum other than 100 is refused with the shares Istio would have made of it, so a typo cannot
move traffic. Subsets must exist: in the host's DestinationRule, or else among the topology's subsets. An
unknown service is refused with the list of known ones. The proxies get the change within a second
(debounced pushes); invalid input changes nothing and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mesh_ctl import client
from mesh_ctl.commands._change import add_change_options, add_service_argument, print_outcome, table
from mesh_ctl.resources.weights import MAX_WEIGHT


def weight_pair(text: str) -> tuple[str, int]:
    subset, sep, value = text.partition("=")
    if not sep or not subset:
        raise argparse.ArgumentTypeError(f"expected SUBSET=WEIGHT, got {text!r}")
    try:
        weight = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{subset}: weight must be an integer, got {value!r}") from None
    if not 0 <= weight <= MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"{subset}={value}: a weight is a percentage from 0 to 100")
    return subset, weight


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_argument(p)
    p.add_argument("weights", metavar="SUBSET=WEIGHT", nargs="+", type=weight_pair, help="e.g. v1=90 v2=10")
    p.add_argument("--relative", action="store_true",
                   help="weights need not add up to 100: each subset gets weight / total (what Istio does)")
    add_change_options(p, "the weights")


def _percent(split: Sequence[Sequence[object]] | None) -> dict[str, float]:
    """subset -> share of the traffic in percent (weight / total, Istio's rule)."""
    if not split:
        return {}
    total = sum(int(str(w)) for _, w in split)
    return {str(s): 100 * int(str(w)) / total if total else 0.0 for s, w in split}


def _shares(split: Sequence[Sequence[object]] | None) -> dict[str, str]:
    return {s: f"{p:.4g}%" for s, p in _percent(split).items()}


def diff_lines(before: Sequence[Sequence[object]] | None, after: Sequence[Sequence[object]]) -> list[str]:
    """The weights table: one row per subset, before and after, as shares of the total."""
    old, new = _shares(before), _shares(after)
    subsets = list(dict.fromkeys([*new, *old]))
    return table([["SUBSET", "BEFORE", "AFTER"]] + [[s, old.get(s, "-"), new.get(s, "-")] for s in subsets])


def effect_lines(before: Sequence[Sequence[object]] | None, after: Sequence[Sequence[object]]) -> list[str]:
    """In words, which subsets gain, keep or lose traffic (a subset not named any more leaves the route)."""
    old, new = _percent(before), _percent(after)
    lines = []
    for subset in dict.fromkeys([*new, *old]):
        was, now = old.get(subset, 0.0), new.get(subset)
        if now is None:
            lines.append(f"{subset}: not named, so it leaves the route and gets no traffic (was {was:.4g}%)"
                         if was else f"{subset}: not named, so it leaves the route (it had no traffic)")
        elif now == 0 and was:
            lines.append(f"{subset}: loses all its traffic (was {was:.4g}%)")
        elif now == 100 and was != 100:
            lines.append(f"{subset}: now gets all the traffic")
        elif now and not was:
            lines.append(f"{subset}: starts getting traffic ({now:.4g}%)")
    return lines


def run(args: argparse.Namespace) -> int:
    weights = dict(args.weights)
    if len(weights) != len(args.weights):
        print("error: a subset is given twice", file=sys.stderr)
        return 2
    try:
        result = client.from_args(args).set_weight(args.service, args.namespace, weights, args.dry_run,
                                                   args.relative)
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    print(f"{result.get('resource')} (host {result.get('host')})")
    print("\n".join(diff_lines(result.get("before"), result.get("after") or [])))
    if result.get("before_source") == "topology":
        print("  (before: the topology's split; no VirtualService existed)")
    for line in effect_lines(result.get("before"), result.get("after") or []):
        print(f"  {line}")
    print_outcome(result, args.output)
    return 0
