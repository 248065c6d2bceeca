"""SecretManager against a fake CA (a trio function at the CreateCertificate boundary), on trio's mock clock:
issuance, renewal at half the lifetime, back-off, token re-reads, rejected answers, files and cleanup."""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pyproxy.agent import pki
from pyproxy.agent.ca_client import CaError
from pyproxy.agent.manager import SecretManager
from pyproxy.agent.options import AgentOptions
from pyproxy.config import model as m
from tests.unit.agent.signer import Signer

SPIFFE = "spiffe://cluster.local/ns/default/sa/payment"
BASE = datetime.now(UTC).timestamp()  # wall clock = BASE + trio's (mock) clock


def wall() -> float:
    return BASE + trio.current_time()


@dataclass
class Call:
    at: float
    csr: x509.CertificateSigningRequest
    validity: int
    token: str


@dataclass
class FakeCA:
    signer: Signer
    calls: list[Call] = field(default_factory=list)
    failures: deque[Exception] = field(default_factory=deque)
    fail_forever: Exception | None = None
    tamper: Callable[[str, int], list[str]] | None = None  # answer with something else

    async def __call__(self, csr: str, validity: int, token: str) -> list[str]:
        self.calls.append(Call(trio.current_time(), x509.load_pem_x509_csr(csr.encode()), validity, token))
        await trio.sleep(0.01)  # a round trip
        if self.fail_forever is not None:
            raise self.fail_forever
        if self.failures:
            raise self.failures.popleft()
        if self.tamper is not None:
            answer = self.tamper(csr, validity)
            self.tamper = None
            return answer
        return self.signer.sign(csr, validity, now=datetime.fromtimestamp(wall(), UTC))


@dataclass
class Proxy:
    """What the manager publishes to (the xDS state's role): records every installed pair of secrets."""

    installed: list[tuple[m.TlsSecret, m.ValidationSecret]] = field(default_factory=list)
    contents: list[tuple[bytes, bytes]] = field(default_factory=list)  # chain and root as they were published
    refuse: int = 0

    def publish(self, default: m.TlsSecret, rootca: m.ValidationSecret) -> None:
        assert os.path.exists(default.cert_chain_file) and os.path.exists(rootca.trusted_ca_file)
        if self.refuse:
            self.refuse -= 1
            raise ValueError("cannot load certificate: broken")
        self.installed.append((default, rootca))
        self.contents.append((Path(default.cert_chain_file).read_bytes(), Path(rootca.trusted_ca_file).read_bytes()))

    def in_use(self) -> set[str]:
        if not self.installed:
            return set()
        default, rootca = self.installed[-1]
        return {default.cert_chain_file, default.private_key_file, rootca.trusted_ca_file}


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("token-1\n")
    return path


def make(tmp_path: Path, token: Path, ca: FakeCA, proxy: Proxy, ttl: float = 100.0) -> SecretManager:
    options = AgentOptions(ca_host="127.0.0.1", ca_port=15010, token_path=str(token), namespace="default",
                           service_account="payment", ttl=ttl, key_algorithm="ecdsa", secret_dir=str(tmp_path))
    return SecretManager(options, proxy.publish, files_in_use=proxy.in_use, create_certificate=ca,
                         rng=random.Random(42), wall=wall)


async def run_for(manager: SecretManager, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_issues_and_renews_at_half_the_lifetime(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                                      token: Path, signer: Signer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pyproxy.agent")
    ca, proxy = FakeCA(signer), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=100)
    directory = manager.store.path
    await run_for(manager, 260)
    starts = [c.at for c in ca.calls]
    assert starts[0] == 0 and len(starts) == 6  # at 0, then every ~50 s
    for a, b in itertools.pairwise(starts):
        assert 48.4 <= b - a <= 51.6  # 50 s +- 1 % jitter, +- not-after's whole seconds
    assert len(set(starts[1:])) == 5
    assert manager.issued_count == 6 and manager.failures == 0
    # What the CA was asked: our SPIFFE ID, the TTL, a new key every time, the token.
    keys = set()
    for call in ca.calls:
        san = call.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [x509.UniformResourceIdentifier(SPIFFE)] and call.validity == 100
        assert call.token == "token-1"
        key = call.csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        keys.add(key.public_numbers())
    assert len(keys) == 6
    # What was published: default + ROOTCA from new files each time, serials all different.
    serials = []
    for (default, rootca), (chain, root) in zip(proxy.installed, proxy.contents, strict=True):
        assert (default.name, rootca.name) == ("default", "ROOTCA")
        leaf = x509.load_pem_x509_certificate(chain)
        leaf_key = leaf.public_key()
        assert isinstance(leaf_key, ec.EllipticCurvePublicKey) and leaf_key.public_numbers() in keys
        assert root == pki.certs_pem([signer.root.cert])
        serials.append(leaf.serial_number)
    assert len(set(serials)) == 6
    issued = [r.getMessage() for r in caplog.records if "certificate issued" in r.getMessage()]
    assert len(issued) == 6 and f"spiffe_id={SPIFFE}" in issued[0] and "not_after=" in issued[0]
    assert f"serial={pki.serial_hex(leaf)}" in issued[-1]
    # Cancelled: the private directory is gone.
    assert not os.path.exists(directory)  # noqa: ASYNC240


async def test_old_files_are_removed_once_unused(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                                 token: Path, signer: Signer) -> None:
    ca, proxy = FakeCA(signer), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(16)
        assert len(proxy.installed) == 4
        in_dir = {os.path.join(manager.store.path, f) for f in os.listdir(manager.store.path)}
        assert in_dir == proxy.in_use()  # only the files of the installed certificate are left
        for path in in_dir:
            assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(manager.store.path).st_mode & 0o777 == 0o700
        nursery.cancel_scope.cancel()


async def test_refusals_are_logged_and_retried_with_backoff(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                                            token: Path, signer: Signer,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pyproxy.agent")
    refusal = CaError("token is for spiffe://cluster.local/ns/default/sa/other, CSR asks for ...", 7)
    ca, proxy = FakeCA(signer, failures=deque([refusal] * 4)), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(4)
        assert not manager.has_certificate.is_set() and not proxy.installed
        await trio.sleep(20)
        assert manager.has_certificate.is_set()
        nursery.cancel_scope.cancel()
    gaps = [b.at - a.at for a, b in zip(ca.calls, ca.calls[1:5], strict=False)]
    # Back-off U[d/2, d] with d = 1, 2, 4, 8 s (plus the 10 ms round trip).
    for gap, d in zip(gaps, [1, 2, 4, 8], strict=True):
        assert d / 2 <= gap <= d + 0.02
    assert manager.failures == 4 and len(proxy.installed) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4
    assert "the CA refused or failed: PERMISSION_DENIED: token is for" in errors[0]
    assert "no certificate yet" in errors[0]


async def test_retries_until_expiry_keep_the_current_certificate(autojump_clock: trio.testing.MockClock,
                                                                 tmp_path: Path, token: Path, signer: Signer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    ca, proxy = FakeCA(signer), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(1)
        ca.fail_forever = CaError("connection refused")
        await trio.sleep(14)
        nursery.cancel_scope.cancel()
    assert len(proxy.installed) == 1  # still the first certificate
    assert manager.current is not None
    not_after = manager.current.not_after - BASE
    before_expiry = [c.at for c in ca.calls[1:] if c.at < not_after]
    assert before_expiry[0] >= 4.4 and len(before_expiry) >= 4  # renewal at ~5 s, then several retries
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("stays in use until it expires" in msg for msg in messages)
    assert any("EXPIRED" in msg for msg in messages)


async def test_the_token_is_read_again_for_every_request(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                                         token: Path, signer: Signer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ca, proxy = FakeCA(signer), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(1)
        # Blocking on purpose: trio.Path would run these in a thread, and the mock clock jumps while it waits.
        token.write_text("token-2")  # noqa: ASYNC240 - rotated
        await trio.sleep(5)
        token.unlink()  # noqa: ASYNC240 - gone for a while: nothing is sent, the failure is logged
        await trio.sleep(5)
        token.write_text("token-3\n")  # noqa: ASYNC240
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    tokens = [c.token for c in ca.calls]
    assert tokens[:2] == ["token-1", "token-2"] and tokens[-1] == "token-3"
    assert set(tokens) == {"token-1", "token-2", "token-3"}
    assert any("cannot read the token" in r.getMessage() for r in caplog.records)


async def test_an_answer_for_another_key_is_not_used(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                                     token: Path, signer: Signer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def other_key(csr: str, validity: int) -> list[str]:
        return signer.sign(pki.make_csr(pki.new_key("ecdsa"), SPIFFE).decode(), validity,
                           now=datetime.fromtimestamp(wall(), UTC))

    ca, proxy = FakeCA(signer, tamper=other_key), Proxy()
    manager = make(tmp_path, token, ca, proxy)
    await run_for(manager, 3)
    assert len(ca.calls) == 2 and len(proxy.installed) == 1
    assert any("answer was rejected: the certificate is not for our key" in r.getMessage() for r in caplog.records)


async def test_an_issuance_that_cannot_be_installed_is_discarded(autojump_clock: trio.testing.MockClock,
                                                                 tmp_path: Path, token: Path, signer: Signer) -> None:
    ca, proxy = FakeCA(signer), Proxy(refuse=1)
    manager = make(tmp_path, token, ca, proxy)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(0.5)
        assert os.listdir(manager.store.path) == []  # the refused files were removed
        assert "could not be installed: cannot load certificate" in manager.last_error
        await trio.sleep(2)
        assert len(proxy.installed) == 1 and manager.last_error == ""
        nursery.cancel_scope.cancel()


async def test_a_suspended_machine_renews_soon_after_it_wakes(autojump_clock: trio.testing.MockClock,
                                                              tmp_path: Path, token: Path, signer: Signer) -> None:
    """trio's clock stands still while a laptop sleeps; the certificate's expiry does not."""
    suspended = [0.0]

    def wall_with_suspend() -> float:
        return wall() + suspended[0]

    ca, proxy = FakeCA(signer), Proxy()
    manager = make(tmp_path, token, ca, proxy, ttl=1000)
    manager.wall = wall_with_suspend
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(10)
        assert len(ca.calls) == 1
        suspended[0] = 600.0  # the machine slept 10 minutes: the renewal time (~500 s) has passed
        await trio.sleep(31)
        nursery.cancel_scope.cancel()
    assert len(ca.calls) == 2 and ca.calls[1].at <= 10 + 30 + 0.1  # noticed within one 30 s look
