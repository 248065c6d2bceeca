"""`mesh_ctl top` on a live `mesh_ctl up`: the client -> payment edges, and the numbers move with the mesh."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.live_mesh import Mesh, running_mesh, wait_until


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, "top", "--rps", "20", "--concurrency", "2") as m:
        yield m


def top(mesh: Mesh) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(mesh.cli("top", "--once", "-o", "json", "--interval", "1").stdout)
    return doc


def payment(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["destination_version"]: e for e in doc["edges"]
            if e["source_workload"] == "client" and e["destination_service"] == "payment"}


def test_top_shows_client_to_payment_edges_and_follows_weights_and_faults(mesh: Mesh) -> None:
    wait_until("traffic to v1 and v2", lambda: all(
        (e := payment(top(mesh)).get(v)) is not None and e["rps"] > 0 for v in ("v1", "v2")), timeout=20)
    doc = top(mesh)
    assert doc["unreachable"] == []
    edges = payment(doc)
    for v in ("v1", "v2"):
        assert edges[v]["rps"] > 0 and edges[v]["success_pct"] == 100.0
        assert edges[v]["p50_ms"] is not None and edges[v]["p99_ms"] >= edges[v]["p50_ms"]
    total = sum(e["rps"] for e in edges.values())
    assert 10 <= total <= 30, total  # the load client's 20 calls/s

    mesh.cli("set-weight", "payment", "v1=100", "v2=0")
    wait_until("v2 idle", lambda: payment(top(mesh)).get("v2", {}).get("rps", 0) == 0, timeout=20)
    edges = payment(top(mesh))
    assert edges["v1"]["rps"] >= 10 and edges["v1"]["success_pct"] == 100.0

    mesh.cli("fault", "payment", "--abort", "UNAVAILABLE", "--percent", "50")

    def half_failing() -> bool:  # aborted calls never reach a version: look at the service's row
        [svc] = [s for s in top(mesh)["services"] if s["destination_service"] == "payment"]
        return svc["success_pct"] is not None and 30 <= svc["success_pct"] <= 70
    wait_until("about half of payment's calls failing", half_failing, timeout=20)


def test_live_view_refreshes_until_ctrl_c_and_exits_0(mesh: Mesh) -> None:
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    from tests.support.procs import REPO_ROOT

    # On a terminal (a pty) the view is redrawn every interval: read it until the edge shows (no fixed sleep,
    # which a loaded machine can outrun before the first window), then Ctrl-C.
    main, tty = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "mesh_ctl", "top", "--interval", "0.5", "--run-dir", str(mesh.run_dir)],
                         stdout=tty, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "COLUMNS": "200", "LINES": "60"})
    os.close(tty)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"payment-v1/v1" not in out and p.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                out += os.read(main, 65536)
        assert b"payment-v1/v1" in out and p.poll() is None, (out.decode(errors="replace"), p.poll())
        p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # keep reading, so that its last redraw never blocks on a full pty
            try:
                if select.select([main], [], [], 0.5)[0] and not os.read(main, 65536):
                    break
            except OSError:  # EIO: it exited and closed the terminal
                break
        _, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(main)
    assert p.returncode == 0, err
    assert "Traceback" not in err
