"""Least request versus round robin with one slow endpoint, through a real pyproxy (issue 10, "How it is shown").

    grpcio client (64 threads) --h2c--> pyproxy --h2c--> 8 payment servers, one 10x slower than the others

Round robin hands out calls in turn, whatever the endpoints' load: the slow one gets exactly 1/8 of them.
Least request (Envoy's P2C: two random picks *with replacement*, the one with fewer active requests wins)
sends the slow endpoint a call only when both picks are it (1/64) or when it is not busier than the other pick,
which a 10x slower endpoint rarely is under concurrency. The test asks for at most a third of round robin's
share. Why eight endpoints: with n endpoints the floor is 1/n^2 against a bound of 1/(3n), and the equilibrium
share sits above the floor (measured here: n = 6 gave 3.7-5.3 % against a bound of 5.6 %, too close to be
never flaky; n = 8 gives 2.5-2.8 % against 4.2 %). Latencies of 50 / 500 ms keep the proxy's and client's own
milliseconds from blurring the 10x.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ProcessGroup, free_port
from tests.support.sidecar import (
    Proxy,
    charge_many,
    cluster,
    server_calls,
    start_payment,
    start_proxy,
    vhost,
    wait_ports,
)

pytestmark = pytest.mark.timeout(180)
FAST_MS, SLOW_MS = 50, 500
CALLS = 3840
THREADS = 64
FAST_ENDPOINTS = 7


class Setup:
    def __init__(self, procs: ProcessGroup, tmp: Path) -> None:
        self.fast = [start_payment(procs, f"fast{i}", "--latency", str(FAST_MS)) for i in range(FAST_ENDPOINTS)]
        self.slow = start_payment(procs, "slow", "--latency", str(SLOW_MS))
        ports = [self.slow, *self.fast]
        wait_ports(*ports)
        self.proxy: Proxy = start_proxy(
            procs, tmp, free_port(), free_port(),
            [vhost("rr", "rr"), vhost("lr", "lr")],
            [cluster("rr", ports, lb="ROUND_ROBIN"), cluster("lr", ports, lb="LEAST_REQUEST")])

    def slow_share(self, authority: str) -> float:
        """Make CALLS calls through ``authority``'s cluster; the share the slow endpoint served."""
        before = server_calls(self.slow)
        total_before = before + sum(server_calls(p) for p in self.fast)
        with self.proxy.channel(authority) as channel:
            statuses, _ = charge_many(channel, CALLS, threads=THREADS)
        assert statuses == {"OK": CALLS}
        served = server_calls(self.slow) - before
        total = server_calls(self.slow) + sum(server_calls(p) for p in self.fast) - total_before
        assert total == CALLS
        return served / CALLS


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with ProcessGroup(tmp_path_factory.mktemp("lb")) as procs:
        yield Setup(procs, tmp_path_factory.mktemp("lb-proxy"))


def test_least_request_sends_a_slow_endpoint_at_most_a_third_of_round_robins_share(setup: Setup) -> None:
    rr = setup.slow_share("rr")
    lr = setup.slow_share("lr")
    # Round robin: 1/8 of the calls, exactly but for the turn the sequence starts at (CALLS is a multiple of 8).
    assert abs(rr - 1 / (FAST_ENDPOINTS + 1)) <= 1 / CALLS
    # Least request: observed 2.5-2.8 %; the bound (4.17 %) is 5 sd above 2.8 % at 3,840 calls (sd 0.27 points),
    # and a balancer that ignored load (random: 12.5 +- 0.5 points) could not come near it.
    assert lr <= rr / 3, f"least request gave the slow endpoint {lr:.1%} of calls, round robin {rr:.1%}"
