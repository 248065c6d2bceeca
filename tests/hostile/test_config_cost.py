"""Issue 9.6, reproduced: a valid 5 MB VirtualService (21,141 routes) was accepted after 7.85 s, blocked the
control plane's event loop for 4.4 s, took the client sidecar to 97 % CPU and 200 MB, and raised p50 from 2 ms
to about 100 ms.

Against a real mesh (`mesh_ctl up`: control plane, three sidecars, the payment apps), a VirtualService just under
the per-object limit (1.5 MiB stored, etcd's) with ~23,000 exact-match routes, the payment service's real
method last but one, is applied while a probe asks the control plane's management API for ``/ready`` every
10 ms:

- ``mesh_ctl apply`` returns within :data:`APPLY_BOUND_S`;
- no probe waits more than :data:`STALL_BOUND_S` (the event loop never blocks on parsing, validation or
  translation: the files are parsed in a process of their own, validation and translation run in worker
  threads; with the YAML parsed on the loop the worst probe waited 0.88 s, now ~0.2 s);
- once every sidecar ACKed the new revision (observed through proxy-status, no fixed sleep), the p50 of
  legitimate calls stays within ``max(2 x quiet p50, quiet p50 + 2 ms)``: the client sidecar finds the route
  through an index whose cost does not grow with the number of exact/prefix routes (a linear scan of 23,000
  routes costs several ms per call);
- an object over 1.5 MiB is refused with one clear error naming the file, the object and the limit, `apply`
  exits 1 and the store is unchanged (the previous configuration keeps serving).

Figures (CPU time and RSS of the client sidecar while it takes the big table, loop stall, apply time, p50s)
are printed. Before the fix (25,906 routes): apply 3.1 s, worst probe 882 ms, p50 1.61 -> 7.27 ms, calls
during the push up to 3.0 s (the sidecar translated on its event loop), client sidecar 3.6 s CPU and 54 -> 161 MB;
after: apply ~3.5 s, worst probe ~0.15 s, p50 1.61 -> 1.65 ms, calls during the push under 0.25 s, 53 -> 167 MB.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from mesh_ctl.resources.loader import MAX_OBJECT_BYTES
from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.live_mesh import AUTHORITY, Load, Mesh, failures, running_mesh

pytestmark = pytest.mark.timeout(180)

APPLY_BOUND_S = 15.0  # ~3-5 s here (the old code: ~2-3 s); the issue saw 7.85 s for 5 MB
# The old code stalled the loop for 0.9 s (the YAML parsed on it). Now the worst probe waits 0.15-0.3 s on an idle
# machine (0.48 s once with two other test suites running): what is left are the interpreter's full garbage
# collections while the new configuration's million objects are built (measured with gc.callbacks: 60-490 ms
# each, in whichever thread allocates, holding the GIL), not parsing, validation, translation or serialization.
STALL_BOUND_S = 0.65
CALL_STALL_BOUND_S = 1.0
RSS_GROWTH_BOUND_MB = 175
MATCHES_PER_ROUTE = 8  # each `match` entry of an http route is one Envoy route
CALLS = 300
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

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

SMALL_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment, namespace: default}
spec:
  hosts: [payment]
  http:
  - {match: [{uri: {exact: /payment.PaymentService/Charge}}], route: [{destination: {host: payment, subset: v1}}]}
  - {route: [{destination: {host: payment, subset: v1}}]}
"""


def big_vs(http_routes: int, name: str = "payment") -> dict[str, object]:
    """A valid VirtualService: ``http_routes`` routes of :data:`MATCHES_PER_ROUTE` exact paths that no call uses,
    then the payment service's Charge, then a default route."""
    destination = [{"destination": {"host": "payment", "subset": "v1"}}]
    http: list[dict[str, object]] = [
        {"match": [{"uri": {"exact": f"/payment.PaymentService/M{i}x{j}"}} for j in range(MATCHES_PER_ROUTE)],
         "route": destination} for i in range(http_routes)]
    http.append({"match": [{"uri": {"exact": "/payment.PaymentService/Charge"}}], "route": destination})
    http.append({"route": destination})
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"hosts": ["payment"], "http": http}}


def stored_size(doc: dict[str, object]) -> int:
    return len(json.dumps(doc, separators=(",", ":")).encode())


def largest_under_limit() -> dict[str, object]:
    """The biggest :func:`big_vs` under the per-object limit (by bisection on its route count)."""
    low, high = 1, 20_000
    while low < high:
        mid = (low + high + 1) // 2
        if stored_size(big_vs(mid)) < MAX_OBJECT_BYTES - 4096:
            low = mid
        else:
            high = mid - 1
    return big_vs(low)


class Probe:
    """GET /ready on the management API every 10 ms (one keep-alive connection, another one after an error),
    recording each request's latency: the control plane's event loop serves it, so a blocked loop shows."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loop-probe")

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        while not self._stop.wait(0.01):
            start = time.monotonic()
            try:
                conn.request("GET", "/ready")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
            if ok:
                self.samples.append((start, time.monotonic() - start))
            else:
                self.errors += 1

    def worst(self, since: float, until: float) -> float:
        """The longest wait of a probe that started in [since, until]; a probe still waiting at ``until``
        counts too (from its start)."""
        found = [d for s, d in self.samples if since <= s <= until]
        return max(found, default=0.0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def p50_of_calls(target: str, n: int = CALLS) -> float:
    with grpc.insecure_channel(target, options=api.channel_options(AUTHORITY)) as channel:
        stub = api.Stub(channel)
        request = pb.ChargeRequest(customer_id="c", amount=100, currency="EUR")
        for _ in range(20):  # warm up: connections, the sidecars' caches
            stub.Charge(request, timeout=5)
        out = []
        for _ in range(n):
            start = time.monotonic()
            stub.Charge(request, timeout=5)
            out.append(time.monotonic() - start)
    return statistics.median(out)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, "config-cost", "--rps", "1", "--concurrency", "1") as m:
        m.cli("apply", "-f", str(m.write("dr.yaml", DR)))
        m.apply("vs.yaml", SMALL_VS)
        yield m


def sidecar_pid(mesh: Mesh, workload: str) -> int:
    return next(p.pid for p in mesh.state().processes if p.role == "sidecar" and p.workload == workload)


def api_address(mesh: Mesh) -> str:
    return next(p.addresses["api"] for p in mesh.state().processes if p.role == "control-plane")


def test_a_big_virtual_service_costs_neither_the_control_plane_nor_the_calls(mesh: Mesh) -> None:
    target = mesh.client_target()
    quiet = p50_of_calls(target)
    doc = largest_under_limit()
    size = stored_size(doc)
    routes = (len(doc["spec"]["http"]) - 2) * MATCHES_PER_ROUTE + 2  # type: ignore[index]
    text = yaml.dump(doc, Dumper=DUMPER, default_flow_style=None, width=200, sort_keys=False)
    assert len(text) < 3 * 1024 * 1024  # under the request limit
    path = mesh.write("big.yaml", text)
    sidecar = sidecar_pid(mesh, "client")
    cpu_before, rss_before = cpu_seconds(sidecar), rss_mb(sidecar)
    revision = int(mesh.api().info()["store_revision"])
    with Probe(api_address(mesh)) as probe, Load(target, rps=50, concurrency=4) as load:
        started = time.monotonic()
        mesh.cli("apply", "-f", str(path))
        applied = time.monotonic() - started
        synced = mesh.wait_converged(timeout=90)
        until = time.monotonic()
    during = [c for c in load.calls if started <= c.start <= until]
    slowest = max((c.end - c.start for c in during), default=0.0)
    assert int(mesh.api().info()["store_revision"]) == revision + 1
    stall = probe.worst(started, until)
    cpu, rss = cpu_seconds(sidecar) - cpu_before, rss_mb(sidecar)
    big = p50_of_calls(target)
    print(f"\nVirtualService of {size / 1024 / 1024:.2f} MiB stored, {routes:,} Envoy routes: apply {applied:.2f} s, "
          f"all sidecars synced {synced:.2f} s after it; management API probes: {len(probe.samples)}, worst "
          f"{stall * 1000:.0f} ms, {probe.errors} errors; client sidecar: {cpu:.2f} s CPU to take it, RSS "
          f"{rss_before:.0f} -> {rss:.0f} MB; p50 of Charge {quiet * 1000:.2f} ms quiet, {big * 1000:.2f} ms with "
          f"the big table; calls while it was applied and pushed: {len(during)}, {len(failures(during))} failed, "
          f"slowest {slowest * 1000:.0f} ms")
    assert applied < APPLY_BOUND_S, applied
    assert probe.errors == 0
    assert stall < STALL_BOUND_S, stall
    # The client sidecar translates the new routes in a worker thread: calls go on while it does (with the
    # translation on its event loop, calls waited for it: ~3 s).
    assert not failures(during), failures(during)[:3]
    assert slowest < CALL_STALL_BOUND_S, slowest
    # Taking the table costs the sidecar memory, once: +114 MB here (+227 MB when each worker thread had a
    # malloc arena of its own, see pyproxy.main._one_malloc_arena).
    assert rss - rss_before < RSS_GROWTH_BOUND_MB, (rss_before, rss)
    assert big <= max(2 * quiet, quiet + 0.002), (quiet, big)


def test_an_object_over_the_limit_is_refused_and_nothing_changes(mesh: Mesh) -> None:
    before = mesh.api().resources("vs", "default", "payment")
    doc = big_vs(1)
    http = doc["spec"]["http"]  # type: ignore[index]
    while stored_size(doc) <= MAX_OBJECT_BYTES:
        http[:0] = big_vs(2000)["spec"]["http"][:-2]  # type: ignore[index]
    assert stored_size(doc) < 3 * 1024 * 1024  # under the request limit: the object limit refuses it
    path = mesh.write("huge.json", json.dumps(doc, separators=(",", ":")))
    done = mesh.cli("apply", "-f", str(path), check=1)
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"{path}: VirtualService default/payment: "), lines
    assert "at most 1.5 MiB per object" in lines[0], lines
    assert len(lines) == 2, lines  # the problem and the summary
    after = mesh.api().resources("vs", "default", "payment")
    assert after == before  # same revision, same object
    assert mesh.converged()
    with grpc.insecure_channel(mesh.client_target(), options=api.channel_options(AUTHORITY)) as channel:
        api.Stub(channel).Charge(pb.ChargeRequest(customer_id="c", amount=1, currency="EUR"), timeout=5)
