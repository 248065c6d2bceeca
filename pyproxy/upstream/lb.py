"""Load balancers over a cluster's hosts (Envoy's semantics, randomness injected).

- ``ROUND_ROBIN``: equal weights cycle through hosts; unequal weights use smooth weighted round robin
  (Envoy uses an EDF scheduler; both give each host ``weight / sum`` of the picks, evenly interleaved).
- ``LEAST_REQUEST``: equal weights -> power of ``choice_count`` (default 2) random choices, the one with the
  fewest active requests wins; unequal weights -> weighted random with
  ``weight / (active_requests + 1) ** active_request_bias``.
- ``RANDOM``: uniform (or weighted) random choice.

Pure in the sense that matters for tests: given the hosts, their counters and a seeded ``random.Random``,
the picks are deterministic. Health filtering happens before (``Cluster.pick_host``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from pyproxy.config.model import LbPolicy


class LbHost(Protocol):
    weight: int
    active_requests: int


class LoadBalancer:
    def pick(self, hosts: Sequence[LbHost], rng: random.Random) -> LbHost:
        raise NotImplementedError


class RoundRobin(LoadBalancer):
    def __init__(self) -> None:
        self._next = 0
        self._current: dict[int, float] = {}

    def pick(self, hosts: Sequence[LbHost], rng: random.Random) -> LbHost:
        n = len(hosts)
        if n == 1:
            return hosts[0]
        first = hosts[0].weight
        if all(h.weight == first for h in hosts):
            i = self._next % n
            self._next = i + 1
            return hosts[i]
        # Smooth weighted round robin.
        total = 0
        best = hosts[0]
        best_score = float("-inf")
        current = self._current
        for h in hosts:
            key = id(h)
            score = current.get(key, 0.0) + h.weight
            current[key] = score
            total += h.weight
            if score > best_score:
                best, best_score = h, score
        current[id(best)] = best_score - total
        if len(current) > 4 * n:
            live = {id(h) for h in hosts}
            for key in [k for k in current if k not in live]:
                del current[key]
        return best


class LeastRequest(LoadBalancer):
    def __init__(self, choice_count: int = 2, active_request_bias: float = 1.0) -> None:
        self.choice_count = max(choice_count, 2)
        self.bias = active_request_bias

    def pick(self, hosts: Sequence[LbHost], rng: random.Random) -> LbHost:
        n = len(hosts)
        if n == 1:
            return hosts[0]
        first = hosts[0].weight
        if all(h.weight == first for h in hosts):
            best = hosts[rng.randrange(n)]
            for _ in range(self.choice_count - 1):
                candidate = hosts[rng.randrange(n)]
                if candidate.active_requests < best.active_requests:
                    best = candidate
            return best
        bias = self.bias
        weights = [h.weight / ((h.active_requests + 1) ** bias) if bias else float(h.weight) for h in hosts]
        return rng.choices(hosts, weights)[0]


class Random(LoadBalancer):
    def pick(self, hosts: Sequence[LbHost], rng: random.Random) -> LbHost:
        n = len(hosts)
        if n == 1:
            return hosts[0]
        first = hosts[0].weight
        if all(h.weight == first for h in hosts):
            return hosts[rng.randrange(n)]
        return rng.choices(hosts, [h.weight for h in hosts])[0]


def make_load_balancer(policy: LbPolicy, choice_count: int = 2, bias: float = 1.0) -> LoadBalancer:
    if policy is LbPolicy.LEAST_REQUEST:
        return LeastRequest(choice_count, bias)
    if policy is LbPolicy.RANDOM:
        return Random()
    return RoundRobin()
