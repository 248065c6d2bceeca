"""The debouncer alone: a burst becomes one flush; a steady stream still flushes every max_delay."""

from __future__ import annotations

import asyncio

import pytest

from mesh_ctl.xds.debounce import Debouncer
from tests.unit.xds_server.conftest import run


def test_a_burst_is_flushed_once_after_the_quiet_period() -> None:
    async def scenario() -> tuple[list[list[str]], float]:
        loop = asyncio.get_running_loop()
        flushes: list[tuple[float, list[str]]] = []

        async def flush(reasons: list[str]) -> None:
            flushes.append((loop.time(), reasons))

        d = Debouncer(flush, quiet=0.1, max_delay=1.0)
        task = asyncio.create_task(d.run())
        for i in range(10):
            d.trigger(f"change {i}")
            await asyncio.sleep(0.01)
        last = loop.time()
        await asyncio.sleep(0.4)
        task.cancel()
        assert not d.pending
        return [r for _, r in flushes], (flushes[0][0] - last) if flushes else -1.0

    batches, delay = run(scenario)
    assert batches == [[f"change {i}" for i in range(10)]]
    assert 0.08 <= delay <= 0.3  # flushed once the burst had been quiet for 100 ms


def test_changes_that_never_stop_are_flushed_every_max_delay() -> None:
    async def scenario() -> list[int]:
        sizes: list[int] = []

        async def flush(reasons: list[str]) -> None:
            sizes.append(len(reasons))

        d = Debouncer(flush, quiet=0.1, max_delay=0.3)
        task = asyncio.create_task(d.run())
        for i in range(40):  # a change every 25 ms for 1 s: never 100 ms quiet
            d.trigger(str(i))
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.2)
        task.cancel()
        return sizes

    sizes = run(scenario)
    assert sum(sizes) == 40
    assert 3 <= len(sizes) <= 6, sizes  # about every 300 ms, plus the tail


def test_bad_settings_are_refused() -> None:
    async def noop(_: list[str]) -> None:
        return None

    with pytest.raises(ValueError, match="quiet"):
        Debouncer(noop, quiet=0.5, max_delay=0.1)


def test_the_flush_knows_when_its_batch_began() -> None:
    """``batch_started`` (istiod's debounce and convergence clocks start there) is the first change's time."""
    async def scenario() -> list[tuple[float, float | None]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, float | None]] = []
        d: Debouncer

        async def flush(reasons: list[str]) -> None:
            seen.append((first, d.batch_started))

        d = Debouncer(flush, quiet=0.05, max_delay=1.0)
        task = asyncio.create_task(d.run())
        first = loop.time()
        d.trigger("a")
        await asyncio.sleep(0.02)
        d.trigger("b")
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        return seen

    [(first, started)] = run(scenario)
    assert started is not None and 0 <= started - first < 0.01
