"""The fuzz targets (``fuzz/``) in CI: every corpus file replayed through its target, then each target fuzzed
for a few seconds under libFuzzer (atheris) from that corpus. A crash fails with its reproducer's path."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SHORT_RUN_SECONDS = 4  # per target: the 6 targets take ~35 s with start-up and the corpus replay


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_without_failure(target: str) -> None:
    run = importlib.import_module(f"fuzz.{target}_fuzz").run
    files = sorted((CORPUS / target).iterdir())
    assert len(files) >= 5, f"the {target} corpus is missing or nearly empty"
    for path in files:
        try:
            run(path.read_bytes())
        except Exception as e:
            raise AssertionError(f"{target} fails on {path.relative_to(ROOT)}: {e!r}") from e


@pytest.mark.timeout(90)
@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    new_inputs = tmp_path / "new"  # libFuzzer adds what it finds to the first directory: not the repo's
    new_inputs.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "fuzz", target, f"-max_total_time={SHORT_RUN_SECONDS}", "-timeout=20",
           "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", str(new_inputs), str(CORPUS / target)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=75, check=False)
    crashes = sorted(artifacts.iterdir())
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("INFO: Instrumenting")]
    tail = "\n".join(lines[-40:])
    first = crashes[0].read_bytes()[:512].hex() if crashes else ""
    assert proc.returncode == 0 and not crashes, (
        f"{target}: libFuzzer exited {proc.returncode}; reproducer(s): {[str(c) for c in crashes]} "
        f"(first bytes, hex: {first})\n"
        f"replay: PYTHONPATH=. python -m fuzz {target} <reproducer>\n{tail}")
    assert "Done" in proc.stderr, f"{target}: the fuzzer did not run to its time limit\n{tail}"
