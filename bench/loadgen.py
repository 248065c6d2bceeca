"""The load generator: grpc.aio in its own process, one channel (one HTTP/2 connection) per target.

``python -m bench.loadgen [--request-size 100] [--response-size 100]`` reads one JSON command per line on
stdin and answers each with one JSON line on stdout, so the orchestrator can sample ``/proc`` exactly
around each phase while channels stay connected between phases:

- ``{"op": "connect", "target": "127.0.0.1:P", "timeout": 10}``
- ``{"op": "throughput", "target": ..., "n": 10000, "c": 32, "max_seconds": 120}``: closed loop, ``c``
  calls in flight on the target's channel until ``n`` calls have completed.
- ``{"op": "latency", "target": ..., "n": 2000, "max_seconds": 120}``: one call at a time, each timed with
  ``time.perf_counter``; the answer carries every sample in microseconds.
- ``{"op": "quit"}``

Every answer has ``ok``, ``completed``, ``errors``, ``first_error`` and ``elapsed``. The first failed call
(a gRPC error, a wrong response size, or a phase longer than ``max_seconds``) stops the phase: a broken
proxy costs seconds, not minutes. Every call has a deadline (``call_timeout``, default 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.server import PATH

Json = dict[str, Any]


@dataclass
class PhaseResult:
    completed: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    samples_us: list[float] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message[:500]

    def to_json(self) -> Json:
        out: Json = {
            "ok": self.errors == 0,
            "completed": self.completed,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed": self.elapsed,
        }
        if self.samples_us:
            out["samples_us"] = [round(s, 1) for s in self.samples_us]
        return out


class LoadGen:
    def __init__(self, request_size: int, response_size: int) -> None:
        self.request = b"q" * request_size
        self.response_size = response_size
        self.channels: dict[str, grpc.aio.Channel] = {}

    def _call(self, target: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        channel = self.channels.get(target)
        if channel is None:
            # A local subchannel pool: each target gets its own connection, never shared between targets.
            channel = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            self.channels[target] = channel
        return channel.unary_unary(PATH, None, None)  # raw bytes both ways

    async def _one(
        self, call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], result: PhaseResult, deadline: float
    ) -> None:
        try:
            response = await call(self.request, timeout=deadline)
        except grpc.aio.AioRpcError as e:
            result.fail(f"{e.code().name}: {e.details()}")
            return
        if len(response) != self.response_size:
            result.fail(f"response of {len(response)} bytes, expected {self.response_size}")
            return
        result.completed += 1

    async def connect(self, cmd: Json) -> PhaseResult:
        result = PhaseResult()
        self._call(cmd["target"])
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self.channels[cmd["target"]].channel_ready(), cmd.get("timeout", 10.0))
        except TimeoutError:
            result.fail(f"could not connect to {cmd['target']} in {cmd.get('timeout', 10.0)}s")
        result.elapsed = time.perf_counter() - t0
        return result

    async def throughput(self, cmd: Json) -> PhaseResult:
        call = self._call(cmd["target"])
        n, c, timeout = int(cmd["n"]), int(cmd["c"]), float(cmd.get("call_timeout", 10.0))
        result = PhaseResult()
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < n and result.errors == 0:
                issued += 1
                await self._one(call, result, timeout)

        t0 = time.perf_counter()
        await self._bounded(asyncio.gather(*(worker() for _ in range(min(c, n)))), cmd, result)
        result.elapsed = time.perf_counter() - t0
        return result

    async def latency(self, cmd: Json) -> PhaseResult:
        call = self._call(cmd["target"])
        n, timeout = int(cmd["n"]), float(cmd.get("call_timeout", 10.0))
        result = PhaseResult()
        clock = time.perf_counter

        async def loop() -> None:
            for _ in range(n):
                t = clock()
                await self._one(call, result, timeout)
                dt = clock() - t
                if result.errors:
                    return
                result.samples_us.append(dt * 1e6)

        t0 = clock()
        await self._bounded(loop(), cmd, result)
        result.elapsed = clock() - t0
        return result

    async def _bounded(self, work: Any, cmd: Json, result: PhaseResult) -> None:
        max_seconds = float(cmd.get("max_seconds", 300.0))
        try:
            await asyncio.wait_for(work, max_seconds)
        except TimeoutError:
            result.fail(f"phase did not finish in {max_seconds:.0f}s ({result.completed} calls done)")

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(None)


async def serve(args: argparse.Namespace) -> None:
    gen = LoadGen(args.request_size, args.response_size)
    loop = asyncio.get_running_loop()
    ops = {"connect": gen.connect, "throughput": gen.throughput, "latency": gen.latency}
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                return
            result = await ops[cmd["op"]](cmd)
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
            sys.stdout.flush()
    finally:
        await gen.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--request-size", type=int, default=100)
    parser.add_argument("--response-size", type=int, default=100)
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
