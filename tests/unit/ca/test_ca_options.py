"""The CA's settings: durations, defaults from Istio's environment variables, directories, `serve` flags."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest

from mesh_ctl.ca import options
from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.material import CaConfigError
from mesh_ctl.ca.options import CaOptions, format_duration, parse_duration
from mesh_ctl.commands.ca import status_lines
from tests.unit.ca.conftest import TD


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400), ("90d", 90 * 86400), ("1h30m", 5400), ("30s", 30), ("500ms", 0.5), ("45", 45), ("1.5h", 5400),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "24x", "1h 30m", "-5s", "5s3", "s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (86400, 7776000, 5400, 90, 0.5)] == [
        "1d", "90d", "90m", "90s", "0.5s"]


def test_istio_environment_variables_set_the_ttls() -> None:
    o = CaOptions.from_env({"DEFAULT_WORKLOAD_CERT_TTL": "1h", "MAX_WORKLOAD_CERT_TTL": "48h"})
    assert (o.default_ttl, o.max_ttl) == (timedelta(hours=1), timedelta(hours=48))
    assert CaOptions.from_env({}) == CaOptions()
    assert (CaOptions().default_ttl, CaOptions().max_ttl) == (timedelta(hours=24), timedelta(days=90))


def test_directories_resolve_from_the_run_dir(tmp_path: Path) -> None:
    o = CaOptions().resolve(tmp_path / "run", tmp_path / "state")
    assert o.directory == tmp_path / "run" / "certs" / "ca" and o.cacerts is None
    assert CaOptions().resolve(None, tmp_path / "state").directory == tmp_path / "state" / "ca"
    explicit = CaOptions(directory=tmp_path / "x", cacerts=tmp_path / "y").resolve(tmp_path / "run", tmp_path)
    assert (explicit.directory, explicit.cacerts) == (tmp_path / "x", tmp_path / "y")


def test_serve_flags() -> None:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    args = parser.parse_args(["--cacerts", "/etc/cacerts", "--workload-cert-ttl", "1h",
                              "--max-workload-cert-ttl", "2d", "--root-publish-delay", "3s"])
    o = options.from_args(args)
    assert o == CaOptions(directory=None, cacerts=Path("/etc/cacerts"), default_ttl=timedelta(hours=1),
                          max_ttl=timedelta(days=2), publish_delay=timedelta(seconds=3))
    with pytest.raises(SystemExit):
        parser.parse_args(["--workload-cert-ttl", "soon"])


def test_inconsistent_ttls_stop_the_ca_before_any_file_is_written(tmp_path: Path) -> None:
    bad = CaOptions(default_ttl=timedelta(days=2), max_ttl=timedelta(days=1)).resolve(tmp_path, tmp_path)
    with pytest.raises(CaConfigError, match="default certificate TTL"):
        ControlPlaneCA.open(bad, TD)
    assert not (tmp_path / "certs").exists()
    with pytest.raises(CaConfigError, match="not a directory"):
        ControlPlaneCA.open(CaOptions(cacerts=tmp_path / "none").resolve(tmp_path, tmp_path), TD)


def test_status_lines_read_like_a_report(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    ca = ControlPlaneCA.open(CaOptions().resolve(tmp_path, tmp_path), TD, clock=lambda: clock[0])
    ca.roots.rotate(clock[0], 10)
    lines = status_lines(ca.status())
    assert lines[0].startswith("CA:      self-signed") and "trust domain cluster.local" in lines[0]
    assert lines[1].startswith("Phase:   publishing: new root trusted, old root signs until")
    assert lines[1].endswith("(in 10 s)")
    assert [line.split()[0] for line in lines[4:7]] == ["ROLE", "signing", "pending"]
    assert lines[-1] == "Issued:  0 certificate(s); refused: none"
