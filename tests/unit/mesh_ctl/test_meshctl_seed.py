"""`mesh_ctl up --seed N` / the topology's ``seed``: every sidecar gets ``pyproxy --seed``, derived per sidecar."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.cli import build_parser
from mesh_ctl.commands.up import _forwarded
from mesh_ctl.runtime.render import traffic_lines
from mesh_ctl.runtime.specs import ControlPlaneAddresses, build_specs, sidecar_seed
from mesh_ctl.runtime.state import RunDir
from mesh_ctl.topology import TopologyError, default_topology, topology_from_dict, topology_to_dict


def test_sidecar_seeds_are_stable_distinct_and_fit_pyproxys_range() -> None:
    assert sidecar_seed(42, "client") == sidecar_seed(42, "client")  # run after run
    seeds = {sidecar_seed(s, w) for s in (0, 1, 42) for w in ("client", "payment-v1", "payment-v2")}
    assert len(seeds) == 9
    assert all(0 <= s < 2**64 for s in seeds)
    # The documented formula: SHA-256("<seed>/<workload>"), first 8 bytes, big-endian.
    assert sidecar_seed(42, "client") == int.from_bytes(hashlib.sha256(b"42/client").digest()[:8], "big")


def _sidecar_argvs(seed: int | None, control_plane: bool) -> dict[str, tuple[str, ...]]:
    t = replace(default_topology(), seed=seed)
    p = plan(t, probe=lambda _: True)
    bootstraps = {w.name: Path(f"/run/bootstrap/{w.name}.yaml") for w in t.workloads}
    if control_plane:
        groups = build_specs(t, p, bootstraps, python="py", control_plane=ControlPlaneAddresses.for_offset(
            "127.0.0.1", 0), run_dir=RunDir(Path("/run")))
    else:
        groups = build_specs(t, p, bootstraps, python="py")
    return {s.workload: s.argv for group in groups for s in group if s.role == "sidecar"}


@pytest.mark.parametrize("control_plane", [True, False])
def test_every_sidecar_gets_its_derived_seed(control_plane: bool) -> None:
    argvs = _sidecar_argvs(42, control_plane)
    assert set(argvs) == {"payment-v1", "payment-v2", "client"}
    for workload, argv in argvs.items():
        assert argv[-2:] == ("--seed", str(sidecar_seed(42, workload)))
    assert not any("--seed" in argv for argv in _sidecar_argvs(None, control_plane).values())


def test_topology_seed_round_trips_and_is_checked() -> None:
    doc = topology_to_dict(default_topology())
    assert "seed" not in doc
    t = topology_from_dict({**doc, "seed": 42})
    assert t.seed == 42 and topology_to_dict(t)["seed"] == 42
    for bad in (-1, 2**63, "42", True, 1.5):
        with pytest.raises(TopologyError, match=r"^seed: expected an integer"):
            topology_from_dict({**doc, "seed": bad})
    assert topology_from_dict({**doc, "seed": None}).seed is None


def test_up_seed_option_and_the_detached_supervisor_gets_it() -> None:
    args = build_parser().parse_args(["up", "--seed", "42", "--detach"])
    assert args.seed == 42
    forwarded = _forwarded(args, Path("/run"))
    assert forwarded[forwarded.index("--seed") + 1] == "42"
    assert build_parser().parse_args(["up"]).seed is None
    for bad in ("-1", "x", str(2**63)):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["up", "--seed", bad])


def test_the_banner_says_the_mesh_is_seeded() -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    assert not any("seeded" in line for line in traffic_lines(t, p))
    assert traffic_lines(replace(t, seed=7), p)[-1].startswith("random decisions seeded: --seed 7 ")
