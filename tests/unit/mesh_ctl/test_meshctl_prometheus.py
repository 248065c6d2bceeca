"""The run's Prometheus configuration and file-SD targets (mesh_ctl.runtime.prometheus)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mesh_ctl.cli import build_parser, main
from mesh_ctl.commands.up import _forwarded
from mesh_ctl.runtime import prometheus as prom
from mesh_ctl.runtime.control import prometheus_status_line
from mesh_ctl.runtime.render import prometheus_lines
from mesh_ctl.runtime.specs import ProcessSpec
from mesh_ctl.runtime.state import ProcessRecord, RunDir, State
from tests.support.prometheus import promtool_binary


def _spec(name: str, workload: str, role: str, **addresses: str) -> ProcessSpec:
    return ProcessSpec(name=name, workload=workload, role=role, argv=("x",),  # type: ignore[arg-type]
                       addresses=dict(addresses), ready="tcp", ready_at=None)


SPECS = [
    _spec("control-plane", "control-plane", "control-plane", xds="127.0.0.1:15010", api="127.0.0.1:15014"),
    _spec("payment-v1", "payment-v1", "app", app="127.0.0.2:50051"),
    _spec("payment-v1-sidecar", "payment-v1", "sidecar", admin="127.0.0.2:15000", prometheus="127.0.0.2:15090"),
    _spec("client-sidecar", "client", "sidecar", admin="127.0.0.3:15000", prometheus="127.0.0.3:15090"),
]


def test_every_sidecar_is_a_target_with_istio_labels() -> None:
    v1_labels = {"app": "payment", "version": "v1", "app.kubernetes.io/part-of": "shop"}
    groups = prom.target_groups(SPECS, pod_labels={"payment-v1": v1_labels}, namespaces={"client": "shop"})
    assert groups[prom.SIDECAR_JOB] == [
        {"targets": ["127.0.0.2:15090"],
         "labels": {"namespace": "default", "pod": "payment-v1", "app": "payment", "version": "v1",
                    "app_kubernetes_io_part_of": "shop"}},
        {"targets": ["127.0.0.3:15090"],
         "labels": {"namespace": "shop", "pod": "client"}},
    ]


def test_merged_endpoint_is_scraped_instead_of_15090_and_instead_of_the_app() -> None:
    specs = [
        _spec("payment-v1", "payment-v1", "app", app="127.0.0.2:8080", metrics="127.0.0.2:9464"),
        _spec("payment-v1-sidecar", "payment-v1", "sidecar", prometheus="127.0.0.2:15090", merged="127.0.0.2:15020"),
        _spec("payment-v2", "payment-v2", "app", app="127.0.0.3:8080", metrics="127.0.0.3:9464"),
        _spec("payment-v2-sidecar", "payment-v2", "sidecar", prometheus="127.0.0.3:15090"),
    ]
    groups = prom.target_groups(specs, pod_labels={"payment-v1": {"app": "payment", "version": "v1"},
                                                   "payment-v2": {"app": "payment", "version": "v2"}})
    assert [g["targets"] for g in groups[prom.SIDECAR_JOB]] == [["127.0.0.2:15020"], ["127.0.0.3:15090"]]
    # payment-v1's app metrics come through its sidecar's merged endpoint: not scraped twice
    assert groups[prom.APP_JOB] == [
        {"targets": ["127.0.0.3:9464"],
         "labels": {"namespace": "default", "pod": "payment-v2", "app": "payment", "version": "v2"}}]


def test_control_plane_target_only_when_it_lists_a_metrics_address() -> None:
    assert prom.target_groups(SPECS)[prom.CONTROL_PLANE_JOB] == []
    cp = _spec("control-plane", "control-plane", "control-plane",
               **{prom.CONTROL_PLANE_METRICS_ROLE: "127.0.0.1:15014"})
    assert prom.target_groups([cp])[prom.CONTROL_PLANE_JOB] == [
        {"targets": ["127.0.0.1:15014"], "labels": {"namespace": "istio-system", "pod": "control-plane",
                                                    "app": "istiod"}}]


def test_config_sends_the_owners_credential_to_the_control_plane_only(tmp_path: Path) -> None:
    token = tmp_path / "api-token"
    jobs = {j["job_name"]: j for j in prom.config(tmp_path, "15s", token)["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs[prom.CONTROL_PLANE_JOB]["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert jobs[prom.CONTROL_PLANE_JOB]["metrics_path"] == "/metrics"
    assert "authorization" not in jobs[prom.SIDECAR_JOB] and "authorization" not in jobs[prom.APP_JOB]
    assert jobs[prom.SIDECAR_JOB]["metrics_path"] == "/stats/prometheus"
    assert {j["scrape_interval"] for j in jobs.values()} == {"15s"}
    assert all(j["file_sd_configs"][0]["files"] == [str(tmp_path / "targets" / f"{n}.json")] for n, j in jobs.items())


@pytest.mark.parametrize("text", ["15s", "1m", "1m30s", "5m", "1s", "1500ms", "300s"])
def test_scrape_interval_accepts_prometheus_durations(text: str) -> None:
    assert prom.parse_scrape_interval(text) == text


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not a duration"), ("15", "not a duration"), ("fast", "not a duration"), ("1.5s", "not a duration"),
    ("-5s", "not a duration"), ("0s", "from 1s to 5m"), ("500ms", "from 1s to 5m"), ("6m", "from 1s to 5m"),
])
def test_scrape_interval_refuses_bad_durations_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        prom.parse_scrape_interval(text)


def test_up_refuses_a_bad_scrape_interval_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["up", "--run-dir", str(tmp_path / "run"), "--scrape-interval", "0s"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "mesh_ctl up: error: argument --scrape-interval: must be from 1s to 5m, got '0s'"
    assert not (tmp_path / "run").exists()


def test_prometheus_listens_on_loopback_at_9090_plus_the_offset() -> None:
    o = prom.PrometheusOptions.for_offset("/usr/bin/prometheus", "127.0.0.9", 100, "5s")
    assert (o.address, o.url, o.scrape_interval) == ("127.0.0.9:9190", "http://127.0.0.9:9190", "5s")
    assert prom.PrometheusOptions.for_offset("p", "::1", 0).address == "[::1]:9090"
    with pytest.raises(ValueError, match="not a loopback address"):
        prom.PrometheusOptions.for_offset("p", "10.0.0.1", 0)
    with pytest.raises(ValueError, match="out of range"):
        prom.PrometheusOptions.for_offset("p", "127.0.0.1", 60000)


def test_process_spec_is_a_restarted_process_ready_on_its_ready_endpoint(tmp_path: Path) -> None:
    o = prom.PrometheusOptions.for_offset("/usr/bin/prometheus", "127.0.0.9", 0)
    spec = prom.process_spec(o, RunDir(tmp_path))
    assert (spec.name, spec.role, spec.restart, spec.ready, spec.ready_at, spec.ready_path) == (
        "prometheus", "prometheus", True, "http-ready", "127.0.0.9:9090", "/-/ready")
    assert spec.addresses == {"web": "127.0.0.9:9090"}
    assert spec.argv == ("/usr/bin/prometheus", f"--config.file={tmp_path}/prometheus/prometheus.yml",
                         f"--storage.tsdb.path={tmp_path}/prometheus/data", "--storage.tsdb.retention.time=2h",
                         "--web.listen-address=127.0.0.9:9090")


def test_detached_supervisor_gets_the_prometheus_options() -> None:
    args = build_parser().parse_args(["up", "--detach", "--scrape-interval", "5s"])
    assert _forwarded(args, Path("/r"))[-2:] == ["--scrape-interval", "5s"]
    args = build_parser().parse_args(["up", "--detach", "--no-prometheus"])
    assert "--no-prometheus" in _forwarded(args, Path("/r"))
    assert "--no-prometheus" not in _forwarded(build_parser().parse_args(["up"]), Path("/r"))


def test_banner_and_status_lines() -> None:
    state = State(run_id="r", run_dir="/d", supervisor_pid=1, supervisor_argv=[], supervisor_start_time=None,
                  started_at="", address_mode="per-workload", prometheus="http://127.0.0.9:9090",
                  processes=[ProcessRecord("prometheus", "prometheus", "prometheus", 42, [], None,
                                           {"web": "127.0.0.9:9090"}, "/d/logs/prometheus.log")])
    assert prometheus_lines(state) == ["prometheus: http://127.0.0.9:9090, pid 42", ""]
    assert prometheus_lines(State.from_json({**state.to_json(), "prometheus": None, "processes": []})) == []
    status = {"url": "http://127.0.0.9:9090", "pid": 42, "alive": True, "ready": True, "restarts": 0, "log": ""}
    assert prometheus_status_line(status) == "prometheus: http://127.0.0.9:9090, pid 42 (ready)"
    assert prometheus_status_line({**status, "ready": False}).endswith("pid 42 (starting)")
    assert prometheus_status_line({**status, "ready": False, "alive": False, "restarts": 2}).endswith(
        "(not running: the supervisor restarts it) (restarted 2x)")


def test_targets_are_rewritten_atomically(tmp_path: Path) -> None:
    prom.write_targets(tmp_path, prom.target_groups(SPECS))
    prom.write_targets(tmp_path, prom.target_groups(SPECS[:3]))
    files = sorted(p.name for p in prom.targets_dir(tmp_path).iterdir())
    assert files == ["apps.json", "envoy-stats.json", "istiod.json"]  # no temporary file left behind
    assert len(json.loads((prom.targets_dir(tmp_path) / "envoy-stats.json").read_text())) == 1


def test_target_files_are_rewritten_only_when_the_processes_change(tmp_path: Path) -> None:
    files = prom.TargetFiles(tmp_path, namespaces={"client": "shop"},
                             pod_labels={"payment-v1": {"app": "payment", "version": "v1"}})
    sidecars = prom.targets_dir(tmp_path) / f"{prom.SIDECAR_JOB}.json"
    assert files.update(SPECS) is True
    assert [g["labels"]["namespace"] for g in json.loads(sidecars.read_text())] == ["default", "shop"]
    before = sidecars.stat().st_ino
    assert files.update(list(SPECS)) is False  # the same processes: the files are left alone
    assert sidecars.stat().st_ino == before
    assert files.update(SPECS[:3]) is True  # client's sidecar gone: its target leaves the file
    assert [g["targets"] for g in json.loads(sidecars.read_text())] == [["127.0.0.2:15090"]]
    moved = [*SPECS[:3], _spec("client-sidecar", "client", "sidecar", prometheus="127.0.0.4:15090")]
    assert files.update(moved) is True
    assert json.loads(sidecars.read_text())[1]["targets"] == ["127.0.0.4:15090"]


def test_missing_binary_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    assert prom.find_binary(path=str(tmp_path)) is None
    msg = prom.missing_message()
    assert "\n" not in msg and "apt-get install prometheus" in msg


def test_promtool_accepts_the_generated_config(tmp_path: Path) -> None:
    promtool = promtool_binary()
    token = tmp_path / "api-token"
    token.write_text("secret\n")
    prom.write_targets(tmp_path, prom.target_groups(SPECS))
    config = prom.write_config(tmp_path, scrape_interval="1s", token_file=token)
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
