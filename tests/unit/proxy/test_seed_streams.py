"""``pyproxy --seed``: two random streams, and which draws go to which.

The per-request stream (``Runtime.rng``) must only see draws that requests make, in request order, so that the
same seed and the same calls give the same decisions; whatever timers and connections draw at moments that
depend on timing (keepalive jitter, outlier detection's interval evaluation, xDS back-off) goes to
``Runtime.background_rng``.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import trio
import trio.testing

from pyproxy.config.bootstrap import load_bootstrap
from pyproxy.config.model import OutlierDetection, SocketAddress
from pyproxy.http2.connection import H2Connection
from pyproxy.proxy.keepalive import Keepalive
from pyproxy.proxy.runtime import Runtime
from pyproxy.timers import Timers
from pyproxy.upstream.cluster import Host
from pyproxy.upstream.outlier import OutlierDetector

SNAPSHOT = load_bootstrap(None, json.dumps({"static_resources": {}}))


def _draws(rng: random.Random, n: int = 8) -> list[float]:
    return [rng.random() for _ in range(n)]


def test_the_same_seed_gives_the_same_per_request_stream_whatever_the_background_draws() -> None:
    first, second = Runtime(SNAPSHOT, seed=7), Runtime(SNAPSHOT, seed=7)
    _draws(second.background_rng, 1000)  # e.g. keepalive PINGs and a reconnect happened meanwhile
    assert _draws(first.rng) == _draws(second.rng)
    assert _draws(Runtime(SNAPSHOT, seed=7).rng) != _draws(Runtime(SNAPSHOT, seed=8).rng)
    assert _draws(Runtime(SNAPSHOT, seed=7).rng) != _draws(Runtime(SNAPSHOT, seed=7).background_rng)
    assert _draws(Runtime(SNAPSHOT).rng) != _draws(Runtime(SNAPSHOT).rng)  # unseeded: from the OS
    assert Runtime(SNAPSHOT, seed=2**64 - 1).seed == 2**64 - 1


def _hosts(n: int) -> list[Host]:
    return [Host(SocketAddress("127.0.0.1", 1000 + i)) for i in range(n)]


async def test_interval_ejections_draw_from_the_background_stream(autojump_clock: trio.testing.MockClock) -> None:
    hosts = _hosts(2)
    rng, background = random.Random(1), random.Random(2)
    rng_before, background_before = rng.getstate(), background.getstate()
    config = OutlierDetection(consecutive_5xx=0, consecutive_gateway_failure=0, enforcing_success_rate=0,
                              enforcing_failure_percentage=100, failure_percentage_minimum_hosts=1,
                              failure_percentage_request_volume=1, failure_percentage_threshold=50, interval=1.0,
                              max_ejection_percent=100, max_ejection_time_jitter=1.0)
    timers = Timers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.lowlevel.checkpoint()
        det = OutlierDetector(config, lambda: hosts, timers, rng, lambda: None, background)
        for _ in range(3):
            det.report(hosts[0], 503)
        det.report(hosts[1], 200)
        assert not hosts[0].ejected
        await trio.sleep(1.5)  # the interval evaluates failure percentages: host 0 failed 100 %
        assert hosts[0].ejected and hosts[0].outlier is not None
        assert hosts[0].outlier.ejection_reason == "failure_percentage"
        assert det.enforced["failure_percentage"] == det.detected["failure_percentage"] == 1
        assert rng.getstate() == rng_before  # the per-request stream was not touched
        assert background.getstate() != background_before
        det.close()
        nursery.cancel_scope.cancel()


async def test_consecutive_error_ejections_draw_from_the_request_stream(
        autojump_clock: trio.testing.MockClock) -> None:
    hosts = _hosts(2)
    rng, background = random.Random(1), random.Random(2)
    background_before = background.getstate()
    det = OutlierDetector(OutlierDetection(consecutive_5xx=2, max_ejection_percent=100, max_ejection_time_jitter=1.0),
                          lambda: hosts, Timers(), rng, lambda: None, background)
    det.report(hosts[0], 500)
    det.report(hosts[0], 500)
    assert hosts[0].ejected and hosts[0].outlier is not None
    assert (hosts[0].outlier.ejection_reason, det.ejections_total) == ("consecutive_5xx", 1)
    expected = random.Random(1)
    expected.randrange(100)  # the enforcement dice
    expected.uniform(0, 1.0)  # the ejection time's jitter
    assert rng.getstate() == expected.getstate()
    assert background.getstate() == background_before
    det.close()


async def test_keepalive_jitter_draws_from_the_background_stream(autojump_clock: trio.testing.MockClock) -> None:
    # A runtime without a per-request stream at all: the keepalive must not need one.
    runtime = SimpleNamespace(background_rng=random.Random(3), timers=Timers())
    before = runtime.background_rng.getstate()
    keepalive = Keepalive(runtime, H2Connection(client_side=True), lambda: None, lambda: None, interval=10.0,
                          timeout=5.0, jitter_percent=15.0)
    assert runtime.background_rng.getstate() != before
    keepalive.stop()
