"""Root rotation with overlap: the state machine, its persistence, and what it means for real TLS handshakes."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_ctl.ca import rotation
from mesh_ctl.ca.authority import create_root_ca, fingerprint
from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.files import cert_pem, key_pem, write_file
from mesh_ctl.ca.material import CaConfigError
from mesh_ctl.ca.options import CaOptions
from mesh_ctl.ca.roots import SelfSignedRoots
from mesh_ctl.ca.rotation import Phase, RotationError, RotationState
from mesh_ctl.ca.service import CertificateService
from mesh_ctl.ca.tokens import TokenAuthority
from tests.unit.ca.conftest import CLIENT, PAYMENT, T0, TD, csr_pem, ec_key, handshake, load_chain, tls_context

OLD, NEW = "a" * 64, "b" * 64


# ---------------------------------------------------------------------------------------------- the state machine


def test_three_phases_in_order() -> None:
    s = RotationState.initial(OLD, T0)
    s = rotation.record_issue(s, OLD, T0 + 100)
    s = rotation.begin(s, NEW, T0, publish_delay=10)
    assert (s.phase, s.signing, s.bundle, s.pending) == (Phase.PUBLISHING, OLD, (OLD, NEW), NEW)
    assert rotation.due(s, T0 + 9.9) == s  # the new root only joins the bundle
    s = rotation.record_issue(s, OLD, T0 + 105)  # the old root still signs during publishing
    s = rotation.due(s, T0 + 10)
    assert (s.phase, s.signing, s.bundle, s.retiring) == (Phase.SWITCHED, NEW, (OLD, NEW), OLD)
    assert s.retire_at == T0 + 105  # the last not-after the old root issued
    s = rotation.record_issue(s, NEW, T0 + 200)
    assert rotation.due(s, T0 + 104) == s
    s = rotation.due(s, T0 + 105)
    assert (s.phase, s.signing, s.bundle, s.pending, s.retiring) == (Phase.STABLE, NEW, (NEW,), None, None)
    assert dict(s.issued_until) == {NEW: T0 + 200}
    assert [h["event"] for h in s.history][-3:] == [
        "rotation started: new root published in the trust bundle",
        "new root signs; old root trusted until its certificates expire",
        "old root removed from the trust bundle"]


def test_a_root_that_never_signed_retires_right_after_the_switch() -> None:
    s = rotation.begin(RotationState.initial(OLD, T0), NEW, T0, 0)
    s = rotation.due(s, T0)
    assert s.phase is Phase.STABLE and s.bundle == (NEW,)


def test_explicit_steps_and_refusals() -> None:
    s = RotationState.initial(OLD, T0)
    with pytest.raises(RotationError, match="no rotation in progress"):
        rotation.step(s, T0)
    s = rotation.begin(s, NEW, T0, 3600)
    with pytest.raises(RotationError, match="already in progress"):
        rotation.begin(s, "c" * 64, T0, 0)
    s = rotation.step(s, T0 + 1)  # switch now rather than in an hour
    assert s.phase is Phase.SWITCHED and s.switched_at == T0 + 1
    s = rotation.record_issue(s, OLD, T0 + 500)  # (issued before the switch, recorded late: still counts)
    with pytest.raises(RotationError, match=r"stay valid until .*--force"):
        rotation.step(s, T0 + 2)
    forced = rotation.step(s, T0 + 2, force=True)
    assert forced.bundle == (NEW,) and forced.history[-1]["event"].endswith("(forced)")
    with pytest.raises(RotationError, match="already trusted"):
        rotation.begin(RotationState.initial(OLD), OLD, T0, 0)
    with pytest.raises(RotationError, match="negative"):
        rotation.begin(RotationState.initial(OLD), NEW, T0, -1)


def test_json_round_trip_and_corruption() -> None:
    s = rotation.record_issue(rotation.begin(RotationState.initial(OLD, T0), NEW, T0, 5), OLD, T0 + 9)
    assert RotationState.from_json(json.loads(json.dumps(s.to_json()))) == s
    bad = s.to_json()
    bad["bundle"] = [OLD]
    with pytest.raises(ValueError, match="publishing"):
        RotationState.from_json(bad)
    with pytest.raises(ValueError, match="fingerprint"):
        RotationState.from_json({**s.to_json(), "signing": "zz"})
    with pytest.raises(ValueError, match="missing"):
        RotationState.from_json({"phase": "stable"})
    with pytest.raises(ValueError):
        RotationState.from_json({**s.to_json(), "phase": "done"})


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("begin"), st.floats(0, 50)),
    st.tuples(st.just("wait"), st.floats(0, 100)),
    st.tuples(st.just("issue"), st.floats(1, 300)),
    st.tuples(st.just("step"), st.just(0.0)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ACTIONS)
def test_no_valid_certificate_ever_loses_its_root(actions: list[tuple[str, float]]) -> None:
    """Whatever happens (without --force): every unexpired certificate chains to a root in the bundle, the
    signer is always trusted, and a new root never signs before it was published (except by an explicit step)."""
    now, s, counter = T0, RotationState.initial("0" * 64, T0), 0
    issued: list[tuple[str, float]] = []
    published_at = {s.signing: T0 - 1e9}
    for action, value in actions:
        before, stepped = s, False
        if action == "begin" and s.phase is Phase.STABLE:
            counter += 1
            new = f"{counter:064x}"
            s = rotation.begin(s, new, now, value)
            published_at[new] = now
        elif action == "wait":
            now += value
        elif action == "issue":
            issued.append((s.signing, now + value))
            s = rotation.record_issue(s, s.signing, now + value)
        elif action == "step":
            try:
                s = rotation.step(s, now)
                stepped = True
            except RotationError:
                pass
        pre = s
        s = rotation.due(s, now)
        s.check()
        assert all(root in s.bundle for root, not_after in issued if not_after > now)
        if s.signing != pre.signing:  # switched by the clock: only once the publish delay has elapsed
            assert pre.switch_at is not None and now >= pre.switch_at >= published_at[s.signing]
        if s.signing != before.signing and not stepped:
            assert now - published_at[s.signing] >= 0


# ---------------------------------------------------------------------------------------------- on disk


def test_open_creates_a_root_and_restarts_mid_rotation(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    roots = SelfSignedRoots.open(d, TD, publish_delay=10, now=T0)
    old = roots.state.signing
    assert (d / "roots" / old / "root-cert.pem").is_file()
    for key in (d / "root-key.pem", d / "roots" / old / "root-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "rotation.json").stat().st_mode) == 0o600
    assert (d / "trust-bundle.pem").read_bytes() == (d / "root-cert.pem").read_bytes()

    roots.record_issue(roots.signing(), datetime.fromtimestamp(T0 + 15, UTC))
    roots.rotate(T0, 10)
    new = roots.state.pending
    assert new is not None and roots.signing().fingerprint == old
    assert [fingerprint(c) for c in roots.bundle()] == [old, new]
    assert (d / "trust-bundle.pem").read_bytes() == b"".join(cert_pem(c) for c in roots.bundle())

    restarted = SelfSignedRoots.open(d, TD, now=T0 + 5)  # the control plane restarts mid-publishing
    assert restarted.state == roots.state
    assert not restarted.tick(T0 + 9)
    assert restarted.tick(T0 + 10)  # the switch happens on schedule after the restart
    assert restarted.signing().fingerprint == new
    assert fingerprint(x509_load(d / "root-cert.pem")) == new  # the copy `mesh_ctl up` reads follows
    restarted.record_issue(restarted.signing(), datetime.fromtimestamp(T0 + 50, UTC))

    again = SelfSignedRoots.open(d, TD, now=T0 + 12)  # and again while switched
    assert again.state.phase is Phase.SWITCHED and again.state.retire_at == T0 + 15
    assert not again.tick(T0 + 14)
    assert again.tick(T0 + 15)
    assert [fingerprint(c) for c in again.bundle()] == [new]
    assert not (d / "roots" / old).exists()  # the retired root's key is gone
    assert json.loads((d / "rotation.json").read_text())["issued_until"] == {new: T0 + 50}


def test_issues_are_persisted_so_a_restart_keeps_the_old_root_long_enough(tmp_path: Path) -> None:
    roots = SelfSignedRoots.open(tmp_path, TD, now=T0)
    old = roots.signing()
    roots.record_issue(old, datetime.fromtimestamp(T0 + 3600, UTC))
    roots.rotate(T0, 0)
    reopened = SelfSignedRoots.open(tmp_path, TD, now=T0 + 1)
    reopened.tick(T0 + 1)
    assert reopened.state.phase is Phase.SWITCHED and reopened.state.retire_at == T0 + 3600
    assert len(reopened.bundle()) == 2


def test_an_existing_root_is_adopted(tmp_path: Path) -> None:
    legacy = create_root_ca(TD)
    write_file(tmp_path / "root-key.pem", key_pem(legacy.key), 0o600)
    write_file(tmp_path / "root-cert.pem", cert_pem(legacy.cert), 0o644)
    roots = SelfSignedRoots.open(tmp_path, TD)
    assert roots.signing().ca.cert == legacy.cert and roots.state.phase is Phase.STABLE


def test_unreadable_state_stops_the_ca(tmp_path: Path) -> None:
    roots = SelfSignedRoots.open(tmp_path, TD, now=T0)
    (tmp_path / "rotation.json").write_text("{")
    with pytest.raises(CaConfigError, match="rotation state"):
        SelfSignedRoots.open(tmp_path, TD)
    (tmp_path / "rotation.json").write_text(json.dumps(roots.state.to_json()))
    (tmp_path / "roots" / roots.state.signing / "root-key.pem").write_bytes(key_pem(ec_key()))
    with pytest.raises(CaConfigError, match="does not match"):
        SelfSignedRoots.open(tmp_path, TD)
    (tmp_path / "roots" / roots.state.signing / "root-cert.pem").unlink()
    with pytest.raises(CaConfigError, match="cannot load root"):
        SelfSignedRoots.open(tmp_path, TD)


def test_a_root_near_its_end_rotates_by_itself(tmp_path: Path) -> None:
    roots = SelfSignedRoots.open(tmp_path, TD, publish_delay=30, now=T0)
    lifetime = (roots.signing().root.not_valid_after_utc - roots.signing().root.not_valid_before_utc).total_seconds()
    late = roots.signing().root.not_valid_after_utc.timestamp() - 0.19 * lifetime
    assert roots.tick(late)
    assert roots.state.phase is Phase.PUBLISHING and roots.state.switch_at == late + 30


# ---------------------------------------------------------------------------------------------- as the control plane


def test_control_plane_ca_tells_listeners_about_bundle_changes(tmp_path: Path) -> None:
    clock = [T0]
    ca = ControlPlaneCA.open(CaOptions(publish_delay=timedelta(seconds=5)).resolve(tmp_path, tmp_path / "s"), TD,
                             clock=lambda: clock[0])
    seen: list[int] = []
    unsubscribe = ca.subscribe(lambda bundle: seen.append(len(bundle)))
    token = ca.mint_token("default", "payment")["token"]
    ca.service.create_certificate(csr_pem(PAYMENT), 6, token)  # the old root's last certificate: until T0 + 6
    asyncio.run(ca.rotate())
    assert seen == [2] and ca.status()["phase"] == "publishing"
    clock[0] += 5
    ca.tick()
    assert seen == [2]  # the switch changes the signer, not the bundle: nothing to push
    assert ca.status()["phase"] == "switched"
    clock[0] += 1
    ca.tick()
    assert seen == [2, 1] and ca.status()["phase"] == "stable"
    unsubscribe()
    asyncio.run(ca.rotate(timedelta(0)))
    assert seen == [2, 1]


def test_rotation_under_real_tls(tmp_path: Path, tokens: TokenAuthority) -> None:
    """Workloads on the old and on the new root talk to each other while both are trusted; after the old root
    left the bundle its certificates would be refused, which is why it leaves only once they expired."""
    clock = [datetime.now(UTC).timestamp()]
    roots = SelfSignedRoots.open(tmp_path, TD, publish_delay=5, now=clock[0])
    service = CertificateService(roots, tokens, TD, clock=lambda: clock[0])

    def workload(sa: str, ttl: int) -> tuple[object, list[str]]:
        key = ec_key()
        chain = service.create_certificate(csr_pem(f"spiffe://{TD}/ns/default/sa/{sa}", key), ttl,
                                           tokens.mint("default", sa, now=clock[0]))
        return key, chain

    def pem_bundle() -> list[str]:
        return [cert_pem(c).decode() for c in roots.bundle()]

    old_key, old_chain = workload("client", 600)  # signed by the old root
    roots.rotate(clock[0], 5)
    clock[0] += 5
    roots.tick(clock[0])
    new_key, new_chain = workload("payment", 600)  # signed by the new root
    assert load_chain(old_chain)[-1] != load_chain(new_chain)[-1]
    both = pem_bundle()
    assert len(both) == 2
    server = tls_context(True, new_key, new_chain[:-1], both, tmp_path, "new")  # type: ignore[arg-type]
    client = tls_context(False, old_key, old_chain[:-1], both, tmp_path, "old")  # type: ignore[arg-type]
    seen_by_server, seen_by_client = handshake(server, client)
    assert seen_by_server["subjectAltName"] == (("URI", CLIENT),)
    assert seen_by_client["subjectAltName"] == (("URI", PAYMENT),)
    old_until = load_chain(old_chain)[0].not_valid_after_utc.timestamp()
    assert not roots.tick(old_until - 1)  # the old root's last certificate is still valid
    assert roots.tick(old_until)
    only_new = pem_bundle()
    assert len(only_new) == 1
    strict = tls_context(True, new_key, new_chain[:-1], only_new, tmp_path, "strict")  # type: ignore[arg-type]
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(strict, tls_context(False, old_key, old_chain[:-1], both, tmp_path, "old2"))  # type: ignore[arg-type]


def test_expired_certificate_is_refused_by_tls(tmp_path: Path, tokens: TokenAuthority) -> None:
    now = datetime.now(UTC).timestamp()
    past = [now - 3600]
    roots = SelfSignedRoots.open(tmp_path, TD, now=now)
    service = CertificateService(roots, tokens, TD, clock=lambda: past[0])
    key = ec_key()
    expired = service.create_certificate(csr_pem(CLIENT, key), 60, tokens.mint("default", "client", now=past[0]))
    assert load_chain(expired)[0].not_valid_after_utc.timestamp() < now
    past[0] = now
    server_key = ec_key()
    fresh = service.create_certificate(csr_pem(PAYMENT, server_key), 60, tokens.mint("default", "payment", now=now))
    bundle = [cert_pem(c).decode() for c in roots.bundle()]
    server = tls_context(True, server_key, fresh[:-1], bundle, tmp_path, "s")
    with pytest.raises(ssl.SSLError, match=r"certificate has expired|certificate expired"):
        handshake(server, tls_context(False, key, expired[:-1], bundle, tmp_path, "c"))
    handshake(server, tls_context(False, server_key, fresh[:-1], bundle, tmp_path, "ok"))  # control


def x509_load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pem_helpers_stay_in_sync(tmp_path: Path) -> None:
    root = create_root_ca(TD)
    assert cert_pem(root.cert) == root.cert.public_bytes(serialization.Encoding.PEM)
