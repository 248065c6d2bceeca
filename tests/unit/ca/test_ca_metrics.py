"""The CA's metrics as istiod's CA counts them: every CSR, each outcome in its own counter, and the expiry gauges
of the signing root and chain (read when scraped)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mesh_ctl.ca.authority import CertificateAuthority, create_root_ca
from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.options import CaOptions
from mesh_ctl.ca.service import CertificateService, Refusal
from mesh_ctl.ca.signer import SigningAuthority, TtlPolicy
from mesh_ctl.ca.tokens import TokenAuthority
from mesh_ctl.monitoring import ControlPlaneMetrics, render
from tests.support.metrics import families, value
from tests.unit.ca.conftest import NOW, PAYMENT, T0, TD, csr_pem, static_roots

CA_COUNTERS = ("citadel_server_csr_count", "citadel_server_success_cert_issuance_count",
               "citadel_server_authentication_failure_count", "citadel_server_csr_parsing_err_count",
               "citadel_server_csr_sign_err_count")


def counts(m: ControlPlaneMetrics) -> dict[str, float]:
    f = families(render(m.registry, m.bare_counters))
    return {name: value(f, name) or 0.0 for name in CA_COUNTERS}


def service_with(metrics: ControlPlaneMetrics, root: CertificateAuthority, tokens: TokenAuthority, tmp_path: Path,
                 clock: Callable[[], float] = lambda: T0) -> CertificateService:
    roots = static_roots(SigningAuthority(root, (), root.cert), [root.cert], tmp_path)
    return CertificateService(roots, tokens, TD, TtlPolicy(), clock=clock, metrics=metrics)


def attempt(service: CertificateService, csr: str, bearer: str | None, ttl: int = 0) -> bool:
    try:
        service.create_certificate(csr, ttl, bearer)
    except Refusal:
        return False
    return True


def test_each_outcome_lands_in_istios_counter(root: CertificateAuthority, tokens: TokenAuthority,
                                              tmp_path: Path) -> None:
    m = ControlPlaneMetrics(process=False)
    service = service_with(m, root, tokens, tmp_path)
    good = tokens.mint("default", "payment", timedelta(hours=1), now=T0)
    other = tokens.mint("default", "client", timedelta(hours=1), now=T0)
    assert attempt(service, csr_pem(PAYMENT), good)
    assert attempt(service, csr_pem(PAYMENT), good)
    assert not attempt(service, csr_pem(PAYMENT), None)  # no token
    assert not attempt(service, csr_pem(PAYMENT), "x.y.z")  # a bad token
    assert not attempt(service, csr_pem(PAYMENT), other)  # another workload's identity: Istio's authn failure
    assert not attempt(service, "garbage", good)  # a CSR that does not parse
    assert not attempt(service, csr_pem(PAYMENT), good, ttl=10**9)  # more than the maximum TTL
    assert counts(m) == {"citadel_server_csr_count": 7, "citadel_server_success_cert_issuance_count": 2,
                         "citadel_server_authentication_failure_count": 3,
                         "citadel_server_csr_parsing_err_count": 1, "citadel_server_csr_sign_err_count": 1}
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "citadel_server_csr_sign_err_count", error="TTL_ERROR") == 1


def test_an_expired_signing_ca_is_ca_not_ready(tokens: TokenAuthority, tmp_path: Path) -> None:
    short_root = create_root_ca(TD, ttl=timedelta(hours=1), now=NOW)
    m = ControlPlaneMetrics(process=False)
    service = service_with(m, short_root, tokens, tmp_path, clock=lambda: T0 + 7200)
    assert not attempt(service, csr_pem(PAYMENT), tokens.mint("default", "payment", now=T0 + 7200))
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "citadel_server_csr_sign_err_count", error="CA_NOT_READY") == 1
    assert value(f, "citadel_server_success_cert_issuance_count") == 0


def test_expiry_gauges_follow_the_signing_root_across_a_rotation(tmp_path: Path) -> None:
    clock = {"now": T0}
    m = ControlPlaneMetrics(process=False, clock=lambda: clock["now"])
    ca = ControlPlaneCA.open(CaOptions().resolve(tmp_path, tmp_path), TD, clock=lambda: clock["now"], metrics=m)
    first = ca.roots.signing().root.not_valid_after_utc.timestamp()
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "citadel_server_root_cert_expiry_timestamp") == first
    assert value(f, "citadel_server_cert_chain_expiry_timestamp") == first  # self-signed: the chain is the root
    remaining = value(f, "citadel_server_root_cert_expiry_seconds")
    assert remaining is not None and 9 * 365 * 86400 < remaining <= 10 * 366 * 86400  # Istio's 10-year root
    clock["now"] = T0 + 86400
    ca.roots.rotate(clock["now"], 0.0)
    ca.roots.step(clock["now"], force=True)  # the new root signs from now on
    f = families(render(m.registry, m.bare_counters))
    assert value(f, "citadel_server_root_cert_expiry_timestamp") == first + 86400
    assert value(f, "citadel_server_root_cert_expiry_seconds") == pytest.approx(first + 86400 - clock["now"])
