"""Issue 10's demos of fault injection and retries, on `mesh_ctl up`, driven by the CLI as a user drives it.

The control plane puts Envoy's fault filter (``envoy.filters.http.fault``) on every outbound listener, as Istio
does; pyproxy runs it (``pyproxy/filters/``), and one without it would NACK those listeners.

(a) The seed's demo: after `mesh_ctl fault payment --abort UNAVAILABLE --percent 30`, N_FAULT calls through the
    client's sidecar fail UNAVAILABLE ("fault filter abort") in 30 % +- 3 points of the cases; the client
    sidecar's ``istio_requests_total`` counts them with ``grpc_response_status="14"`` and
    ``response_flags="FI"`` (and no UNAVAILABLE without FI); after `--clear` no call fails.
(b) With payment v2 failing 30 % of its calls itself (topology ``errorRate: 0.3``, the server's
    ``--error-rate``) and every call sent to v2: without retries (`retries payment --attempts 0`; Istio's
    default policy would retry UNAVAILABLE twice) about 30 % fail; with `retries payment --attempts 3 --on
    unavailable` at most 1.5 % do (each call is tried 4 times: 0.3^4 = 0.81 % expected).

Tolerances (binomial, computed in :func:`test_the_tolerances_separate_working_from_broken`): every bound is at
least 5 standard deviations from what a working mesh gives, so it does not fail by chance, and a broken one
(no fault, a fault at another rate, no retries, Istio's default 2 retries instead of 3) is outside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mesh_ctl.topology import default_topology, topology_to_dict
from tests.support.live_mesh import Call, Load, Mesh, failures, requests_total, running_mesh, wait_until

pytestmark = pytest.mark.timeout(600)

RPS = 250.0
N_FAULT = 6000  # 5 sd of Binomial(n, 0.3)/n is 3 points from 5,834 calls on
N_CLEAR = 1000
N_OFF = 2000
N_RETRIED = 6000
FAULT_SHARE = 0.30
RETRIED_MAX = 0.015
ERROR_RATE = 0.3


def sd(p: float, n: int) -> float:
    """The standard deviation of the share of successes of Binomial(n, p)."""
    return math.sqrt(p * (1 - p) / n)


def test_the_tolerances_separate_working_from_broken() -> None:
    # (a) 30 % +- 3 points: 5.07 sd for the fault as configured; a broken rate (no fault, or every call) is far.
    assert 3 / (100 * sd(FAULT_SHARE, N_FAULT)) >= 5.0
    # (b) without retries: 30 % +- 5 sd (5.1 points at 2,000 calls); 2 retries would give 2.7 %: 27 sd away.
    assert 5 * sd(ERROR_RATE, N_OFF) <= 0.052 and (ERROR_RATE - ERROR_RATE ** 3) / sd(ERROR_RATE, N_OFF) > 20
    # (b) with 3 retries: 0.3^4 = 0.81 % expected; 1.5 % is 6 sd above it, and 5.6 sd below the 2.7 % of
    # Istio's default 2 retries (so a mesh that ignored `retries` fails the test).
    working, default = ERROR_RATE ** 4, ERROR_RATE ** 3
    assert (RETRIED_MAX - working) / sd(working, N_RETRIED) >= 5.9
    assert (default - RETRIED_MAX) / sd(default, N_RETRIED) >= 5.5


def window(load: Load, since: float, n: int) -> list[Call]:
    """The first ``n`` calls started after ``since`` (waits for them; bounded)."""
    wait_until(f"{n} calls after the change", lambda: load.started_since(since) >= n, timeout=n / RPS * 4 + 30)
    return [c for c in load.calls if c.start >= since][:n]


def share_failed(calls: list[Call]) -> float:
    return len(failures(calls)) / len(calls)


# ------------------------------------------------------------------------------------------------ (a) faults


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, "fault-demo", "--rps", "2", "--concurrency", "1") as m:
        yield m


def test_fault_abort_30_percent_then_clear(mesh: Mesh) -> None:
    mesh.wait_converged()
    with Load(mesh.client_target(), rps=RPS) as load:
        out = mesh.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "30").stdout
        assert "abort UNAVAILABLE 30%" in out, out
        mesh.wait_converged()
        before = mesh.prometheus("client")  # from here on every call meets the fault
        faulted = window(load, time.monotonic(), N_FAULT)
        during = mesh.prometheus("client")
        mesh.cli("fault", "payment", "--clear")
        mesh.wait_converged()
        cleared = window(load, time.monotonic(), N_CLEAR)

    failed = failures(faulted)
    share = len(failed) / N_FAULT
    print(f"\n{N_FAULT} calls with the fault: {len(failed)} UNAVAILABLE ({100 * share:.2f} %); "
          f"{len(failures(cleared))} of {N_CLEAR} after --clear")
    assert abs(share - FAULT_SHARE) <= 0.03, share
    assert {(c.status, c.served_by) for c in failed} == {("UNAVAILABLE", "UNAVAILABLE: fault filter abort")}
    assert {c.version for c in failed} == {"unknown"}  # answered by the client's sidecar: no server saw them
    assert {c.version for c in faulted if c.status == "OK"} == {"v1", "v2"}
    assert failures(cleared) == [], failures(cleared)[:5]

    def delta(**labels: str) -> float:
        return requests_total(during, reporter="source", **labels) - requests_total(before, reporter="source",
                                                                                    **labels)

    injected = delta(grpc_response_status="14", response_flags="FI")
    assert injected >= len(failed), (injected, len(failed))  # (the mesh's own load client adds a few)
    assert delta(grpc_response_status="14") == injected  # every UNAVAILABLE was injected
    assert injected / delta() == pytest.approx(FAULT_SHARE, abs=0.03)


# ------------------------------------------------------------------------------------------------ (b) retries


@pytest.fixture(scope="module")
def flaky_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    topology = topology_to_dict(default_topology())
    [v2] = [w for w in topology["workloads"] if w["name"] == "payment-v2"]
    v2["errorRate"] = ERROR_RATE
    path: Path = tmp_path_factory.mktemp("flaky-topology") / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    with running_mesh(tmp_path_factory, "retry-demo", "--topology", str(path), "--rps", "2",
                      "--concurrency", "1") as m:
        yield m


def test_retries_mask_a_v2_that_fails_30_percent(flaky_mesh: Mesh) -> None:
    mesh = flaky_mesh
    mesh.cli("set-weight", "payment", "v1=0", "v2=100")
    out = mesh.cli("retries", "payment", "--attempts", "0").stdout
    assert "off (attempts: 0)" in out, out
    mesh.wait_converged()
    with Load(mesh.client_target(), rps=RPS) as load:
        off = window(load, time.monotonic(), N_OFF)
        out = mesh.cli("retries", "payment", "--attempts", "3", "--on", "unavailable").stdout
        assert "3 retries on unavailable" in out, out
        mesh.wait_converged()
        retried = window(load, time.monotonic(), N_RETRIED)

    without, with_retries = share_failed(off), share_failed(retried)
    print(f"\nv2 failing {100 * ERROR_RATE:g} %: {100 * without:.2f} % of {N_OFF} calls fail without retries, "
          f"{100 * with_retries:.2f} % of {N_RETRIED} with 3 retries on unavailable")
    assert abs(without - ERROR_RATE) <= 5 * sd(ERROR_RATE, N_OFF), without
    assert with_retries <= RETRIED_MAX, with_retries
    for c in failures([*off, *retried]):
        assert (c.status, c.served_by, c.version) == ("UNAVAILABLE", "UNAVAILABLE: injected by payment-server",
                                                      "v2"), c
    assert {c.version for c in [*off, *retried] if c.status == "OK"} == {"v2"}  # every call went to v2
