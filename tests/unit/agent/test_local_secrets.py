"""The agent's secrets in the xDS state: SDS names resolved locally, ROOTCA pushed by the control plane wins,
``default`` is never asked of it, readiness waits for the certificate (pyproxy.xds.state / client hooks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from envoy.config.core.v3 import base_pb2

from pyproxy.agent import pki
from pyproxy.config import model as m
from pyproxy.proxy.runtime import Runtime
from pyproxy.xds.client import AdsClient
from pyproxy.xds.state import XdsState
from tests.unit.agent import sds
from tests.unit.agent.signer import Signer, pem

SPIFFE = "spiffe://cluster.local/ns/default/sa/payment"
CLUSTER_NAME = "outbound|8080||payment.default.svc.cluster.local"


@dataclass
class Files:
    key: Path
    chain: Path
    root: Path
    root_pem: str

    def secrets(self) -> tuple[m.TlsSecret, m.ValidationSecret]:
        return (m.TlsSecret("default", str(self.chain), str(self.key)), m.ValidationSecret("ROOTCA", str(self.root)))


def issue(directory: Path, signer: Signer, name: str) -> Files:
    key = pki.new_key("ecdsa")
    issued = pki.validate_chain(signer.sign(pki.make_csr(key, SPIFFE).decode(), 3600), key, SPIFFE,
                                signer.root.cert.not_valid_before_utc.__class__.now().astimezone())
    files = Files(directory / f"{name}-key.pem", directory / f"{name}-chain.pem", directory / f"{name}-root.pem",
                  pem(issued.root))
    files.key.write_bytes(pki.key_pem(key))
    files.chain.write_bytes(pki.certs_pem(issued.chain))
    files.root.write_bytes(pki.certs_pem([issued.root]))
    return files


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def state() -> XdsState:
    return XdsState(sds.static(), base_pb2.Node(id="n"), local_only=frozenset({"default"}))


def cluster_tls(snapshot: m.Snapshot) -> m.TlsContext:
    tls = snapshot.clusters[CLUSTER_NAME].tls
    assert tls is not None
    return tls


def test_default_is_not_subscribed_rootca_is(state: XdsState) -> None:
    out = state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()))
    assert out.accepted
    [sds_request] = [r for r in out.requests if r.type_url == sds.SECRET]
    assert list(sds_request.resource_names) == ["ROOTCA"]


def test_local_secrets_resolve_the_sds_names(state: XdsState, signer: Signer, tmp_path: Path) -> None:
    installed: list[m.Snapshot] = []
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()), install=installed.append)
    assert not installed[-1].clusters[CLUSTER_NAME].load_assignment.localities  # type: ignore[union-attr]
    files = issue(tmp_path, signer, "one")
    snap = state.install_local_secrets(files.secrets(), installed.append)
    assert installed[-1] is snap and state.installed is snap
    tls = cluster_tls(snap)
    assert tls.certificates[0].cert_chain_file == str(files.chain)
    assert tls.certificates[0].private_key_file == str(files.key)
    assert tls.certificates[0].sds_name == "default"
    assert tls.validation is not None and tls.validation.trusted_ca_file == str(files.root)
    assert tls.validation.match_subject_alt_names  # the context's own SAN matchers are kept
    # A renewal is a new configuration version with the new files.
    renewed = issue(tmp_path, signer, "two")
    snap2 = state.install_local_secrets(renewed.secrets(), installed.append)
    assert cluster_tls(snap2).certificates[0].cert_chain_file == str(renewed.chain)
    assert snap2.version != snap.version


def test_a_rootca_pushed_by_the_control_plane_wins(state: XdsState, signer: Signer, tmp_path: Path) -> None:
    installed: list[m.Snapshot] = []
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()), install=installed.append)
    files = issue(tmp_path, signer, "one")
    state.install_local_secrets(files.secrets(), installed.append)
    other_root = Signer().root.cert
    bundle = files.root_pem + pem(other_root)  # a root rotation: old and new roots trusted together
    assert state.handle(sds.response(sds.SECRET, "s1", "2", sds.root_secret(bundle)), install=installed.append).accepted
    tls = cluster_tls(installed[-1])
    assert tls.validation is not None and tls.validation.trusted_ca_file != str(files.root)
    assert Path(str(tls.validation.trusted_ca_file)).read_text().count("BEGIN CERTIFICATE") == 2
    assert tls.certificates[0].cert_chain_file == str(files.chain)
    # A renewal afterwards does not bring the local ROOTCA back.
    renewed = issue(tmp_path, signer, "two")
    state.install_local_secrets(renewed.secrets(), installed.append)
    tls = cluster_tls(installed[-1])
    assert tls.validation is not None and tls.validation.trusted_ca_file != str(renewed.root)
    assert tls.certificates[0].cert_chain_file == str(renewed.chain)


def test_a_pushed_default_does_not_replace_the_agents(state: XdsState, signer: Signer, tmp_path: Path) -> None:
    installed: list[m.Snapshot] = []
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()), install=installed.append)
    files = issue(tmp_path, signer, "one")
    state.install_local_secrets(files.secrets(), installed.append)
    pushed = issue(tmp_path, signer, "pushed")
    state.handle(sds.response(sds.SECRET, "s1", "2", sds.tls_secret(pushed.chain.read_text(), pushed.key.read_text())),
                 install=installed.append)
    assert cluster_tls(installed[-1]).certificates[0].cert_chain_file == str(files.chain)


def test_a_failed_install_changes_nothing(state: XdsState, signer: Signer, tmp_path: Path) -> None:
    installed: list[m.Snapshot] = []
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()), install=installed.append)
    files = issue(tmp_path, signer, "one")
    state.install_local_secrets(files.secrets(), installed.append)
    before = (dict(state.local_secrets), state.installed)

    def refuse(snapshot: m.Snapshot) -> None:
        raise ValueError("cannot load certificate")

    with pytest.raises(ValueError, match="cannot load"):
        state.install_local_secrets(issue(tmp_path, signer, "two").secrets(), refuse)
    assert (dict(state.local_secrets), state.installed) == before


def test_initial_fetch_counts_the_local_rootca(state: XdsState, signer: Signer, tmp_path: Path) -> None:
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()))
    state.handle(sds.response(sds.LISTENER, "l1", "2"))
    assert not state.initial_fetch_done()  # ROOTCA subscribed, nothing pushed, nothing local
    state.install_local_secrets(issue(tmp_path, signer, "one").secrets(), lambda s: None)
    assert state.initial_fetch_done()


async def test_ready_only_with_the_certificate(signer: Signer, tmp_path: Path) -> None:
    static = sds.static()
    runtime = Runtime(static)
    ads = AdsClient(runtime, static, local_only=("default",))
    ads.state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()), install=runtime.install)
    ads.state.handle(sds.response(sds.LISTENER, "l1", "2"), install=runtime.install)
    ads._initial_fetch_timed_out()  # Envoy's initial_fetch_timeout does not make a sidecar without cert ready
    assert not runtime.ready.is_set()
    files = issue(tmp_path, signer, "one")
    ads.publish_local_secrets(*files.secrets())
    assert runtime.ready.is_set()
    # The runtime's cluster got an SSL context from the agent's files.
    state = runtime.clusters.clusters[CLUSTER_NAME]
    assert state.ssl_context is not None and state.local_principal == SPIFFE
    await trio.lowlevel.checkpoint()


async def test_without_the_agent_readiness_is_unchanged() -> None:
    static = sds.static()
    runtime = Runtime(static)
    ads = AdsClient(runtime, static)
    ads._ready()
    assert runtime.ready.is_set()
    await trio.lowlevel.checkpoint()
