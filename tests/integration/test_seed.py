"""`pyproxy --seed`: the same seed and the same sequence of calls pick the same hosts, with real processes.

    grpcio client --h2c--> pyproxy --seed N --h2c--> payment-server s0 | s1 | s2 (each replies with its name)

One bootstrap, four routes (selected by ``:authority``), each a random decision per call:
- ``weighted``: weighted clusters 50/30/20 over three one-host clusters;
- ``random``: one cluster of the three servers, RANDOM;
- ``least``: the same, LEAST_REQUEST with equal weights (power of two random choices; sequential calls find
  every host idle, so the first random choice wins);
- ``least-weighted``: LEAST_REQUEST with weights 1/2/3 (weighted random choice).

A sequence of 80 sequential calls cycles through the routes. A fresh proxy with the same seed must produce
the same 80 hosts; with another seed a different sequence (two independent sequences of 80 picks among three
hosts agree with probability far below 10^-20). Each route must use at least two hosts, so a proxy that
always picks the same host cannot pass either.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.procs import ProcessGroup
from tests.support.standalone import Proxy, charge, cluster, start_proxy, start_server, vhost

pytestmark = pytest.mark.timeout(180)

ROUTES = ("weighted", "random", "least", "least-weighted")
CALLS = 80


def _start(procs: ProcessGroup, tmp: Path, ports: list[int], name: str, *flags: str) -> Proxy:
    clusters = [cluster(f"only-{i}", [p]) for i, p in enumerate(ports)]
    clusters += [cluster("random", ports, "RANDOM"), cluster("least", ports, "LEAST_REQUEST"),
                 cluster("least-weighted", ports, "LEAST_REQUEST", weights=[1, 2, 3])]
    vhosts = [vhost("weighted", {"weighted_clusters": {"clusters": [
        {"name": "only-0", "weight": 50}, {"name": "only-1", "weight": 30}, {"name": "only-2", "weight": 20}]}}),
        *(vhost(r, {"cluster": r}) for r in ROUTES[1:])]
    return start_proxy(procs, tmp, name, vhosts, clusters, *flags)


def _sequence(proxy: Proxy) -> list[tuple[str, str]]:
    """(route, host) of each call of the fixed sequence, calls one after the other."""
    channels = {r: proxy.channel(r) for r in ROUTES}
    try:
        out = []
        for i in range(CALLS):
            route = ROUTES[i % len(ROUTES)]
            out.append((route, charge(channels[route]).served_by))
        return out
    finally:
        for ch in channels.values():
            ch.close()


@pytest.fixture
def servers(procs: ProcessGroup) -> list[int]:
    return [start_server(procs, f"s{i}") for i in range(3)]


def _run(procs: ProcessGroup, tmp: Path, servers: list[int], name: str, *flags: str) -> list[tuple[str, str]]:
    proxy = _start(procs, tmp, servers, name, *flags)
    try:
        return _sequence(proxy)
    finally:
        proxy.proc.stop()


def test_same_seed_same_hosts_other_seed_other_hosts(procs: ProcessGroup, tmp_path: Path,
                                                     servers: list[int]) -> None:
    first = _run(procs, tmp_path, servers, "seed-7", "--seed", "7")
    again = _run(procs, tmp_path, servers, "seed-7-again", "--seed", "7")
    other = _run(procs, tmp_path, servers, "seed-8", "--seed", "8")
    for route in ROUTES:
        hosts = Counter(h for r, h in first if r == route)
        assert len(hosts) >= 2, f"{route}: every call went to {hosts}: not a random decision"
    assert again == first
    assert other != first
    # Not even the subset of decisions of one route agrees by chance.
    assert [h for r, h in other if r == "random"] != [h for r, h in first if r == "random"]


def test_seed_is_reported_by_server_info(procs: ProcessGroup, tmp_path: Path, servers: list[int]) -> None:
    seeded = _start(procs, tmp_path, servers, "seeded", "--seed", "18446744073709551615")
    assert seeded.admin_json("/server_info")["seed"] == 2**64 - 1
    unseeded = _start(procs, tmp_path, servers, "unseeded")
    assert unseeded.admin_json("/server_info")["seed"] is None


def test_a_bad_seed_is_refused(procs: ProcessGroup) -> None:
    for bad, why in (("-1", "must be from 0 to 2^64-1"), ("abc", "expected a whole number")):
        proc = procs.python(f"bad-seed-{bad}", "pyproxy", "--config-yaml", "{}", "--seed", bad)
        assert proc.popen.wait(timeout=30) == 2
        assert why in proc.output()
