"""Issue 9.2 on a live mesh: any local user could stop a sidecar with `POST /quitquitquit`, and a sidecar or app
that died stayed dead (about half the calls failed until `down`/`up`). Now the sidecars' changing admin
endpoints need the owner's credential, and the supervisor restarts a dead sidecar or app, like a kubelet."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.live_mesh import Load, Mesh, failures, wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("supervision")
    m = Mesh(work / "run", work)
    try:
        m.up("--rps", "2", "--concurrency", "1")
        yield m
    finally:
        m.stop()


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_quitquitquit_needs_the_owners_credential(mesh: Mesh) -> None:
    sidecar = mesh.workload("payment-v2")["sidecar"]
    url = f"http://{sidecar['addresses']['admin']}/quitquitquit"
    assert post(url, {}) == 401
    assert post(url, {"Authorization": "Bearer " + "0" * 64}) == 401
    token = (mesh.run_dir / "api-token").read_text().strip()
    assert post(url, {"Authorization": f"Bearer {token}", "Origin": "https://evil.example"}) == 403
    assert mesh.workload("payment-v2")["sidecar"]["alive"]
    assert mesh.workload("payment-v2")["sidecar"]["pid"] == sidecar["pid"]  # never stopped


@pytest.mark.parametrize("role", ["sidecar", "app"])
def test_a_killed_sidecar_or_app_is_restarted_and_traffic_comes_back(mesh: Mesh, role: str) -> None:
    before = mesh.workload("payment-v2")[role]
    with Load(mesh.client_target(), rps=50, concurrency=4) as load:
        wait_until("100 calls before the kill", lambda: len(load.calls) >= 100, timeout=30)
        killed = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)

        def restarted() -> bool:
            now = mesh.workload("payment-v2")[role]
            return bool(now["alive"]) and now["pid"] != before["pid"]

        back_s = wait_until(f"payment-v2's {role} restarted", restarted, timeout=30)

        def v2_answers_again() -> bool:
            recent = [c for c in load.calls if c.start > killed + back_s]
            return sum(1 for c in recent if c.version == "v2" and c.status == "OK") >= 20

        served_s = wait_until("payment-v2 answers again", v2_answers_again, timeout=60) + back_s
        resumed = time.monotonic()
        wait_until("100 calls after it is back", lambda: len([c for c in load.calls if c.start > resumed]) >= 100,
                   timeout=30)
    calls = load.calls
    failed = failures(calls)
    after = [c for c in calls if c.start > resumed]
    print(f"\n{role}: restarted {back_s:.1f} s after SIGKILL, v2 answering {served_s:.1f} s after; "
          f"{len(failed)} of {len(calls)} calls failed ({100 * len(failed) / len(calls):.1f} %), "
          f"{len(failures(after))} of {len(after)} after it was back")
    assert mesh.workload("payment-v2")[role]["restarts"] == before["restarts"] + 1
    assert not failures(after), failures(after)[:5]  # once back, nothing fails
    assert {c.version for c in after if c.status == "OK"} == {"v1", "v2"}  # the split is back
