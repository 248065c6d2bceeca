"""The CLI's policy verbs as pure functions: which Istio resource to write, and what changes in it.

    mesh_ctl fault payment --abort UNAVAILABLE --percent 30 [--subset v2]     VirtualService http[].fault
    mesh_ctl retries payment --attempts 3 --on unavailable [--subset v2]      VirtualService http[].retries
    mesh_ctl lb payment round-robin                       DestinationRule trafficPolicy.loadBalancer
    mesh_ctl outlier payment --consecutive-errors 3      DestinationRule trafficPolicy.outlierDetection

Each verb writes one block of an ordinary Istio resource (Istio's own field names and values) and leaves the
rest of the resource as it was: routes, matches, weights, subsets, other policies. The control plane runs the
edit under its store's writer lock (:meth:`mesh_ctl.store.ConfigStore.update`) and validates the result like
any ``apply``; the CLI shows the block before and after, per route.

Modules, each using only the ones above it::

    model.py             Edit (the document to apply and the changes), Change, EditRefused
    lookup.py            the host's VirtualService / DestinationRules among stored resources, its subsets
    routes.py            a VirtualService's http routes as traffic shares; which routes a --subset means
    virtual_service.py   set or clear a route block (fault, retries) on the chosen routes
    destination_rule.py  set or clear a trafficPolicy block (loadBalancer, outlierDetection)
    flags.py             the verbs' command-line values -> Istio blocks, refusing bad values by flag name
    describe.py          a block in words, for the before/after tables
"""

from mesh_ctl.edits.destination_rule import TRAFFIC_POLICY_FIELDS, set_traffic_policy
from mesh_ctl.edits.model import Change, Edit, EditRefused
from mesh_ctl.edits.virtual_service import ROUTE_FIELDS, set_route_policy

__all__ = ["ROUTE_FIELDS", "TRAFFIC_POLICY_FIELDS", "Change", "Edit", "EditRefused", "set_route_policy",
           "set_traffic_policy"]
