"""`mesh_ctl fault | retries | lb | outlier` against a real `mesh_ctl serve`: they write ordinary Istio resources
(`mesh_ctl get -o yaml` shows them), merged into what is stored without touching routes, matches and weights,
show the block before and after, and refuse bad values by name with exit 1, changing nothing. The last test
follows a fault from the CLI to a real proxyless grpcio client (gRFC A33: grpcio runs Istio's fault filter),
which needs no pyproxy.

    mesh_ctl fault/retries/lb/outlier --run-dir RUN --> serve (HTTP/JSON API) --ADS--> grpcio (xds:///payment)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_ctl.translate import grpc_xds_bootstrap
from tests.integration.test_control_plane import (
    CLIENT,
    DR,
    NODE_ID,
    TARGET,
    ControlPlane,
    all_synced,
    calls,
    control_plane,
    start_payment_servers,
    wait_until,
)
from tests.support.procs import REPO_ROOT

__all__ = ["control_plane"]  # the fixture, shared with test_control_plane

pytestmark = pytest.mark.timeout(240)

HEADER = "VirtualService default/payment (host payment.default.svc.cluster.local)"
DR_HEADER = "DestinationRule default/payment (host payment.default.svc.cluster.local)"
CANARY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: payment, subset: v2}}]
    timeout: 3s
  - name: default
    route:
    - {destination: {host: payment, subset: v1}, weight: 90}
    - {destination: {host: payment, subset: v2}, weight: 10}
"""


def stored(cp: ControlPlane, kind: str = "vs") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(cp.cli("get", kind, "payment", "-o", "yaml").stdout)
    return doc


def revision(cp: ControlPlane) -> int:
    return int(json.loads(cp.cli("get", "vs", "-A", "-o", "json").stdout).get("revision", 0))


def lines(done: Any) -> list[str]:
    return [line.rstrip() for line in str(done.stdout).splitlines()]


def test_fault_writes_the_virtual_service_and_shows_each_route(control_plane: ControlPlane) -> None:
    cp = control_plane
    # No VirtualService yet: one is created whose route keeps the topology's 50/50.
    assert lines(cp.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "30")) == [
        HEADER,
        "  ROUTE     TO               BEFORE   AFTER",
        "  http[0]   v1 50%, v2 50%   -        abort UNAVAILABLE 30%",
        "  (before: the topology's split; no VirtualService existed)",
        "virtualservice.networking.istio.io/payment created (revision 1)"]
    vs = stored(cp)
    assert vs["spec"]["http"] == [{
        "route": [{"destination": {"host": "payment", "subset": "v1"}, "weight": 50},
                  {"destination": {"host": "payment", "subset": "v2"}, "weight": 50}],
        "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}}}]

    # The block is replaced whole; a dry run shows the change and stores nothing.
    dry = cp.cli("fault", "payment", "--delay", "200ms", "--percent", "10", "--dry-run", "-o", "yaml")
    assert lines(dry)[2] == "  http[0]   v1 50%, v2 50%   abort UNAVAILABLE 30%   delay 200ms 10%"
    assert "virtualservice.networking.istio.io/payment configured (dry run)" in lines(dry)
    assert yaml.safe_load(dry.stdout.split("---\n", 1)[1])["spec"]["http"][0]["fault"] == {
        "delay": {"fixedDelay": "200ms", "percentage": {"value": 10}}}
    assert stored(cp) == vs
    both = cp.cli("fault", "payment", "--abort", "internal", "--abort-percent", "2.5", "--delay", "1s",
                  "--percent", "10")
    assert lines(both)[2].endswith("delay 1s 10%, abort INTERNAL 2.5%")
    assert stored(cp)["metadata"]["resourceVersion"] == "2"

    # Over a VirtualService with a header route: every forwarding route takes it, the rest is as it was.
    cp.cli("apply", "-f", "-", stdin=CANARY)
    out = lines(cp.cli("fault", "payment", "--abort", "503"))
    assert out[1:4] == ["  ROUTE             TO               BEFORE   AFTER",
                        "  http[0] canary    v2               -        abort HTTP 503 100%",
                        "  http[1] default   v1 90%, v2 10%   -        abort HTTP 503 100%"]
    spec = stored(cp)["spec"]
    assert [h.pop("fault") for h in spec["http"]] == [{"abort": {"httpStatus": 503, "percentage": {"value": 100}}}] * 2
    assert spec == yaml.safe_load(CANARY)["spec"]

    # --subset: only the routes whose calls all go to it (the 90/10 route cannot take it: see the refusals);
    # --clear takes it away.
    cp.cli("fault", "payment", "--clear")
    cp.cli("set-weight", "payment", "v1=100")
    out = lines(cp.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "30", "--subset", "v2"))
    assert out[1:] == ["  ROUTE            TO   BEFORE   AFTER",
                       "  http[0] canary   v2   -        abort UNAVAILABLE 30%",
                       "  http[1] default (v1) is left as it is: it does not send calls to v2",
                       "virtualservice.networking.istio.io/payment configured (revision 7)"]
    assert [h.get("fault") for h in stored(cp)["spec"]["http"]] == [
        {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}}, None]
    cleared = lines(cp.cli("fault", "payment", "--clear"))
    assert cleared[2:4] == ["  http[0] canary    v2   abort UNAVAILABLE 30%   -",
                            "  http[1] default   v1   -                       -"]
    expected = yaml.safe_load(CANARY)["spec"]
    expected["http"][1]["route"] = [{"destination": {"host": "payment", "subset": "v1"}, "weight": 100}]
    assert stored(cp)["spec"] == expected


def test_retries_lb_and_outlier(control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.cli("apply", "-f", "-", stdin=CANARY)
    out = lines(cp.cli("retries", "payment", "--attempts", "3", "--on", "unavailable,cancelled",
                       "--per-try-timeout", "200ms"))
    assert out[2] == ("  http[0] canary    v2               Istio's default (2 retries)   3 retries on "
                      "unavailable,cancelled, 200ms per try")
    retries = {"attempts": 3, "retryOn": "unavailable,cancelled", "perTryTimeout": "200ms"}
    assert [h["retries"] for h in stored(cp)["spec"]["http"]] == [retries, retries]
    assert lines(cp.cli("retries", "payment", "--attempts", "0"))[2].endswith("off (attempts: 0)")
    cp.cli("retries", "payment", "--clear")
    assert stored(cp)["spec"] == yaml.safe_load(CANARY)["spec"]

    # lb: no DestinationRule yet, so one is made with the topology's subsets (the routes to v1/v2 stay valid).
    assert lines(cp.cli("lb", "payment", "round-robin")) == [
        DR_HEADER,
        "  FIELD                               BEFORE                    AFTER",
        "  trafficPolicy.loadBalancer.simple   default (LEAST_REQUEST)   ROUND_ROBIN",
        "  created with the topology's subsets (v1, v2), which acted as its DestinationRule until now",
        "destinationrule.networking.istio.io/payment created (revision 5)"]
    dr = stored(cp, "dr")
    assert dr["spec"] == {"host": "payment", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                         {"name": "v2", "labels": {"version": "v2"}}],
                          "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}
    out = lines(cp.cli("outlier", "payment", "--consecutive-errors", "3", "--interval", "5s", "--base-ejection",
                       "30s"))
    assert out[1:9] == ["  FIELD                            BEFORE   AFTER",
                        "  trafficPolicy.outlierDetection   off      on",
                        "    consecutiveGatewayErrors       -        3",
                        "    consecutive5xxErrors           -        0",
                        "    interval                       -        5s",
                        "    baseEjectionTime               -        30s",
                        "    maxEjectionPercent             -        default (10%)",
                        "destinationrule.networking.istio.io/payment configured (revision 6)"]
    policy = stored(cp, "dr")["spec"]["trafficPolicy"]
    assert policy == {"loadBalancer": {"simple": "ROUND_ROBIN"}, "outlierDetection": {
        "consecutiveGatewayErrors": 3, "consecutive5xxErrors": 0, "interval": "5s", "baseEjectionTime": "30s"}}

    # A subset with a load balancer of its own keeps it, and the command says so.
    own = DR.replace("  - {name: v1, labels: {version: v1}}",
                     "  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}")
    cp.cli("apply", "-f", "-", stdin=own)
    out = lines(cp.cli("lb", "payment", "least-request"))
    assert "  subset v1 has its own loadBalancer (RANDOM): calls to v1 keep it (a subset's policy overrides the " \
           "DestinationRule's)" in out
    assert stored(cp, "dr")["spec"]["subsets"][0]["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    cp.cli("outlier", "payment", "--clear")
    cp.cli("lb", "payment", "--clear")
    assert "trafficPolicy" not in stored(cp, "dr")["spec"]


REFUSED: list[tuple[list[str], int, str]] = [
    (["fault", "payment", "--abort", "UNAVAILABLE", "--percent", "150"], 1,
     "error: --percent 150: a percentage is a number from 0 to 100 (and at least 0.0001 when not 0)"),
    (["fault", "payment", "--abort", "UNAVAILABEL"], 1, "error: --abort UNAVAILABEL: not a gRPC status name nor an "
                                                        "HTTP status"),
    (["fault", "payment", "--abort", "14"], 1,
     "error: --abort 14: an HTTP status is from 200 to 599; for gRPC status 14 give its name, UNAVAILABLE"),
    (["fault", "payment", "--delay=-200ms"], 1, "error: --delay -200ms: must be at least 1ms"),
    (["fault", "payment", "--abort", "INTERNAL", "--subset", "v3"], 1,
     "error: subset v3 of payment does not exist (subsets from DestinationRule default/payment: v1, v2)"),
    (["fault", "payment", "--abort", "INTERNAL", "--subset", "v2"], 1,
     "error: route http[1] default of VirtualService default/payment sends calls to v1 90%, v2 10%, not only to "
     "subset v2. An Istio fault belongs to a whole http route, not to one of its destinations, so it would also "
     "hit the calls that go elsewhere. To put it on v2 alone, shift that route to v2 alone first (mesh_ctl "
     "set-weight payment v2=100); or leave out --subset to put it on every call"),
    (["fault", "nosuchsvc", "--abort", "INTERNAL"], 1,
     "error: there is no service 'nosuchsvc' in namespace default (host nosuchsvc.default.svc.cluster.local); "
     "known services: payment (namespace default)"),
    (["fault", "payment"], 2, "error: give --abort STATUS and/or --delay DURATION (or --clear)"),
    (["fault", "payment", "--clear", "--abort", "INTERNAL"], 2, "error: --clear removes the fault"),
    (["retries", "payment", "--attempts=-1"], 1, "error: --attempts -1: must be from 0 to 2147483647"),
    (["retries", "payment", "--attempts", "3", "--on", "unavailable,sometimes"], 1,
     "error: --on unavailable,sometimes: unknown retry condition 'sometimes' (gRPC: cancelled, deadline-exceeded, "
     "internal, resource-exhausted, unavailable; HTTP: "),
    (["retries", "payment", "--attempts", "3", "--per-try-timeout", "0.5ms"], 1,
     "error: --per-try-timeout 0.5ms: must be at least 1ms"),
    (["retries", "payment", "--attempts", "0", "--on", "unavailable"], 1, "error: --attempts 0 turns retries off"),
    (["retries", "payment", "--on", "unavailable"], 2, "error: give --attempts N"),
    (["lb", "payment", "fastest"], 1,
     "error: fastest: not a load balancing policy minimesh has: least-request, round-robin, random"),
    (["lb", "payment"], 2, "error: give a policy (least-request, round-robin, random) or --clear"),
    (["outlier", "payment", "--max-ejection-percent", "150"], 1, "error: --max-ejection-percent 150: must be from 0 "
                                                                 "to 100"),
    (["outlier", "payment", "--interval", "5"], 1, "error: --interval 5: not a duration (e.g. 200ms, 1.5s, 1m)"),
    (["outlier", "payment", "--consecutive-errors", "0"], 1, "error: --consecutive-errors 0: must be from 1"),
]


def test_bad_values_are_refused_by_name_and_change_nothing(control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.cli("apply", "-f", "-", stdin=DR + "---\n" + CANARY)
    before = (stored(cp), stored(cp, "dr"), revision(cp))
    for args, code, message in REFUSED:
        done = cp.cli(*args, check=code)
        assert done.stdout == "", args
        assert done.stderr.startswith(message), (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1, (args, done.stderr)
    assert (stored(cp), stored(cp, "dr"), revision(cp)) == before


def test_a_fault_from_the_cli_reaches_a_proxyless_client(control_plane: ControlPlane, tmp_path: Path) -> None:
    """grpcio runs the fault filter Istio gives proxyless clients with the route's HTTPFault: after `fault
    --percent 100` every call fails UNAVAILABLE "Fault injected" without reaching a server; after `--clear`
    every call succeeds again."""
    cp = control_plane
    start_payment_servers(cp)
    bootstrap = tmp_path / "grpc-bootstrap.json"
    bootstrap.write_text(json.dumps(grpc_xds_bootstrap(cp.xds, NODE_ID, "default")))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = cp.procs.start("proxyless-client", [sys.executable, str(script), TARGET, "120"],
                            env={"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(REPO_ROOT)})
    wait_until("the client is SYNCED", lambda: all_synced(cp), timeout=30)
    wait_until("10 calls answered", lambda: sum("v" in c for c in calls(client)) >= 10)

    def settled(since: float, ok: bool) -> bool:
        """From some call after ``since`` on, at least 20 calls, all answered (ok) or all aborted."""
        after = [c for c in calls(client) if c["t"] >= since]
        for i in range(len(after)):
            rest = after[i:]
            if len(rest) >= 20 and all(("v" in c) if ok else (c.get("err") == "UNAVAILABLE"
                                                               and c.get("msg") == "Fault injected") for c in rest):
                return True
        return False

    injected = time.time()
    cp.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "100")
    wait_until("every call is aborted by the fault filter", lambda: settled(injected, ok=False), timeout=20)
    cleared = time.time()
    cp.cli("fault", "payment", "--clear")
    wait_until("every call is answered again", lambda: settled(cleared, ok=True), timeout=20)
    errors = {c.get("err") for c in calls(client) if "err" in c}
    assert errors <= {"UNAVAILABLE"}, errors
