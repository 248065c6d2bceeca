"""Every panel of every Grafana dashboard (compose/grafana/dashboards/*.json), its queries run against a real
Prometheus scraping a real mesh (`mesh_ctl up`: the load client calling payment v1 and v2 through the sidecars),
and checked to return the series they should. The Prometheus is the one `up` starts (``--scrape-interval 1s``)
when `up` starts one, else one the ``prometheus`` fixture starts with mesh_ctl.runtime.prometheus's configuration.

How a dashboard is proven (no Grafana here: tests.support.grafana does what Grafana does with the JSON):

1. Its variables are evaluated in order against Prometheus (``label_values`` through the label API,
   ``query_result`` through an instant query and the variable's regex); the test checks the options offered
   and picks values among them.
2. Every target's ``expr`` is interpolated (variables, ``$__rate_interval`` by Grafana's rule from a 1 s
   scrape interval) and run as an instant query at two moments: ``clean`` (traffic to both versions, no
   fault ever injected in the window) and ``fault`` (`mesh_ctl fault payment --abort UNAVAILABLE --percent
   50` in force for the whole window); the control plane's panels at ``push``, just after the fault's
   configuration push.
3. Each panel has an expectation below (dashboard -> panel title -> check); a panel without one fails the
   test, and so do an expectation without its panel and a check that leaves a target's result unread.

The control plane's panels need its istiod-named metrics on /metrics (mesh_ctl.monitoring): no
``pilot_xds_pushes`` series in Prometheus fails the tests (no skip: it is part of the mesh, CI must see it go).

Statistics: 40 calls/s; a rate window holds >= ~100 calls, so a 50 % fault's share (sigma <= 0.05) is
checked within 0.2..0.8 (>= 6 sigma) and a version's share of the calls that reach one within 0.1..0.9.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.specs import ProcessSpec
from tests.support import grafana
from tests.support.live_mesh import Mesh, running_mesh, wait_until
from tests.support.procs import REPO_ROOT, free_port
from tests.support.prometheus import prometheus_binary
from tests.support.promql import PrometheusAPI, Sample

pytestmark = pytest.mark.timeout(300)

DASHBOARDS = REPO_ROOT / "compose" / "grafana" / "dashboards"
SCRAPE_S = 1.0
# A 15-minute dashboard range at ~1000 points: $__interval rounds up to the scrape interval, 1 s.
INTERVALS = grafana.Intervals(interval_s=SCRAPE_S, scrape_s=SCRAPE_S, range_s=900)
LOAD_RPS = 40
TOTAL_RPS = (LOAD_RPS / 2, LOAD_RPS * 1.5)  # the load client's calls per second, as the sidecars count them
HALF = (0.2, 0.8)  # the share of calls a 50 % fault lets through
SHARE = (0.1, 0.9)  # a version's share of the calls that reach a version
PHASES = ("clean", "fault")
QUANTILE_REFS = ("p50", "p90", "p99")


# ------------------------------------------------------------------------------------------------ the mesh

def up_runs_prometheus() -> bool:
    """`mesh_ctl up` starts a Prometheus itself (item 1: it then has --scrape-interval)."""
    done = subprocess.run([sys.executable, "-m", "mesh_ctl", "up", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, check=False)
    return "--scrape-interval" in done.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    scrape = ["--scrape-interval", f"{SCRAPE_S:g}s"] if up_runs_prometheus() else []
    with running_mesh(tmp_path_factory, "dashboards", "--rps", str(LOAD_RPS), "--concurrency", "4", *scrape) as m:
        yield m


@pytest.fixture(scope="module")
def prometheus(live: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusAPI]:
    """The Prometheus the dashboards read, scraping every 1 s, every target up: the one `mesh_ctl up` started
    when it starts one; otherwise started here with the configuration mesh_ctl.runtime.prometheus generates
    (sidecars, the control plane's metrics endpoint with the owner's credential, apps)."""
    binary = prometheus_binary()
    ups = [p for p in live.state().processes if str(p.role) == "prometheus"]  # a role since item 1
    if ups:
        api = PrometheusAPI(ups[0].addresses["web"])

        def every_target_up() -> bool:
            try:
                targets = api.active_targets()
            except OSError:
                return False
            return len(targets) >= 3 and all(t["health"] == "up" for t in targets)

        wait_until("every target of up's Prometheus up", every_target_up, timeout=60, interval=0.2)
        yield api
        return
    specs = [ProcessSpec(name=p.name, workload=p.workload, role=p.role, argv=(), addresses=dict(p.addresses),
                         ready="tcp", ready_at=None) for p in live.state().processes]
    groups = prom.target_groups(specs)
    prom_dir = tmp_path_factory.mktemp("prometheus")
    prom.write_targets(prom_dir, groups)
    config = prom.config(prom_dir, scrape_interval=f"{SCRAPE_S:g}s")
    for job in config["scrape_configs"]:  # type: ignore[attr-defined]
        if job["job_name"] == prom.CONTROL_PLANE_JOB:  # the management API wants the owner's credential
            job["authorization"] = {"credentials_file": str(live.run_dir / "api-token")}
    (prom_dir / "prometheus.yml").write_text(json.dumps(config, indent=2))
    listen = f"127.0.0.1:{free_port()}"
    log = prom_dir / "prometheus.log"
    with log.open("w") as err:
        proc = subprocess.Popen(prom.argv(binary, prom_dir / "prometheus.yml", prom_dir / "data", listen),
                                stdout=subprocess.DEVNULL, stderr=err)
    api = PrometheusAPI(listen)
    expected = sum(len(g) for g in groups.values())
    try:
        def all_up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                targets = api.active_targets()
            except OSError:
                return False
            return len(targets) == expected and all(t["health"] == "up" for t in targets)

        wait_until(f"every one of the {expected} targets up in Prometheus", all_up, timeout=60, interval=0.2)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scraped_past(api: PrometheusAPI, t: float) -> Callable[[], bool]:
    """Every target has a sample after unix time ``t``."""
    return lambda: api.value("min(timestamp(up))") > t


@dataclass
class Moments:
    clean: float  # unix times at which the dashboards are evaluated
    fault: float
    push: float  # just after the fault's xDS push shows in Prometheus


@pytest.fixture(scope="module")
def moments(live: Mesh, prometheus: PrometheusAPI) -> Moments:
    api = prometheus
    window = INTERVALS.rate_interval_s

    def both_versions() -> bool:
        rates = api.query('sum by (destination_version) (rate(istio_requests_total{reporter="destination"}[5s]))')
        return {s.labels["destination_version"] for s in rates if s.value > 0} == {"v1", "v2"}

    wait_until("traffic to payment v1 and v2 in Prometheus", both_versions, timeout=60)
    clean = time.time() + window + 1  # a full window of traffic, every sample in it scraped
    wait_until("Prometheus scraped a full window of traffic", scraped_past(api, clean + SCRAPE_S), timeout=30)

    pushes_before = api.query("sum(pilot_xds_pushes)")
    applied = time.time()
    live.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "50")
    live.wait_converged()
    fault = time.time() + window + 1  # the whole window under the fault
    wait_until("Prometheus scraped a full window under the fault", scraped_past(api, fault + SCRAPE_S), timeout=30)

    if not pushes_before:
        other = api.query('count({__name__=~"pilot_xds_pushes.+"}) by (__name__)')
        if other:  # istiod's name is pilot_xds_pushes (an OpenTelemetry sum: no _total)
            raise AssertionError(f"the control plane exposes {[s.labels for s in other]}, not istiod's "
                                 "pilot_xds_pushes: the control-plane panels cannot find it")
        raise AssertionError("the control plane exposes no pilot_xds_pushes series in Prometheus (its "
                             "istiod-named /metrics, mesh_ctl.monitoring): the control-plane panels cannot work")
    # The moment the fault's push shows in Prometheus, stepping through the stored samples: evaluated 1 s
    # later, a rate window holds the samples before and after it.
    before = pushes_before[0].value
    t = applied
    while t < fault + 5:
        if api.value("sum(pilot_xds_pushes)", t) > before:
            return Moments(clean, fault, t + SCRAPE_S)
        t += 0.25
    raise AssertionError(f"no xDS push seen in Prometheus after the fault was applied (pilot_xds_pushes "
                         f"stayed {before})")


# ------------------------------------------------------------------------------------------------ running panels

@dataclass
class Run:
    """One panel's results: phase -> refId -> samples; ``selection``: the variables' values."""

    dashboard: str
    panel: str
    selection: dict[str, str]
    results: dict[str, dict[str, list[Sample]]]
    read: set[tuple[str, str]] = field(default_factory=set)  # the (phase, refId) results the check looked at

    def __call__(self, phase: str, ref: str = "A") -> list[Sample]:
        self.read.add((phase, ref))
        return self.results[phase][ref]

    def unread(self) -> list[tuple[str, str]]:
        return sorted({(ph, ref) for ph, refs in self.results.items() for ref in refs} - self.read)


Check = Callable[[Run], None]


@dataclass
class Tally:
    dashboards: set[str] = field(default_factory=set)
    panels: set[tuple[str, int]] = field(default_factory=set)
    queries: int = 0  # query executions (a query per phase and selection)
    exprs: set[tuple[str, int, str]] = field(default_factory=set)

    def line(self) -> str:
        return (f"{len(self.dashboards)} dashboard(s), {len(self.panels)} panels, {len(self.exprs)} queries "
                f"proven ({self.queries} executions)")


TALLY = Tally()


def load(uid: str) -> dict[str, object]:
    [doc] = [d for d in map(grafana.load, sorted(DASHBOARDS.glob("*.json"))) if d["uid"] == uid]
    return doc


def options(api: PrometheusAPI, dashboard: dict[str, object], at: float,
            picks: dict[str, str]) -> dict[str, list[str]]:
    """Each variable's options (in order, each evaluated with the earlier ones set to ``picks``)."""
    out: dict[str, list[str]] = {}
    for v in dashboard["templating"]["list"]:  # type: ignore[index]
        out[v["name"]] = grafana.variable_options(v, api, picks, INTERVALS, at - INTERVALS.range_s, at)
        assert picks[v["name"]] in out[v["name"]], (v["name"], out[v["name"]])
    return out


def prove(api: PrometheusAPI, uid: str, expect: dict[str, Check], at: dict[str, float],
          selection: dict[str, str], only: Callable[[dict[str, object]], bool] = lambda _: True) -> None:
    """Run every query of dashboard ``uid``'s panels that ``only`` keeps at each moment of ``at``, then every
    panel's check; all failures reported together."""
    dashboard = load(uid)
    chosen = [p for p in grafana.data_panels(dashboard) if only(p)]
    titles = [p["title"] for p in chosen]
    assert len(set(titles)) == len(titles), f"{uid}: panel titles repeat: {titles}"
    assert sorted(titles) == sorted(expect), (
        f"{uid}: every panel's query is proven: panels without an expectation "
        f"{sorted(set(titles) - set(expect))}, expectations without a panel {sorted(set(expect) - set(titles))}")
    failures = []
    for p in chosen:
        results: dict[str, dict[str, list[Sample]]] = {}
        for phase, t in at.items():
            results[phase] = {}
            for target in p["targets"]:
                expr = grafana.interpolate(target["expr"], selection, INTERVALS)
                results[phase][target["refId"]] = api.query(expr, t)
                TALLY.queries += 1
                TALLY.exprs.add((uid, p["id"], target["refId"]))
        TALLY.dashboards.add(uid)
        TALLY.panels.add((uid, p["id"]))
        run = Run(uid, p["title"], selection, results)
        try:
            expect[p["title"]](run)
            assert not run.unread(), f"results its check never looked at (phase, refId): {run.unread()}"
        except AssertionError as e:
            failures.append(f"{uid} / {p['title']} {selection}: {e}\n    results: {results}")
    assert not failures, "\n".join(failures)


def uses_control_plane(panel: dict[str, object]) -> bool:
    return any(m in t["expr"] for t in panel["targets"] for m in ("pilot_", "citadel_"))  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ checks

def live_series(samples: list[Sample]) -> list[Sample]:
    """What Grafana draws: series with data in the window (a counter that stopped moving has rate 0, a
    histogram with no observation in the window gives NaN)."""
    return [s for s in samples if not math.isnan(s.value) and s.value != 0]


def single(samples: list[Sample]) -> float:
    assert len(samples) == 1 and samples[0].labels == {}, f"one series without labels, got {samples}"
    return samples[0].value


def by(samples: list[Sample], label: str) -> dict[str, float]:
    """label value -> value, every series labelled by ``label`` alone, once each."""
    out: dict[str, float] = {}
    for s in samples:
        assert set(s.labels) == {label}, f"series labelled {s.labels}, wanted by {label} alone"
        assert s.labels[label] not in out, f"two series for {label}={s.labels[label]}"
        out[s.labels[label]] = s.value
    return out


def within(value: float, bounds: tuple[float, float], what: str) -> None:
    assert bounds[0] <= value <= bounds[1], f"{what} = {value}, wanted {bounds[0]}..{bounds[1]}"


def is_one(value: float, what: str) -> None:
    assert math.isclose(value, 1.0, abs_tol=1e-9), f"{what} = {value}, wanted 1"


def quantiles_by(run: Run, phase: str, label: str, keys: set[str]) -> None:
    """p50 <= p90 <= p99, each > 0, for exactly the series ``keys``."""
    found = {ref: by(live_series(run(phase, ref)), label) for ref in QUANTILE_REFS}
    for ref, values in found.items():
        assert set(values) == keys, f"{phase} {ref}: {sorted(values)}, wanted {sorted(keys)}"
    for k in keys:
        p50, p90, p99 = (found[ref][k] for ref in QUANTILE_REFS)
        assert 0 < p50 <= p90 <= p99 < math.inf, f"{phase} {label}={k}: p50 {p50}, p90 {p90}, p99 {p99}"


def total_rate(run: Run) -> None:
    for phase in PHASES:
        within(single(run(phase)), TOTAL_RPS, f"{phase} calls/s")


def success_ratio(run: Run) -> None:
    is_one(single(run("clean")), "success rate before the fault")
    within(single(run("fault")), HALF, "success rate under the 50 % fault")


def zero_both(run: Run) -> None:
    for phase in PHASES:
        assert single(run(phase)) == 0, f"{phase}: {run(phase)}"


def errors_only_under_fault(run: Run) -> None:
    assert single(run("clean")) == 0
    within(single(run("fault")), (TOTAL_RPS[0] * HALF[0], TOTAL_RPS[1] * HALF[1]), "UNAVAILABLE calls/s")


def by_status(run: Run) -> None:
    """Only OK before the fault; OK and UNAVAILABLE (14) under it."""
    assert set(by(live_series(run("clean")), "grpc_response_status")) == {"0"}
    fault = by(live_series(run("fault")), "grpc_response_status")
    assert set(fault) == {"0", "14"}, fault
    within(fault["14"] / (fault["0"] + fault["14"]), HALF, "UNAVAILABLE share")


def per_version_rate(run: Run) -> None:
    for phase in PHASES:
        rates = by(live_series(run(phase)), "destination_version")
        assert set(rates) == {"v1", "v2"}, (phase, rates)
        within(rates["v1"] / (rates["v1"] + rates["v2"]), SHARE, f"{phase} v1's share")


def per_version_all_ok(run: Run) -> None:  # aborted calls never reach a version
    for phase in PHASES:
        rates = by(live_series(run(phase)), "destination_version")
        assert set(rates) == {"v1", "v2"}, (phase, rates)
        for v, x in rates.items():
            is_one(x, f"{phase} success rate of {v}")


def quantiles_each_phase(label: str, keys: set[str]) -> Check:
    def check(run: Run) -> None:
        for phase in PHASES:
            quantiles_by(run, phase, label, keys)
    return check


def one_key_rate(label: str, key: str) -> Check:
    def check(run: Run) -> None:
        for phase in PHASES:
            rates = by(live_series(run(phase)), label)
            assert set(rates) == {key}, (phase, rates)
            within(rates[key], TOTAL_RPS, f"{phase} calls/s of {key}")
    return check


def one_key_success(label: str, key: str, faulted: bool) -> Check:
    def check(run: Run) -> None:
        for phase in PHASES:
            ratios = by(live_series(run(phase)), label)
            assert set(ratios) == {key}, (phase, ratios)
            if faulted and phase == "fault":
                within(ratios[key], HALF, f"{phase} success rate of {key}")
            else:
                is_one(ratios[key], f"{phase} success rate of {key}")
    return check


def sizes_by(label: str, key: str) -> Check:
    def check(run: Run) -> None:
        for phase in PHASES:
            for ref in ("request", "response"):
                sizes = by(live_series(run(phase, ref)), label)
                assert set(sizes) == {key} and sizes[key] > 0, (phase, ref, sizes)
    return check


def services_table(run: Run) -> None:
    for phase in PHASES:
        requests = by(live_series(run(phase, "requests")), "destination_service_name")
        assert set(requests) == {"payment"}, (phase, requests)
        within(requests["payment"], TOTAL_RPS, f"{phase} payment calls/s")
        quantiles_by(run, phase, "destination_service_name", {"payment"})
    is_one(by(run("clean", "success"), "destination_service_name")["payment"], "payment's success rate")
    within(by(run("fault", "success"), "destination_service_name")["payment"], HALF, "payment's success rate")


def nothing(run: Run) -> None:
    """The selected workload has no traffic in this direction: the panel draws nothing."""
    for phase in PHASES:
        for ref in run.results[phase]:
            assert live_series(run(phase, ref)) == [], (phase, ref, run(phase, ref))


def outgoing_duration_by_workload(run: Run) -> None:
    quantiles_by(run, "clean", "destination_workload", {"payment-v1", "payment-v2"})
    # Aborted calls reached no workload: Istio labels them destination_workload="unknown".
    quantiles_by(run, "fault", "destination_workload", {"payment-v1", "payment-v2", "unknown"})


MESH: dict[str, Check] = {
    "Global request volume": total_rate,
    "Global success rate": success_ratio,
    "4xx": zero_both,  # gRPC answers HTTP 200; an injected gRPC abort too
    "5xx": zero_both,
    "gRPC errors": errors_only_under_fault,
    "Services": services_table,
}

SERVICE: dict[str, Check] = {
    "Request rate": total_rate,
    "Success rate": success_ratio,
    "Requests by gRPC status": by_status,
    "Request rate by version": per_version_rate,
    "Success rate by version": per_version_all_ok,
    "Request duration by version": quantiles_each_phase("destination_version", {"v1", "v2"}),
    "Request rate by source": one_key_rate("source_workload", "client"),
    "Success rate by source": one_key_success("source_workload", "client", faulted=True),
    "Request duration by source": quantiles_each_phase("source_workload", {"client"}),
    "Request size by version": quantiles_each_phase("destination_version", {"v1", "v2"}),
    "Response size by version": quantiles_each_phase("destination_version", {"v1", "v2"}),
}


def workload_checks(workload: str) -> dict[str, Check]:
    """payment-v1 only serves (the client calls it); the client only calls."""
    serves = workload == "payment-v1"

    def incoming_rate(run: Run) -> None:
        for phase in PHASES:
            rates = by(live_series(run(phase)), "source_workload")
            assert set(rates) == {"client"} and 0 < rates["client"] <= TOTAL_RPS[1], (phase, rates)

    def outgoing_status(run: Run) -> None:
        by_status(run)

    inbound: dict[str, Check] = {
        "Incoming request rate by source": incoming_rate,
        "Incoming success rate by source": one_key_success("source_workload", "client", faulted=False),
        "Incoming request duration by source": quantiles_each_phase("source_workload", {"client"}),
        "Incoming sizes by source": sizes_by("source_workload", "client"),
    }
    outbound: dict[str, Check] = {
        "Outgoing request rate by service": one_key_rate("destination_service_name", "payment"),
        "Outgoing success rate by service": one_key_success("destination_service_name", "payment", faulted=True),
        "Outgoing requests by gRPC status": outgoing_status,
        "Outgoing request duration by destination workload": outgoing_duration_by_workload,
        "Outgoing sizes by service": sizes_by("destination_service_name", "payment"),
    }
    if serves:
        return inbound | dict.fromkeys(outbound, nothing)
    return dict.fromkeys(inbound, nothing) | outbound


# The control plane's panels, at the moment just after the fault's push (``push``).

def connected_proxies(run: Run) -> None:
    assert single(run("push")) == 3, "the three sidecars"


def pushes_total(run: Run) -> None:
    assert single(run("push")) >= 3 * 2, "at least CDS and LDS to each of the three sidecars"


def no_rejects(run: Run) -> None:
    samples = run("push")
    assert samples and all(s.value == 0 for s in samples), samples


def certificates_issued(run: Run) -> None:
    assert single(run("push")) >= 3, "a certificate for each sidecar"


def push_rate_by_type(run: Run) -> None:
    rates = by(run("push"), "type")
    assert rates and all(x >= 0 for x in rates.values()) and sum(rates.values()) > 0, rates


def pushes_by_type(run: Run) -> None:
    totals = by(run("push"), "type")
    assert {"cds", "lds"} <= set(totals), totals
    assert totals["cds"] >= 3 and totals["lds"] >= 3 and all(x > 0 for x in totals.values()), totals


def seconds_quantiles(run: Run) -> None:
    p50, p90, p99 = (single(run("push", ref)) for ref in QUANTILE_REFS)
    assert 0 < p50 <= p90 <= p99 < 60, (p50, p90, p99)


def csrs(run: Run) -> None:
    received, issued = single(run("push", "csr")), single(run("push", "issued"))
    assert 3 <= issued <= received, (received, issued)
    assert single(run("push", "refused")) == 0


def expiry(run: Run) -> None:
    for ref in ("root", "chain"):
        within(single(run("push", ref)), (1, 100 * 365), f"days until the {ref} certificate expires")


def one_version(run: Run) -> None:
    versions = by(run("push"), "tag")
    assert len(versions) == 1 and all(versions) and list(versions.values()) == [1], versions


MESH_CONTROL_PLANE: dict[str, Check] = {
    "Connected proxies": connected_proxies,
    "xDS pushes": pushes_total,
    "Rejected xDS (NACKs)": no_rejects,
    "Certificates issued": certificates_issued,
}

CONTROL_PLANE: dict[str, Check] = {
    "xDS pushes by type": push_rate_by_type,
    "xDS pushes since start": pushes_by_type,
    "Connected proxies": connected_proxies,
    "Push time": seconds_quantiles,
    "Proxy convergence": seconds_quantiles,
    "xDS rejects (NACKs) by type": no_rejects,
    "Validation failures": no_rejects,  # nothing invalid was applied
    "CSRs": csrs,
    "Certificate expiry": expiry,
    "Control plane version": one_version,
}


# ------------------------------------------------------------------------------------------------ tests

def phases(m: Moments) -> dict[str, float]:
    return {"clean": m.clean, "fault": m.fault}


def report(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[dashboards so far] {TALLY.line()}")


def test_mesh_dashboard(prometheus: PrometheusAPI, moments: Moments, capsys: pytest.CaptureFixture[str]) -> None:
    prove(prometheus, "minimesh-mesh", MESH, phases(moments), {}, only=lambda p: not uses_control_plane(p))
    report(capsys)


def test_service_dashboard(prometheus: PrometheusAPI, moments: Moments, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard = load("minimesh-service")
    for phase, t in phases(moments).items():
        assert options(prometheus, dashboard, t, {"service": "payment"}) == {"service": ["payment"]}, phase
    prove(prometheus, "minimesh-service", SERVICE, phases(moments), {"service": "payment"})
    report(capsys)


@pytest.mark.parametrize("workload", ["payment-v1", "client"])
def test_workload_dashboard(prometheus: PrometheusAPI, moments: Moments, workload: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    dashboard = load("minimesh-workload")
    picks = {"namespace": "default", "workload": workload}
    for phase, t in phases(moments).items():
        assert options(prometheus, dashboard, t, picks) == {
            "namespace": ["default"], "workload": ["client", "payment-v1", "payment-v2"]}, phase
    prove(prometheus, "minimesh-workload", workload_checks(workload), phases(moments), picks)
    report(capsys)


def test_mesh_dashboard_control_plane_summary(prometheus: PrometheusAPI, moments: Moments,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    prove(prometheus, "minimesh-mesh", MESH_CONTROL_PLANE, {"push": moments.push}, {}, only=uses_control_plane)
    report(capsys)


def test_control_plane_dashboard(prometheus: PrometheusAPI, moments: Moments,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    prove(prometheus, "minimesh-control-plane", CONTROL_PLANE, {"push": moments.push}, {})
    report(capsys)


def test_every_dashboard_file_is_proven_by_a_test_here() -> None:
    uids = {grafana.load(p)["uid"] for p in DASHBOARDS.glob("*.json")}
    assert uids == {"minimesh-mesh", "minimesh-service", "minimesh-workload", "minimesh-control-plane"}
