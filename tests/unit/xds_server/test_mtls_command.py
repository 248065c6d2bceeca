"""`mesh_ctl mtls`: the PeerAuthentication it writes (names and scopes as in Istio's docs), what it prints, and
that the control plane then pushes the new inbound chains. The CLI runs for real against a control plane in
this process (store, debounce, ADS, management API on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.cli import main
from mesh_ctl.commands.mtls import TargetError, effective_modes, replaced, table, target, workload_selector
from mesh_ctl.registry import Registry
from mesh_ctl.translate.names import LISTENER_TYPE
from tests.unit.xds_server.conftest import V1_NODE, node, run
from tests.unit.xds_server.test_control_plane import control_plane, settled

WORKLOADS: list[dict[str, Any]] = [
    {"name": "payment-v1", "namespace": "default", "labels": {"app": "payment", "version": "v1"}},
    {"name": "payment-v2", "namespace": "default", "labels": {"app": "payment", "version": "v2"}},
    {"name": "client", "namespace": "default", "labels": {"app": "client"}},
    {"name": "ledger-1", "namespace": "billing", "labels": {"app": "ledger"}},
]


def _pa(doc: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return doc["metadata"]["namespace"], doc["metadata"]["name"], doc["spec"]


@pytest.mark.parametrize(("args", "expected", "scope"), [
    (("strict", None, None, None), ("istio-system", "default", {"mtls": {"mode": "STRICT"}}), "mesh-wide"),
    (("disable", "billing", None, None), ("billing", "default", {"mtls": {"mode": "DISABLE"}}), "namespace billing"),
    (("permissive", None, "payment", None), ("default", "payment", {
        "selector": {"matchLabels": {"app": "payment"}}, "mtls": {"mode": "PERMISSIVE"}}), "workload app=payment"),
    (("strict", None, "payment-v1", None), ("default", "payment-v1", {
        "selector": {"matchLabels": {"app": "payment", "version": "v1"}}, "mtls": {"mode": "STRICT"}}),
     "workload app=payment, version=v1"),
    (("strict", None, "canary", [("version", "v2")]), ("default", "canary", {
        "selector": {"matchLabels": {"version": "v2"}}, "mtls": {"mode": "STRICT"}}), "workload version=v2"),
    (("strict", "istio-system", None, None), ("istio-system", "default", {"mtls": {"mode": "STRICT"}}), "mesh-wide"),
])
def test_the_policy_is_named_and_scoped_like_istios_docs(args: tuple[Any, ...], expected: tuple[Any, ...],
                                                         scope: str) -> None:
    mode, namespace, workload, selector = args
    doc, got_scope = target(mode, namespace, workload, selector, "istio-system", WORKLOADS)
    assert _pa(doc) == expected and got_scope == scope
    assert doc["apiVersion"] == "security.istio.io/v1" and doc["kind"] == "PeerAuthentication"


@pytest.mark.parametrize(("args", "words"), [
    (("strict", None, "nope", None), "no workload 'nope' in namespace 'default'"),
    (("strict", "billing", "payment", None), "no workload 'payment' in namespace 'billing'"),
    (("strict", "istio-system", "payment", [("app", "x")]), "applies to nothing"),
    (("strict", None, None, [("app", "x")]), "--selector needs --workload"),
])
def test_targets_that_cannot_work_are_refused(args: tuple[Any, ...], words: str) -> None:
    mode, namespace, workload, selector = args
    with pytest.raises(TargetError, match=words):
        target(mode, namespace, workload, selector, "istio-system", WORKLOADS)


def test_workload_selector_prefers_the_app_label() -> None:
    assert workload_selector("ledger", "billing", WORKLOADS) == {"app": "ledger"}
    assert workload_selector("ledger-1", "billing", WORKLOADS) == {"app": "ledger"}


def test_effective_modes_before_and_after() -> None:
    old = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": "default", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"mtls": {"mode": "DISABLE"}}}
    new, _ = target("strict", None, "payment-v1", None, "istio-system", WORKLOADS)
    ports = {**new, "spec": {**new["spec"], "portLevelMtls": {8080: {"mode": "DISABLE"}}}}
    before = effective_modes([old], WORKLOADS, "istio-system")
    after = effective_modes(replaced([old], ports), WORKLOADS, "istio-system")
    assert before[("default", "payment-v1")] == "DISABLE"
    assert after[("default", "payment-v1")] == "STRICT (8080:DISABLE)"
    assert after[("default", "payment-v2")] == "DISABLE" and after[("billing", "ledger-1")] == "PERMISSIVE"
    lines = table(before, after)
    assert lines[0].split() == ["WORKLOAD", "NAMESPACE", "BEFORE", "AFTER"]
    changed = [line for line in lines if line.endswith("*")]
    assert len(changed) == 1 and "payment-v1" in changed[0]
    # Replacing keeps the creation time of the replaced policy (the oldest still wins).
    again = replaced([old], {**old, "spec": {"mtls": {"mode": "STRICT"}}})
    assert again[0]["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"



def test_the_command_writes_the_policy_and_the_sidecars_get_it(registry: Registry, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        async with control_plane(registry, tmp_path) as (cp, _, _s):
            api = ["--control-plane", cp.api_address, "--run-dir", str(tmp_path)]

            def cli(*args: str) -> int:
                return main(["mtls", *args, *api])

            assert await asyncio.to_thread(cli, "strict", "--dry-run") == 0
            out = capsys.readouterr().out
            assert "PeerAuthentication istio-system/default (mesh-wide): (none) -> STRICT" in out
            assert "peerauthentication.security.istio.io/default created (dry run)" in out
            assert cp.store.revision == 0

            assert await asyncio.to_thread(cli, "strict") == 0
            out = capsys.readouterr().out
            assert "peerauthentication.security.istio.io/default created (revision 1)" in out
            rows = {line.split()[0]: line.split()[2:] for line in out.splitlines()[3:]}
            assert rows["payment-v1"] == ["PERMISSIVE", "STRICT", "*"]
            stored = cp.store.get("PeerAuthentication", "istio-system", "default")
            assert stored is not None and stored.spec == {"mtls": {"mode": "STRICT"}}
            await settled(cp)
            listener = cp.ads.generation.istio.mtls("default", {"app": "payment"})
            assert listener.mode == "STRICT"

            assert await asyncio.to_thread(cli, "disable", "--workload", "payment", "-o", "yaml") == 0
            out = capsys.readouterr().out
            assert "PeerAuthentication default/payment (workload app=payment): (none) -> DISABLE" in out
            assert "matchLabels:\n      app: payment" in out
            rows = {line.split()[0]: line.split()[2:] for line in out.splitlines()[3:] if "default" in line}
            assert rows["payment-v2"] == ["STRICT", "DISABLE", "*"] and rows["client"] == ["STRICT", "STRICT"]
            await settled(cp)

            assert await asyncio.to_thread(cli, "strict") == 0  # the same mesh policy again
            assert "peerauthentication.security.istio.io/default unchanged" in capsys.readouterr().out

            assert await asyncio.to_thread(cli, "strict", "--workload", "nope") == 2
            assert "no workload 'nope'" in capsys.readouterr().err

    run(scenario)


def test_the_pushed_listener_follows_the_command(registry: Registry, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        async with control_plane(registry, tmp_path) as (cp, _, s):
            s.node = node(V1_NODE)
            await s.send(LISTENER_TYPE)
            before = await s.recv()
            await s.ack(before)
            code = await asyncio.to_thread(main, ["mtls", "strict", "-n", "default", "--run-dir", str(tmp_path),
                                                  "--control-plane", cp.api_address])
            assert code == 0
            capsys.readouterr()
            after = await s.recv(timeout=5.0)
            assert after.version_info != before.version_info
            resources = cp.ads.resources_of("payment-v1.default")
            assert resources is not None
            (chain,) = resources.of(LISTENER_TYPE)["virtualInbound"].filter_chains  # STRICT: one mTLS chain
            assert chain.filter_chain_match.transport_protocol == "tls"

    run(scenario)
