"""Issue 3's acceptance tests: traffic management through the control plane, on a real mesh under load.

One mesh for the module, started the way a user starts it (`mesh_ctl up --detach` on addresses of its own:
workloads on 127.x.y.10-12, the control plane on 127.x.y.9), driven only through the CLI (`mesh_ctl apply`,
`set-weight`, `get`, `proxy-status`, `status`) while a load generator in this process calls the payment
service through the client's sidecar::

    Load (grpcio, this process) --h2c--> client sidecar --mTLS--> payment-v1 / payment-v2 sidecars --> apps
                                              ^ xDS (ADS)                 ^ xDS
                                   control plane (mesh_ctl serve) <-- mesh_ctl CLI (the test)

Every call is recorded (:class:`Call`: start and end on this process's monotonic clock, gRPC status, the
``x-payment-version`` response header, the reply's ``version`` and ``served_by``), so each assertion is about
individual calls. "Failed" means any status other than OK. Each test sets the configuration it needs first
(a DestinationRule with subsets v1, v2 and a VirtualService) and waits until the control plane has pushed
it and every sidecar ACKed it (:meth:`Mesh.wait_converged`).

Definitions used by the weight-change test (for a change applied at ``t0``, the moment just before
`mesh_ctl set-weight` is started, with target share ``T`` for v2):

- ``after``: the calls that *started* at or after ``t0`` and before the next change's ``t0``, in start order;
- the change **took effect** at ``after[k]``, ``k`` the smallest index such that the v2 share of
  ``after[k : k + 1000]`` is within 5 points of ``T``; the **delay** is ``after[k].start - t0`` and must be
  at most 2 s (the share of those 1,000 calls is within 5 points by construction);
- the **steady split**: the first 1,000 calls that started at or after ``t0 + 2 s`` must be within
  ``max(5 points, 4 standard deviations)`` of ``T`` (whatever ``k`` was, 2 s after the apply the new split
  holds; 4 sigma is 6.3 points at 50/50, 5 points below 30/70);
- for a 0/100 or 100/0 target, the **switch** is exact: the last call answered by the version that lost all
  its weight started less than 2 s after ``t0``.

With a random weighted pick (Envoy's), a window of 1,000 calls at 50/50 has a standard deviation of 1.6
points. The settling window (the issue's "next 1,000 requests") is found by a search, so it meets the 5-point
bound whenever any window does; the steady window is a fixed one, and a 5-point bound on it would fail a
correct mesh with probability ~0.2% per 50/50 change (it did once in CI: 44.1% v2, 3.7 sigma), hence the
4-sigma bound there (~0.006% per window). A mesh that applies changes late, partially or not at all, or drops
calls, fails either check every time (consecutive targets are at least 30 points apart).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import yaml

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.live_mesh import LOAD_RPS, Call, Load, Mesh, failures, requests_total, running_mesh, wait_until
from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.timeout(240)

EXAMPLES = REPO_ROOT / "examples"
WINDOW = 1000  # calls per split measurement
TOLERANCE = 5.0  # percentage points
SETTLE = 2.0  # seconds a change may take

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def vs(v1: int, v2: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: payment
  namespace: default
spec:
  hosts: [payment]
  http:
  - name: default
    route:
    - destination: {{host: payment, subset: v1}}
      weight: {v1}
    - destination: {{host: payment, subset: v2}}
      weight: {v2}
"""


# ------------------------------------------------------------------------------------------------ load


# ------------------------------------------------------------------------------------------------ analysis


def v2_share(calls: Sequence[Call]) -> float:
    """Percentage of ``calls`` answered by v2."""
    return 100.0 * sum(c.version == "v2" for c in calls) / len(calls) if calls else math.nan


def steady_tolerance(target: float, window: int = WINDOW) -> float:
    """Percentage points a fixed window of a correct random split may stray: 4 binomial sigmas, at least 5."""
    p = target / 100.0
    return max(TOLERANCE, 400.0 * math.sqrt(p * (1.0 - p) / window))


def settle_index(after: Sequence[Call], target: float, window: int = WINDOW, tolerance: float = TOLERANCE,
                 ) -> int | None:
    """The smallest ``k`` such that the v2 share of ``after[k:k + window]`` is within ``tolerance`` points of
    ``target`` (None if no full window qualifies)."""
    prefix = [0]
    for c in after:
        prefix.append(prefix[-1] + (c.version == "v2"))
    for k in range(len(after) - window + 1):
        share = 100.0 * (prefix[k + window] - prefix[k]) / window
        if abs(share - target) <= tolerance:
            return k
    return None


def calls_between(calls: Sequence[Call], start: float, end: float = math.inf) -> list[Call]:
    """The calls that started in [start, end), in start order (``calls`` must be in start order)."""
    starts = [c.start for c in calls]
    return list(calls[bisect.bisect_left(starts, start):bisect.bisect_left(starts, end)])


def test_the_split_analysis_itself() -> None:
    """The measurement code on synthetic calls, so a bug in it cannot make the tests below pass vacuously."""
    def mk(versions: str, t0: float = 0.0) -> list[Call]:
        return [Call(i, t0 + i / 100, t0 + i / 100, "OK", f"v{v}", f"v{v}", "", False)
                for i, v in enumerate(versions)]

    # 300 calls still on v1, then a 50/50 alternation: the window from k holds 300 - k leftovers and
    # floor((700 + k) / 2) v2 calls, so it is within 5 points of 50% (>= 450 v2) from k = 200 on.
    calls = mk("1" * 300 + "12" * 1000)
    assert settle_index(calls, 50.0) == 200
    assert settle_index(calls, 0.0) is None  # even the first window has 35% v2
    assert settle_index(mk("1" * 1000), 0.0) == 0
    assert settle_index(mk("1" * 999), 0.0) is None  # not a full window
    assert v2_share(mk("1122")) == 50.0 and math.isnan(v2_share([]))
    assert round(steady_tolerance(50.0), 2) == 6.32 and steady_tolerance(10.0) == steady_tolerance(0.0) == 5.0
    assert [c.seq for c in calls_between(calls, 1.0, 1.05)] == [100, 101, 102, 103, 104]
    assert failures([*calls[:2], Call(9, 0, 0, "UNAVAILABLE", "unknown", "", "", False)])[0].seq == 9


# ------------------------------------------------------------------------------------------------ the mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, "traffic", "--rps", "2", "--concurrency", "1") as m:
        m.apply("dr.yaml", DR)
        yield m


# ------------------------------------------------------------------------------------------------ prometheus

# ------------------------------------------------------------------------------------------------ 1. weights

TARGETS = [(0, 100), (50, 50), (90, 10), (10, 90), (100, 0), (70, 30), (20, 80), (50, 50), (95, 5), (0, 100)]


def test_weight_changes_under_load_fail_no_call_and_take_effect_within_2_s(mesh: Mesh) -> None:
    """At >= 200 calls/s for >= 20 s through the sidecars, 10 `mesh_ctl set-weight` changes: zero failed calls;
    after each change the split of the next 1,000 calls is within 5 points of the target, reached within 2 s
    of the apply (definitions in the module docstring)."""
    mesh.apply("vs.yaml", vs(100, 0))
    changes: list[tuple[float, int, float]] = []  # (t0, v2 target, how long the CLI took)
    mesh.wait_converged()
    with Load(mesh.client_target()) as load:
        wait_until("200 calls before the first change", lambda: len(load.calls) >= 200, timeout=30)
        for v1, v2 in TARGETS:
            t0 = time.monotonic()
            out = mesh.cli("set-weight", "payment", f"v1={v1}", f"v2={v2}").stdout
            assert "virtualservice.networking.istio.io/payment configured" in out, out
            changes.append((t0, v2, time.monotonic() - t0))
            wait_until(f"{WINDOW} calls after the settling time of the change to {v1}/{v2}",
                       lambda t0=t0: load.started_since(t0 + SETTLE) >= WINDOW, timeout=30)  # type: ignore[misc]
    calls = load.calls

    assert not failures(calls), failures(calls)[:10]
    assert {c.version for c in calls} <= {"v1", "v2"}
    assert all(c.version == c.reply_version and c.served_by == f"payment-{c.version}" for c in calls)
    duration = calls[-1].start - calls[0].start
    rate = len(calls) / duration
    assert duration >= 20.0 and rate >= 200.0, (duration, rate)

    figures: list[dict[str, Any]] = []
    for i, (t0, target, cli_s) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else math.inf
        after = calls_between(calls, t0, end)
        k = settle_index(after, target)
        steady = calls_between(calls, t0 + SETTLE, end)[:WINDOW]
        lost = "v1" if target == 100 else "v2" if target == 0 else None
        last_lost = max((c.start - t0 for c in after if c.version == lost), default=0.0) if lost else None
        figures.append({
            "target_v2": target, "cli_s": round(cli_s, 2), "calls": len(after),
            "delay_s": None if k is None else round(after[k].start - t0, 3),
            "window_v2": None if k is None else round(v2_share(after[k:k + WINDOW]), 1),
            "steady_v2": round(v2_share(steady), 1), "last_call_to_dropped_version_s":
                None if last_lost is None else round(last_lost, 3)})
    print(f"\n{len(calls)} calls in {duration:.1f} s ({rate:.0f}/s), {len(failures(calls))} failed")
    for f in figures:
        print("  " + json.dumps(f))
    for f in figures:
        assert f["delay_s"] is not None and f["delay_s"] <= SETTLE, figures
        assert abs(f["steady_v2"] - f["target_v2"]) <= steady_tolerance(f["target_v2"]), figures
        assert f["last_call_to_dropped_version_s"] is None or f["last_call_to_dropped_version_s"] < SETTLE, figures
    # The mesh's own load client saw no error either.
    assert all(s["errors"] == 0 for s in mesh.status()["summary"]), mesh.status()["summary"]


# ------------------------------------------------------------------------------------------------ 2. restart


def test_control_plane_killed_and_restarted_under_load(mesh: Mesh) -> None:
    """SIGKILL `mesh_ctl serve` under load: no call fails, the sidecars keep the split while it is gone, the
    supervisor starts it again, it serves the same configuration from its store (`get` shows what was applied,
    the sidecars resync to the very same versions), and a change after the restart takes effect."""
    mesh.apply("vs.yaml", vs(80, 20))
    applied = {kind: yaml.safe_load(mesh.cli("get", kind, "payment", "-o", "yaml").stdout)
               for kind in ("vs", "dr")}
    before = mesh.versions()
    old = next(p for p in mesh.state().processes if p.role == "control-plane")

    mesh.wait_converged()
    with Load(mesh.client_target()) as load:
        wait_until("400 calls before the kill", lambda: len(load.calls) >= 400, timeout=30)
        connections_before = upstream_connections(mesh.prometheus("client"))
        killed = time.monotonic()
        os.kill(old.pid, signal.SIGKILL)

        def restarted() -> bool:
            cp = mesh.status()["control_plane"]
            return bool(cp["serving"]) and cp["pid"] != old.pid

        back_s = wait_until("the supervisor restarted the control plane", restarted, timeout=20)
        synced_s = wait_until("every sidecar resynced", mesh.converged, timeout=40) + back_s
        resynced = time.monotonic()
        after = mesh.versions()
        connections_after = upstream_connections(mesh.prometheus("client"))
        got = {kind: yaml.safe_load(mesh.cli("get", kind, "payment", "-o", "yaml").stdout) for kind in ("vs", "dr")}
        changed = time.monotonic()
        mesh.cli("set-weight", "payment", "v1=0", "v2=100")
        wait_until("500 calls after the change", lambda: load.started_since(changed + SETTLE) >= 500, timeout=30)
    calls = load.calls

    state = mesh.state()
    new = next(p for p in state.processes if p.role == "control-plane")
    assert new.pid != old.pid and new.restarts == old.restarts + 1 and new.argv == old.argv
    assert got == applied  # all config intact, resourceVersion included
    assert after == before, (before, after)  # the proxies resynced to exactly what they ran
    # ... and applying the same configuration again changed nothing on the data plane: the client sidecar
    # kept its upstream connections (no cluster rebuilt, no pool drained).
    assert connections_after == connections_before, (connections_before, connections_after)
    assert not failures(calls), failures(calls)[:10]
    # Until the sidecars had resynced: calls kept coming at the offered rate, fast, and still split 80/20
    # (within 4 standard deviations of a fair 20% for that many calls).
    outage = calls_between(calls, killed, resynced)
    tolerance = max(TOLERANCE, 400 * math.sqrt(0.2 * 0.8 / max(len(outage), 1)))
    slowest = max((c.end - c.start for c in outage), default=0.0)
    rate = len(outage) / (resynced - killed)
    print(f"\ncontrol plane back after {back_s:.1f} s, sidecars resynced after {synced_s:.1f} s; "
          f"{len(outage)} calls meanwhile ({rate:.0f}/s, slowest {slowest * 1000:.0f} ms), "
          f"v2 share {v2_share(outage):.1f}%")
    assert len(outage) >= 0.8 * LOAD_RPS * (resynced - killed), (len(outage), resynced - killed)
    assert abs(v2_share(outage) - 20.0) <= tolerance and slowest < 1.0, (len(outage), v2_share(outage), slowest)
    late = [c.start - changed for c in calls_between(calls, changed) if c.version == "v1"]
    assert max(late, default=0.0) < SETTLE, max(late)  # the change after the restart took effect
    assert v2_share(calls_between(calls, changed + SETTLE)) == 100.0


def upstream_connections(prometheus: str) -> dict[str, float]:
    """``envoy_cluster_upstream_cx_total`` of each outbound cluster (connections ever opened)."""
    found = re.findall(r'^envoy_cluster_upstream_cx_total\{envoy_cluster_name="(outbound\|[^"]+)"\} (\S+)$',
                       prometheus, re.MULTILINE)
    assert found, "no outbound cluster in /stats/prometheus"
    return {name: float(value) for name, value in found}


# ------------------------------------------------------------------------------------------------ 3. invalid


@dataclass(frozen=True, slots=True)
class Invalid:
    name: str
    text: str
    where: str  # "<Kind> <ns>/<name>" or "document #1"
    path: str  # the field path the error names
    reason: str  # a fragment of the reason


def _vs(old: str, new: str) -> str:
    base = vs(70, 30)
    assert old in base, old
    return base.replace(old, new, 1)


def _route(extra: str) -> str:
    """The VirtualService with ``extra`` (YAML lines, indented for an http route) in its route."""
    return _vs("  - name: default\n", "  - name: default\n" + extra)


def _dr(extra: str) -> str:
    return DR.replace("spec:\n", "spec:\n" + extra, 1)


VS_AT = "VirtualService default/payment"
DR_AT = "DestinationRule default/payment"
INVALID = [
    Invalid("bad-type", _vs("weight: 70", "weight: seventy"), VS_AT, "spec.http[0].route[0].weight", "integer"),
    Invalid("float-weight", _vs("weight: 70", "weight: 70.5"), VS_AT, "spec.http[0].route[0].weight", "integer"),
    Invalid("unknown-field", _vs("weight: 30", "weigth: 30"), VS_AT, "spec.http[0].route[1].weigth",
            "unknown field"),
    Invalid("unknown-subset", _vs("subset: v2}", "subset: v3}"), VS_AT, "spec.http[0].route[1].destination.subset",
            "v3 not found"),
    Invalid("weights-sum-to-zero", _vs("weight: 70", "weight: 0").replace("weight: 30", "weight: 0"), VS_AT,
            "spec.http[0].route", "total destination weight = 0"),
    Invalid("negative-weight", _vs("weight: 30", "weight: -30"), VS_AT, "spec.http[0].route[1].weight", ">= 0"),
    Invalid("bad-regex", _route("    match:\n    - uri: {regex: '/payment.PaymentService/(Charge'}\n"), VS_AT,
            "spec.http[0].match[0].uri.regex", "missing )"),
    Invalid("two-string-matchers", _route("    match:\n    - uri: {exact: /a, prefix: /b}\n"), VS_AT,
            "spec.http[0].match[0].uri", "at most one of"),
    Invalid("empty-header-prefix", _route("    match:\n    - headers: {x-canary: {prefix: ''}}\n"), VS_AT,
            "spec.http[0].match[0].headers[x-canary].prefix", "should not be empty"),
    Invalid("conflicting-hosts", _vs("name: payment\n", "name: payment-copy\n"), "VirtualService default/payment-copy",
            "spec.hosts[0]", "already claimed by VirtualService default/payment"),
    Invalid("duplicate-hosts", _vs("hosts: [payment]", "hosts: [payment, payment]"), VS_AT, "spec.hosts[1]",
            "duplicate hosts"),
    Invalid("wildcard-host", _vs("hosts: [payment]", "hosts: ['*']"), VS_AT, "spec.hosts[0]", "wildcard host"),
    Invalid("no-hosts", _vs("hosts: [payment]", "hosts: []"), VS_AT, "spec.hosts", "at least one host"),
    Invalid("bad-duration", _route("    timeout: 5 seconds\n"), VS_AT, "spec.http[0].timeout", "duration"),
    Invalid("per-try-timeout-too-short", _route("    retries: {attempts: 2, perTryTimeout: 0.5ms}\n"), VS_AT,
            "spec.http[0].retries.perTryTimeout", "greater than 1ms"),
    Invalid("negative-attempts", _route("    retries: {attempts: -1}\n"), VS_AT, "spec.http[0].retries.attempts",
            "negative"),
    Invalid("bad-retry-on", _route("    retries: {attempts: 2, retryOn: 'unavailable,sometimes'}\n"), VS_AT,
            "spec.http[0].retries.retryOn", "'sometimes' is not a valid retryOn policy"),
    Invalid("numeric-grpc-status", _route("    fault: {abort: {grpcStatus: '14', percentage: {value: 10}}}\n"),
            VS_AT, "spec.http[0].fault.abort.grpcStatus", "use a name"),
    Invalid("fault-percentage-over-100", _route("    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n"),
            VS_AT, "spec.http[0].fault.delay.percentage.value", "150"),
    Invalid("mirror-percentage-over-100",
            _route("    mirror: {host: payment, subset: v2}\n    mirrorPercentage: {value: 101}\n"), VS_AT,
            "spec.http[0].mirrorPercentage.value", "101"),
    Invalid("no-destination-host", _vs("destination: {host: payment, subset: v1}", "destination: {subset: v1}"),
            VS_AT, "spec.http[0].route[0].destination.host", "required"),
    Invalid("bad-name", _vs("name: payment\n", "name: Payment_1\n"), "VirtualService default/Payment_1",
            "metadata.name", "RFC 1123"),
    Invalid("unknown-kind", _vs("kind: VirtualService", "kind: VirtualServce"), "document #1", "kind",
            "unknown kind 'VirtualServce'"),
    Invalid("unserved-version", _vs("networking.istio.io/v1", "networking.istio.io/v9"), VS_AT, "apiVersion",
            "not served"),
    Invalid("yaml-syntax", _vs("  hosts: [payment]", "  hosts: [payment"), "document #1", "line 8, column 7",
            "expected ',' or ']'"),
    Invalid("dr-bad-load-balancer", _dr("  trafficPolicy: {loadBalancer: {simple: RANDOMLY}}\n"), DR_AT,
            "spec.trafficPolicy.loadBalancer.simple", "'RANDOMLY'"),
    Invalid("dr-drops-a-used-subset", DR.replace("  - {name: v2, labels: {version: v2}}\n", ""), DR_AT,
            "spec.subsets", "subset v2 is still used by VirtualService default/payment"),
    Invalid("dr-duplicate-subset", DR + "  - {name: v1, labels: {version: v2}}\n", DR_AT, "spec.subsets[2].name",
            "duplicate subset"),
]


def test_invalid_inputs_are_rejected_with_their_field_path_while_traffic_continues(mesh: Mesh) -> None:
    """Each of 28 invalid documents, applied with `mesh_ctl apply -f` under load, is refused: exit 1, nothing
    on stdout, stderr names the file, the resource, the field path and the reason (then a one-line summary:
    ``1 error in 1 document (1 file); nothing was applied``); nothing is stored or
    pushed (same resourceVersion, same versions ACKed by every sidecar), no call fails and the split stays at
    the configured 70/30."""
    assert len(INVALID) >= 20 and len({i.name for i in INVALID}) == len(INVALID)
    mesh.apply("vs.yaml", vs(70, 30))
    stored = {kind: mesh.cli("get", kind, "-o", "yaml").stdout for kind in ("vs", "dr")}
    before = mesh.versions()
    with Load(mesh.client_target()) as load:
        started = time.monotonic()
        for case in INVALID:
            path = mesh.write(f"invalid-{case.name}.yaml", case.text)
            done = mesh.cli("apply", "-f", str(path), check=None)
            assert (done.returncode, done.stdout) == (1, ""), (case.name, done.stdout, done.stderr)
            *lines, summary = done.stderr.splitlines()
            assert lines and all(line.startswith(f"{path}: ") for line in lines), (case.name, done.stderr)
            assert summary.endswith(" in 1 document (1 file); nothing was applied"), (case.name, done.stderr)
            prefix = f"{path}: {case.where}: {case.path}: "
            assert any(line.startswith(prefix) and case.reason in line for line in lines), (
                case.name, prefix, case.reason, done.stderr)
        ended = time.monotonic()
        time.sleep(SETTLE)  # anything pushed by mistake would show in the calls by now
        wait_until(f"{WINDOW} calls", lambda: load.started_since(started) >= WINDOW, timeout=30)
    calls = load.calls
    assert not failures(calls), failures(calls)[:10]
    during = calls_between(calls, started)
    print(f"\n{len(INVALID)} invalid documents refused in {ended - started:.1f} s; {len(during)} calls meanwhile, "
          f"v2 share {v2_share(during):.1f}%")
    assert len(during) >= WINDOW and abs(v2_share(during) - 30.0) <= TOLERANCE, (len(during), v2_share(during))
    assert {kind: mesh.cli("get", kind, "-o", "yaml").stdout for kind in ("vs", "dr")} == stored
    assert mesh.versions() == before


# ------------------------------------------------------------------------------------------------ 4. mirror


def test_mirroring_sends_copies_to_v2_while_callers_only_see_v1(mesh: Mesh) -> None:
    """examples/vs-mirror.yaml: every caller gets v1's answer (header and reply); v2 receives a copy of each
    call (its own GetServerStats), under the ``-shadow`` authority (its sidecar's istio_requests_total counts
    them as destination_service payment-shadow...), and nothing else."""
    mesh.apply("vs.yaml", (EXAMPLES / "vs-mirror.yaml").read_text())
    apps = {w: mesh.workload(w)["app"]["addresses"]["app"] for w in ("payment-v1", "payment-v2")}

    def charges(*, reset: bool = False) -> tuple[int, int]:
        """Charges served by v1, then by v2 (read in this order, so v2's count is the later one), or with
        ``reset`` zero both, v2 first (every call v1 counts from then on has its copy counted by v2)."""
        out = {}
        for workload in ("payment-v2", "payment-v1") if reset else ("payment-v1", "payment-v2"):
            with grpc.insecure_channel(apps[workload]) as channel:
                got = api.Stub(channel).GetServerStats(pb.ServerStatsRequest(reset=reset), timeout=5)
            out[workload] = int(got.calls_by_method.get(api.path("Charge"), 0))
        return out["payment-v1"], out["payment-v2"]

    charges(reset=True)
    shadow = {"reporter": "destination", "destination_service": "payment-shadow.default.svc.cluster.local"}
    direct = {"reporter": "destination", "destination_service": "payment.default.svc.cluster.local"}
    before = {w: mesh.prometheus(w) for w in ("payment-v1", "payment-v2")}
    with Load(mesh.client_target(), rps=100) as load:
        wait_until("600 calls", lambda: len(load.calls) >= 600, timeout=30)
    calls = load.calls
    assert not failures(calls), failures(calls)[:10]
    assert {(c.version, c.reply_version, c.served_by) for c in calls} == {("v1", "v1", "payment-v1")}

    # Copies are fire-and-forget: give the last ones a moment. The mesh's own client (2/s) adds a few to both.
    def mirrored_all() -> bool:
        v1, v2 = charges()
        return v2 >= v1

    wait_until("v2 received a copy of every call", mirrored_all, timeout=10)
    v1_calls, v2_calls = charges()
    assert len(calls) <= v1_calls <= len(calls) + 60, (len(calls), v1_calls)
    assert v1_calls <= v2_calls <= v1_calls + 2, (v1_calls, v2_calls)  # 2: the mesh's client's calls in flight
    after = {w: mesh.prometheus(w) for w in ("payment-v1", "payment-v2")}

    def delta(workload: str, labels: dict[str, str]) -> float:
        return requests_total(after[workload], **labels) - requests_total(before[workload], **labels)

    print(f"\n{len(calls)} calls, all answered by v1; v1 served {v1_calls}, v2 received {v2_calls} copies; "
          f"v2's sidecar: {delta('payment-v2', shadow):.0f} requests for payment-shadow")
    assert delta("payment-v2", shadow) >= len(calls)
    assert delta("payment-v2", direct) == 0  # v2 got nothing but copies
    assert delta("payment-v1", direct) >= len(calls) and delta("payment-v1", shadow) == 0


# ------------------------------------------------------------------------------------------------ 5. headers


def test_header_routing_sends_canary_calls_to_v2_and_the_rest_to_v1(mesh: Mesh) -> None:
    """examples/vs-header-canary.yaml, with calls with and without ``x-canary: true`` interleaved on one
    connection: every canary call is answered by v2, every other call by v1."""
    mesh.apply("vs.yaml", (EXAMPLES / "vs-header-canary.yaml").read_text())
    with Load(mesh.client_target(), rps=100, canary=lambda seq: seq % 3 == 0) as load:
        wait_until("600 calls", lambda: len(load.calls) >= 600, timeout=30)
    calls = load.calls
    assert not failures(calls), failures(calls)[:10]
    canary = [c for c in calls if c.canary]
    plain = [c for c in calls if not c.canary]
    assert len(canary) >= 150 and len(plain) >= 300
    assert {(c.version, c.reply_version) for c in canary} == {("v2", "v2")}, [c for c in canary if c.version != "v2"]
    assert {(c.version, c.reply_version) for c in plain} == {("v1", "v1")}, [c for c in plain if c.version != "v1"]
