"""The command tree and the commands that need no running mesh."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.cli import build_parser, main
from mesh_ctl.commands import COMMANDS
from mesh_ctl.runtime.render import traffic_lines, where_table
from mesh_ctl.runtime.state import ProcessRecord, State, WorkloadRecord
from mesh_ctl.topology import default_topology


def test_every_command_module_follows_the_protocol() -> None:
    assert list(COMMANDS)[:3] == ["up", "down", "status"]
    for name in COMMANDS:
        module = importlib.import_module(f"mesh_ctl.commands.{name.replace('-', '_')}")
        assert callable(module.add_arguments) and callable(module.run)
        assert module.__doc__


def test_only_the_invoked_command_is_loaded() -> None:
    code = (
        "import sys; from mesh_ctl.cli import main; main(['status', '--run-dir', sys.argv[1]]); "
        "heavy = ('cryptography', 'envoy', 'mesh_ctl.runtime.local'); "
        "heavy = [m for m in sys.modules if m.startswith(heavy)]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "/nonexistent-run-dir"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_up_options() -> None:
    args = build_parser().parse_args(
        [
            "up",
            "--rps",
            "120",
            "--concurrency",
            "8",
            "--detach",
            "--run-dir",
            "d",
            "--topology",
            "t.yaml",
            "--no-summary",
        ]
    )
    assert (args.rps, args.concurrency, args.detach, args.run_dir, args.topology, args.no_summary) == (
        120.0,
        8,
        True,
        "d",
        "t.yaml",
        True,
    )
    defaults = build_parser().parse_args(["up"])
    assert (defaults.rps, defaults.concurrency, defaults.detach, defaults.address_mode) == (
        None,
        None,
        False,
        "auto",
    )
    assert (defaults.static, defaults.control_plane_address) == (False, "127.0.0.1")
    xds = build_parser().parse_args(["up", "--static", "--control-plane-address", "127.0.0.9"])
    assert (xds.static, xds.control_plane_address) == (True, "127.0.0.9")
    for bad in (["up", "--rps", "0"], ["up", "--concurrency", "0"], ["status", "-o", "yaml"], []):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_status_and_down_without_a_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--run-dir", str(tmp_path)]) == 0
    assert "no mesh is running" in capsys.readouterr().out
    assert main(["status", "-o", "json", "--run-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "run_dir": str(tmp_path),
        "running": False,
        "last_summary": [],
    }
    assert main(["down", "--run-dir", str(tmp_path)]) == 0
    assert "no mesh is running" in capsys.readouterr().out


def test_up_refuses_a_bad_topology_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text("workloads: [{name: x, app: nginx}]\n")
    assert main(["up", "--run-dir", str(tmp_path / "run"), "--topology", str(topology)]) == 2
    assert "workloads[0].app" in capsys.readouterr().err
    assert main(["up", "--run-dir", str(tmp_path / "run"), "--base-address", "192.168.1.1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert main(["up", "--run-dir", str(tmp_path / "run"), "--control-plane-address", "10.0.0.1"]) == 2
    assert "control plane address 10.0.0.1 is not a loopback address" in capsys.readouterr().err
    assert main(["up", "--run-dir", str(tmp_path / "run"), "--port-offset", "60000"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_where_table_and_traffic_lines() -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    lines = traffic_lines(t, p)
    assert lines == [
        "client --h2c--> 127.0.0.12:15001 ==mTLS==> 127.0.0.10:15006 --h2c--> payment-v1 127.0.0.10:8080   "
        "[payment v1: 50%]",
        "client --h2c--> 127.0.0.12:15001 ==mTLS==> 127.0.0.11:15006 --h2c--> payment-v2 127.0.0.11:8080   "
        "[payment v2: 50%]",
    ]
    state = State(
        run_id="r",
        run_dir="/d",
        supervisor_pid=1,
        supervisor_argv=[],
        supervisor_start_time=None,
        started_at="",
        address_mode="per-workload",
        workloads=[
            WorkloadRecord(
                "payment-v1",
                "default",
                "payment-server",
                "v1",
                "payment",
                "s",
                "127.0.0.10",
                {"app": 8080, "outbound": None, "inbound": 15006, "admin": 15000, "prometheus": 15090},
            )
        ],
        processes=[
            ProcessRecord("payment-v1", "payment-v1", "app", 11, [], None, {}, ""),
            ProcessRecord("payment-v1-sidecar", "payment-v1", "sidecar", 12, [], None, {}, ""),
        ],
    )
    table = where_table(state, alive=lambda pid: pid == 11)
    assert table[0].split() == [
        "WORKLOAD",
        "VERSION",
        "ADDRESS",
        "APP",
        "OUTBOUND",
        "INBOUND",
        "ADMIN",
        "PROM",
        "APP",
        "PID",
        "SIDECAR",
        "PID",
    ]
    assert table[1].split() == [
        "payment-v1",
        "v1",
        "127.0.0.10",
        ":8080",
        "-",
        ":15006",
        ":15000",
        ":15090",
        "11",
        "12",
        "(dead)",
    ]
