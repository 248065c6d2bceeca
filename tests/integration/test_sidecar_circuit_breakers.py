"""Circuit breaking in the data plane (issue 10, item 5), through a real pyproxy and real payment servers.

Above a cluster's ``circuit_breakers`` thresholds a call gets Envoy's overflow answer at once: a trailers-only
UNAVAILABLE with ``x-envoy-overloaded: true`` (not with the router's ``suppress_envoy_headers``), response
flag ``UO``, and the overflow counter rises; the calls that were admitted complete normally.

- ``max_requests: 4`` (``limited``, a server answering after 1 s): of 20 concurrent calls 4 are admitted;
  the others overflow (``upstream_rq_pending_overflow``, which is where Envoy counts it for HTTP/2).
- ``max_pending_requests: 2`` (``stuck``): the endpoint's accept queue is full (a listening socket with
  backlog 0 that never accepts, its one slot taken), so the proxy's connection attempt hangs and calls wait
  in the pool's queue, deterministically: of 5 calls, 2 wait and 3 overflow at once. (An upstream that
  accepts TCP but never sends SETTINGS would not do: the pool, as Envoy's, uses a connection once it is
  connected, without waiting for SETTINGS.)
- ``max_retries: 1`` (``failing``, a server failing every call with a trailers-only UNAVAILABLE after
  300 ms; ``retry_on: unavailable``, 3 retries): a retry counts from when it is scheduled until its
  attempt ends, so while one call retries the others' retries overflow (``upstream_rq_retry_overflow``);
  those calls end with the upstream's own answer (no ``x-envoy-overloaded``), flag ``UO`` as in Envoy.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ProcessGroup, free_port, process_group
from tests.support.sidecar import (
    HOST,
    Proxy,
    call_metadata,
    cluster,
    server_calls,
    start_payment,
    start_proxy,
    vhost,
    wait_ports,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
INJECTED = "injected by payment-server"


def _thresholds(**limits: int) -> dict[str, Any]:
    return {"thresholds": [limits]}


class Setup:
    def __init__(self, procs: ProcessGroup, tmp: Path, stack: ExitStack) -> None:
        self.slow = start_payment(procs, "slow", "--latency", "1000")
        self.failing = start_payment(procs, "failing", "--error-rate", "1", "--latency", "300")
        self.stuck = self._unaccepting_port(stack)
        vhosts = [
            vhost("limited", "limited"),
            vhost("stuck", "stuck"),
            vhost("failing", "failing", {"retry_on": "unavailable", "num_retries": 3,
                                         "retry_back_off": {"base_interval": "0.01s"}}),
        ]
        clusters = [
            cluster("limited", [self.slow], circuit_breakers=_thresholds(max_requests=4)),
            cluster("stuck", [self.stuck], circuit_breakers=_thresholds(max_pending_requests=2),
                    connect_timeout="30s"),
            cluster("failing", [self.failing], circuit_breakers=_thresholds(max_retries=1)),
        ]
        (tmp / "plain").mkdir()
        (tmp / "suppressed").mkdir()
        self.proxy = start_proxy(procs, tmp / "plain", free_port(), free_port(), vhosts, clusters)
        self.quiet = start_proxy(procs, tmp / "suppressed", free_port(), free_port(), vhosts, clusters,
                                 suppress_envoy_headers=True)
        wait_ports(self.slow, self.failing)

    @staticmethod
    def _unaccepting_port(stack: ExitStack) -> int:
        """A port whose connections never complete: backlog 0, one connection queued and never accepted
        (Linux then drops further SYNs)."""
        listener = stack.enter_context(socket.socket())
        listener.bind((HOST, 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        stack.enter_context(socket.create_connection((HOST, port), timeout=5))
        return port


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("breakers")
    with process_group(tmp) as procs, ExitStack() as stack:
        yield Setup(procs, tmp, stack)


class Outcome:
    """How one call ended: status, message, headers + trailers."""

    def __init__(self, future: Any) -> None:
        try:
            future.result()
            self.code = grpc.StatusCode.OK
            self.details = ""
            self.meta = dict(future.initial_metadata())
        except grpc.RpcError as e:
            self.code = e.code()
            self.details = e.details() or ""
            self.meta = call_metadata(e)
        self.overloaded = self.meta.get("x-envoy-overloaded")


def _burst(proxy: Proxy, authority: str, n: int, timeout: float = 10) -> list[Outcome]:
    """``n`` concurrent Charge calls on one connection; each call's outcome, in the order they ended."""
    with proxy.channel(authority) as channel:
        stub = api.Stub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        began = time.monotonic()
        futures = [stub.Charge.future(pb.ChargeRequest(amount=1), timeout=timeout) for _ in range(n)]
        ended: list[tuple[float, Any]] = []
        for f in futures:
            f.add_done_callback(lambda f: ended.append((time.monotonic() - began, f)))
        assert wait_until(lambda: len(ended) == n, timeout=timeout + 5)
        return [Outcome(f) for _, f in sorted(ended, key=lambda e: e[0])]


def _counter(proxy: Proxy, cluster_name: str, name: str) -> int:
    return proxy.stats()[f"cluster.{cluster_name}.{name}"]


def _flags(proxy: Proxy, authority: str, expected_lines: int) -> Counter[str]:
    """The access log's response flags of the requests to ``authority`` (waits for ``expected_lines``)."""
    def lines() -> list[dict[str, Any]]:
        return [e for e in proxy.log_lines() if e["authority"] == authority]
    assert wait_until(lambda: len(lines()) >= expected_lines, timeout=10), lines()
    return Counter(e["flags"] for e in lines())


def test_max_requests(setup: Setup) -> None:
    proxy = setup.proxy
    overflow_before = _counter(proxy, "limited", "upstream_rq_pending_overflow")
    served_before = server_calls(setup.slow)
    outcomes = _burst(proxy, "limited", 20)
    codes = Counter(o.code for o in outcomes)
    # The 20 calls go out together and the admitted ones take 1 s, so exactly 4 are in flight when the other
    # 16 arrive. The overflowed ones are answered at once, before any admitted call ends.
    assert codes == {grpc.StatusCode.OK: 4, grpc.StatusCode.UNAVAILABLE: 16}, codes
    assert [o.code for o in outcomes[:16]] == [grpc.StatusCode.UNAVAILABLE] * 16
    for o in outcomes[:16]:
        assert o.overloaded == "true", o.meta
        assert o.details.startswith("upstream connect error or disconnect/reset before headers"), o.details
        assert o.details.endswith("overflow"), o.details
    for o in outcomes[16:]:
        assert o.overloaded is None and o.meta["x-payment-version"] == "v1"  # the server's own answer
    assert _counter(proxy, "limited", "upstream_rq_pending_overflow") - overflow_before == 16
    assert server_calls(setup.slow) - served_before == 4  # overflowed calls never reached the server
    flags = _flags(proxy, "limited", 20)
    assert flags == {"UO": 16, "-": 4}, flags


def test_max_pending_requests(setup: Setup) -> None:
    proxy = setup.proxy
    for round_ in range(2):  # twice: the calls that waited and gave up left the queue (else all 5 overflow)
        overflow_before = _counter(proxy, "stuck", "upstream_rq_pending_overflow")
        outcomes = _burst(proxy, "stuck", 5, timeout=2)
        assert [o.code for o in outcomes] == [grpc.StatusCode.UNAVAILABLE] * 3 + [
            grpc.StatusCode.DEADLINE_EXCEEDED] * 2, round_
        assert all(o.overloaded == "true" for o in outcomes[:3])
        assert _counter(proxy, "stuck", "upstream_rq_pending_overflow") - overflow_before == 3
    flags = _flags(proxy, "stuck", 10)
    assert flags["UO"] == 6, flags  # the 4 that waited were cancelled by their caller (DC)
    assert flags["DC"] == 4, flags


def test_max_retries(setup: Setup) -> None:
    proxy = setup.proxy
    overflow_before = _counter(proxy, "failing", "upstream_rq_retry_overflow")
    retries_before = _counter(proxy, "failing", "upstream_rq_retry")
    served_before = server_calls(setup.failing)
    outcomes = _burst(proxy, "failing", 20)
    # Every call fails with the server's own answer, never the proxy's overflow reply.
    assert all(o.code == grpc.StatusCode.UNAVAILABLE and o.details == INJECTED for o in outcomes)
    assert all(o.overloaded is None for o in outcomes)
    overflows = _counter(proxy, "failing", "upstream_rq_retry_overflow") - overflow_before
    retries = _counter(proxy, "failing", "upstream_rq_retry") - retries_before
    # The 20 first attempts are in flight together for 300 ms and fail within a few ms of each other; the
    # first failure schedules a retry that stays outstanding for >= 300 ms (its attempt), so the other 19
    # failures overflow, and that one call makes its 3 retries one after the other: 19 and 3, with slack for
    # a stalled machine. Without the breaker: 60 retries, no overflow; counting a retry only during its
    # back-off (not until its attempt ends) let ~9 through.
    assert overflows >= 17, (overflows, retries)
    assert retries <= 5, (overflows, retries)
    assert server_calls(setup.failing) - served_before == 20 + retries
    flags = _flags(proxy, "failing", 20)
    assert flags["UO"] == overflows, flags  # each overflowed call stops retrying at its first overflow


def test_suppress_envoy_headers_leaves_out_x_envoy_overloaded(setup: Setup) -> None:
    quiet = setup.quiet
    overflow_before = _counter(quiet, "limited", "upstream_rq_pending_overflow")
    outcomes = _burst(quiet, "limited", 8)
    codes = Counter(o.code for o in outcomes)
    assert codes == {grpc.StatusCode.OK: 4, grpc.StatusCode.UNAVAILABLE: 4}, codes
    assert all(o.overloaded is None for o in outcomes)
    assert _counter(quiet, "limited", "upstream_rq_pending_overflow") - overflow_before == 4
    assert _flags(quiet, "limited", 8) == {"UO": 4, "-": 4}
