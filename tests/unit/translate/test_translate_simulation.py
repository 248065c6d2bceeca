"""Simulation: translate, build pyproxy's own RouteTable from the RouteConfiguration, and replay calls
("this call matches this route and goes to this cluster"), like Istio's pilot/pkg/simulation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mesh_ctl.registry import Registry
from tests.unit.translate.conftest import ALL, FQDN, V1, V2, dest, subsets_dr, virtual_service
from tests.unit.translate.helpers import proxyless, route_table, select, sidecar

V3 = f"outbound|8080|v3|{FQDN}"
SVC = "/payment.PaymentService"
RESOURCES = [
    virtual_service([
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": [dest("v3")]},
        {"name": "refund", "match": [{"uri": {"exact": f"{SVC}/Refund"}}], "route": [dest("v2")]},
        {"name": "reads", "match": [{"uri": {"regex": f"{SVC}/(Get|List).*"}}], "route": [dest("v1")]},
        {"name": "by-authority", "match": [{"authority": {"prefix": "payment.default.svc"}}], "route": [dest("v2")]},
        {"name": "tenant", "match": [{"headers": {"x-tenant": {"prefix": "beta-"}},
                                      "withoutHeaders": {"x-opt-out": {}}}], "route": [dest("v3")]},
        {"name": "batch", "match": [{"uri": {"prefix": "/PAYMENT.paymentservice/chargeb"}, "ignoreUriCase": True}],
         "route": [dest("v1")]},
        {"name": "split", "route": [dest("v1", 80), dest("v2", 20)]},
    ]),
    subsets_dr("v1", "v2", "v3"),
]

# (authority, path, headers) -> (route name, cluster); cluster None = a weighted pick.
CALLS: list[tuple[str, str, dict[str, str], tuple[str, str | None] | None]] = [
    ("payment:8080", f"{SVC}/Charge", {"x-canary": "true"}, ("canary", V3)),
    ("payment", f"{SVC}/Refund", {"x-canary": "true"}, ("canary", V3)),  # first match wins
    ("payment:8080", f"{SVC}/Charge", {"x-canary": "false"}, ("split", None)),
    ("payment:8080", f"{SVC}/Refund", {}, ("refund", V2)),
    ("payment:8080", f"{SVC}/RefundAll", {}, ("split", None)),  # exact means exact
    ("payment.default:8080", f"{SVC}/GetPayment", {}, ("reads", V1)),
    ("payment:8080", f"{SVC}/ListPayments", {}, ("reads", V1)),
    ("payment:8080", f"{SVC}/WatchPayment", {}, ("split", None)),  # regex is anchored
    ("payment.default.svc:8080", f"{SVC}/Charge", {}, ("by-authority", V2)),
    (f"{FQDN}:8080", f"{SVC}/Charge", {}, ("by-authority", V2)),
    (f"{FQDN}", f"{SVC}/Charge", {}, ("by-authority", V2)),
    ("payment:8080", f"{SVC}/Charge", {"x-tenant": "beta-7"}, ("tenant", V3)),
    ("payment:8080", f"{SVC}/Charge", {"x-tenant": "beta-7", "x-opt-out": "1"}, ("split", None)),
    ("payment:8080", f"{SVC}/Charge", {"x-tenant": "alpha-7"}, ("split", None)),
    ("payment:8080", f"{SVC}/ChargeBatch", {}, ("batch", V1)),  # case-insensitive prefix
    ("PAYMENT:8080", f"{SVC}/Charge", {}, ("split", None)),  # host names are case-insensitive
    ("ledger.billing:7070", f"{SVC}/Charge", {}, None),  # not a service this client calls: 404 NR
    ("payment:9999", f"{SVC}/Charge", {}, None),
]


@pytest.mark.parametrize(("authority", "path", "headers", "expected"), CALLS)
def test_calls_match_the_intended_route_and_cluster(registry: Registry, authority: str, path: str,
                                                    headers: dict[str, str],
                                                    expected: tuple[str, str | None] | None) -> None:
    table = route_table(sidecar(registry, RESOURCES))
    got = select(table, authority, path, headers)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert got[0] == expected[0]
    if expected[1] is not None:
        assert got[1] == expected[1]
    else:
        assert got[1] in (V1, V2)


def _shares(table: object, draws: int, seed: int, headers: dict[str, str] | None = None) -> Counter[str]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(draws):
        got = select(table, "payment:8080", f"{SVC}/Charge", headers, rng)  # type: ignore[arg-type]
        assert got is not None
        counts[got[1]] += 1
    return counts


# Fixed seeds keep the test deterministic; 1.5 points is about 3 standard deviations of a share estimated
# from 10,000 draws (sqrt(0.25 / 10,000) = 0.5 points at worst).
@pytest.mark.parametrize(("weights", "seed"), [((80, 20, 0), 11), ((50, 50, 0), 12), ((10, 60, 30), 13),
                                               ((1, 0, 99), 14)])
def test_weighted_picks_follow_the_virtual_service_weights(registry: Registry, weights: tuple[int, int, int],
                                                           seed: int) -> None:
    vs = virtual_service([{"name": "split", "route": [dest(s, w) for s, w in zip(("v1", "v2", "v3"), weights,
                                                                                 strict=True)]}])
    table = route_table(sidecar(registry, [vs, subsets_dr("v1", "v2", "v3")]))
    draws = 10_000
    counts = _shares(table, draws, seed)
    total = sum(weights)
    for cluster, weight in zip((V1, V2, V3), weights, strict=True):
        share = 100.0 * counts[cluster] / draws
        assert abs(share - 100.0 * weight / total) <= 1.5, (cluster, share, weight)
        if weight == 0:
            assert counts[cluster] == 0


def test_topology_split_without_resources(registry: Registry) -> None:
    table = route_table(sidecar(registry, []))
    counts = _shares(table, 10_000, 5)
    assert set(counts) == {V1, V2}
    assert abs(100.0 * counts[V1] / 10_000 - 50.0) <= 1.5


def test_default_route_when_no_virtual_service_matches_the_host(registry: Registry) -> None:
    table = route_table(sidecar(registry, [subsets_dr("blue")]))
    assert select(table, "payment:8080", f"{SVC}/Charge") == ("default", ALL)


def test_proxyless_routes_select_the_same_way(registry: Registry) -> None:
    table = route_table(proxyless(registry, RESOURCES), name=ALL)
    assert select(table, "payment:8080", f"{SVC}/Refund") == ("refund", V2)
    assert select(table, f"{FQDN}:8080", f"{SVC}/Charge", {"x-canary": "true"}) == ("canary", V3)
    assert select(table, f"{FQDN}", f"{SVC}/GetPayment") == ("reads", V1)
    assert select(table, "payment", f"{SVC}/Charge") is None  # grpcio always sends the port
