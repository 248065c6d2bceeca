"""Run dir, state file and the supervisor lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh_ctl.runtime.state import (
    ProcessRecord,
    RunDir,
    State,
    StateError,
    SupervisorLock,
    WorkloadRecord,
    lock_is_held,
    new_run_id,
    read_state,
    resolve_run_dir,
    write_state,
)


def test_run_dir_default_is_minimesh_home_then_dot_minimesh(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MINIMESH_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_run_dir(None) == tmp_path / ".minimesh"
    monkeypatch.setenv("MINIMESH_HOME", str(tmp_path / "home"))
    assert resolve_run_dir(None) == tmp_path / "home"
    assert resolve_run_dir("rel") == tmp_path / "rel"  # the flag wins, made absolute


def test_state_round_trip(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert read_state(rd) is None
    state = State(
        run_id=new_run_id(),
        run_dir=str(tmp_path),
        supervisor_pid=1234,
        supervisor_argv=["py", "-m", "x"],
        supervisor_start_time=99,
        started_at="2026-01-01T00:00:00+00:00",
        address_mode="per-workload",
        workloads=[
            WorkloadRecord(
                "client",
                "default",
                "payment-client",
                None,
                "client",
                "spiffe://cluster.local/ns/default/sa/client",
                "127.0.0.12",
                {"app": None, "outbound": 15001},
            )
        ],
        processes=[ProcessRecord("client", "client", "app", 1240, ["py"], 5, {"target": "x:1"}, "l")],
    )
    write_state(rd, state)
    assert read_state(rd) == state
    assert json.loads(rd.state.read_text())["processes"][0]["pid"] == 1240
    assert not list(tmp_path.glob(".*.tmp"))


def test_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.state.write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        read_state(rd)
    rd.state.write_text('{"version": 99}')
    with pytest.raises(StateError, match="unknown state format"):
        read_state(rd)


def test_the_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.lock"
    assert not lock_is_held(path)
    first, second = SupervisorLock(path), SupervisorLock(path)
    assert first.acquire()
    try:
        assert lock_is_held(path)
        assert not second.acquire()
    finally:
        first.release()
    assert not lock_is_held(path)
    assert second.acquire()
    second.release()
