"""Retry policy answers (Envoy's vocabulary) and outlier detection (ejection, caps, un-ejection)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.lowlevel
import trio.testing

from pyproxy.config.model import OutlierDetection, RetryPolicy, SocketAddress
from pyproxy.retry import backoff, would_retry_reset, would_retry_response
from pyproxy.timers import Timers
from pyproxy.upstream.cluster import Host
from pyproxy.upstream.outlier import OutlierDetector

ISTIO_DEFAULT = RetryPolicy(retry_on=frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                                                "retriable-status-codes"}), num_retries=2,
                            retriable_status_codes=frozenset({503}))


def test_istio_default_policy() -> None:
    assert would_retry_reset(ISTIO_DEFAULT, "connect-failure")
    assert would_retry_reset(ISTIO_DEFAULT, "refused-stream")
    assert not would_retry_reset(ISTIO_DEFAULT, "reset")  # a reset after the request was sent: not safe
    assert would_retry_response(ISTIO_DEFAULT, 200, 14)  # trailers-only UNAVAILABLE
    assert would_retry_response(ISTIO_DEFAULT, 200, 1)
    assert not would_retry_response(ISTIO_DEFAULT, 200, 13)
    assert would_retry_response(ISTIO_DEFAULT, 503, None)  # retriable-status-codes
    assert not would_retry_response(ISTIO_DEFAULT, 500, None)


def test_5xx_covers_resets_and_gateway_error_only_502_to_504() -> None:
    p5 = RetryPolicy(retry_on=frozenset({"5xx"}))
    assert would_retry_reset(p5, "reset") and would_retry_reset(p5, "connect-failure")
    assert would_retry_response(p5, 500, None) and not would_retry_response(p5, 404, None)
    gw = RetryPolicy(retry_on=frozenset({"gateway-error"}))
    assert would_retry_response(gw, 503, None) and not would_retry_response(gw, 500, None)
    r4 = RetryPolicy(retry_on=frozenset({"retriable-4xx"}))
    assert would_retry_response(r4, 409, None) and not would_retry_response(r4, 400, None)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    for n, upper in ((1, 0.025), (2, 0.075), (3, 0.175), (4, 0.25), (8, 0.25)):
        samples = [backoff(n, 0.025, 0.25, rng) for _ in range(2000)]
        assert max(samples) <= upper
        assert max(samples) > upper * 0.9  # the whole range is used
        assert min(samples) < upper * 0.1


def _hosts(n: int) -> list[Host]:
    return [Host(SocketAddress("127.0.0.1", 1000 + i)) for i in range(n)]


async def test_consecutive_5xx_ejects_then_uneject_after_base_time(autojump_clock: trio.testing.MockClock) -> None:
    hosts = _hosts(10)
    timers = Timers()
    changes: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.lowlevel.checkpoint()
        det = OutlierDetector(OutlierDetection(consecutive_5xx=5, interval=10.0, base_ejection_time=30.0,
                                               max_ejection_percent=10), lambda: hosts, timers,
                              random.Random(0), lambda: changes.append(1))
        bad = hosts[0]
        for _ in range(4):
            det.report(bad, 503)
        assert not bad.ejected
        det.report(bad, 200)  # a success resets the streak
        for _ in range(4):
            det.report(bad, 500)
        assert not bad.ejected
        det.report(bad, 500)
        assert bad.ejected and not bad.healthy and det.ejections_active == 1
        # max_ejection_percent 10% of 10 hosts: a second host cannot be ejected now.
        for _ in range(5):
            det.report(hosts[1], 503)
        assert not hosts[1].ejected
        await trio.sleep(25)
        assert bad.ejected
        await trio.sleep(10)  # 30 s base ejection time, checked on the 10 s interval
        assert not bad.ejected and det.ejections_active == 0
        # Ejected a second time: 2 x base.
        for _ in range(5):
            det.report(bad, 503)
        assert bad.ejected
        await trio.sleep(45)  # t = 80: ejected until 35 + 60 = 95
        assert bad.ejected
        await trio.sleep(25)  # t = 105: un-ejected on the interval at t = 100
        assert not bad.ejected
        det.close()
        nursery.cancel_scope.cancel()


async def test_at_least_one_host_can_be_ejected(autojump_clock: trio.testing.MockClock) -> None:
    hosts = _hosts(2)
    timers = Timers()
    det = OutlierDetector(OutlierDetection(consecutive_5xx=3, max_ejection_percent=10), lambda: hosts,
                          timers, random.Random(0), lambda: None)
    for _ in range(3):
        det.report(hosts[0], 503, local_origin=True)  # connect failures count as 503 when not split
    assert hosts[0].ejected
    for _ in range(3):
        det.report(hosts[1], 503)
    assert not hosts[1].ejected


@pytest.mark.parametrize("enforcing", [0, 100])
async def test_enforcement_percentage(enforcing: int) -> None:
    hosts = _hosts(2)
    det = OutlierDetector(OutlierDetection(consecutive_5xx=1, enforcing_consecutive_5xx=enforcing),
                          lambda: hosts, Timers(), random.Random(0), lambda: None)
    det.report(hosts[0], 500)
    assert hosts[0].ejected is (enforcing == 100)
