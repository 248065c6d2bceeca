"""``rpc_soak`` and ``channel_soak``: many large_unary RPCs in sequence, on one channel or a new one each.

Semantics of the interop spec: each RPC is timed (no per-RPC deadline at the acceptable latency, so a slow
RPC is measured, not cut; the only deadline is what remains of ``soak_overall_timeout_seconds``, a hang
guard). An RPC fails when its status is not OK, its response is wrong or it took longer than
``soak_per_iteration_max_acceptable_latency_ms``. The case fails when fewer than ``soak_iterations`` RPCs
completed before the overall timeout, or when more than ``soak_max_failures`` failed. Each RPC is logged as
``soak iteration: N elapsed_ms: T peer: P server_uri: U succeeded|failed`` (grpcio's client does not expose
the peer address, so P is ``n/a``), then the latency percentiles.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from tests.interop.calls import InteropError, TestServiceClient, zeros
from tests.interop.proto import messages_pb2


@dataclass(frozen=True, slots=True)
class SoakResult:
    iteration: int
    elapsed_ms: float
    error: str = ""  # empty when the RPC succeeded


@dataclass
class SoakPlan:
    """What every soak thread shares: flags, channel factory, deadline, log and the results so far."""

    args: argparse.Namespace
    open_channel: Callable[[bool], grpc.Channel]
    new_channel_per_rpc: bool
    deadline: float
    log: Callable[[str], None]
    results: list[SoakResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def target(self) -> str:
        return f"{self.args.server_host}:{self.args.server_port}"

    def record(self, result: SoakResult) -> None:
        with self.lock:
            self.results.append(result)
        verdict = "succeeded" if not result.error else f"failed ({result.error})"
        self.log(
            f"soak iteration: {result.iteration} elapsed_ms: {result.elapsed_ms:.0f} peer: n/a "
            f"server_uri: {self.target} {verdict}"
        )


def _one_rpc(client: TestServiceClient, request: messages_pb2.SimpleRequest, timeout: float) -> str:
    """'' on success, else what went wrong."""
    try:
        response = client.unary_call(request, timeout=timeout)
    except grpc.RpcError as error:
        return f"{error.code()}: {error.details()}"
    if len(response.payload.body) != request.response_size:
        return f"response payload {len(response.payload.body)} bytes, want {request.response_size}"
    return ""


def _soak_thread(plan: SoakPlan, iterations: range) -> None:
    args = plan.args
    request = messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_size=args.soak_response_size,
        payload=zeros(args.soak_request_size),
    )
    max_ms = args.soak_per_iteration_max_acceptable_latency_ms
    shared = None if plan.new_channel_per_rpc else plan.open_channel(False)
    try:
        for iteration in iterations:
            now = time.monotonic()
            if now >= plan.deadline:
                return
            earliest_next = now + args.soak_min_time_ms_between_rpcs / 1000
            channel = plan.open_channel(False) if shared is None else shared
            start = time.perf_counter()
            try:
                error = _one_rpc(TestServiceClient(channel), request, plan.deadline - now)
            finally:
                if shared is None:
                    channel.close()
            elapsed_ms = (time.perf_counter() - start) * 1000
            if not error and elapsed_ms > max_ms:
                error = f"latency {elapsed_ms:.1f} ms > {max_ms} ms"
            plan.record(SoakResult(iteration, elapsed_ms, error))
            pause = earliest_next - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        if shared is not None:
            shared.close()


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


def run_soak(
    args: argparse.Namespace,
    open_channel: Callable[[bool], grpc.Channel],
    new_channel_per_rpc: bool,
    log: Callable[[str], None],
) -> None:
    iterations = args.soak_iterations
    overall = args.soak_overall_timeout_seconds
    if overall <= 0:
        overall = args.soak_per_iteration_max_acceptable_latency_ms * iterations / 1000
    plan = SoakPlan(args, open_channel, new_channel_per_rpc, time.monotonic() + overall, log)
    threads = max(1, args.soak_num_threads)
    workers = [
        threading.Thread(target=_soak_thread, args=(plan, range(i, iterations, threads)), name=f"soak-{i}")
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies = sorted(r.elapsed_ms for r in plan.results)
    failures = [r for r in plan.results if r.error]
    done = len(plan.results)
    if latencies:
        p50, p90 = _percentile(latencies, 0.5), _percentile(latencies, 0.9)
        log(
            f"soak done: {done}/{iterations} RPCs, {len(failures)} failed; "
            f"latency ms p50={p50:.1f} p90={p90:.1f} max={latencies[-1]:.1f}"
        )
    if done < iterations:
        raise InteropError(f"only {done} of {iterations} soak RPCs completed within {overall:.1f} s")
    if len(failures) > args.soak_max_failures:
        first = failures[0]
        raise InteropError(
            f"{len(failures)} soak RPCs failed (max {args.soak_max_failures}); "
            f"first: iteration {first.iteration}: {first.error}"
        )
