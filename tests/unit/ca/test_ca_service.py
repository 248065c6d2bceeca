"""The certificate service: a workload gets its own identity only; every refusal has its reason, code and log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh_ctl.ca.authority import CertificateAuthority, create_root_ca
from mesh_ctl.ca.csr import CsrError, parse_csr
from mesh_ctl.ca.service import (
    CertificateService,
    InvalidRequest,
    PermissionDenied,
    Refusal,
    Unauthenticated,
    bearer_token,
)
from mesh_ctl.ca.signer import SigningAuthority, TtlError, TtlPolicy
from mesh_ctl.ca.tokens import TokenAuthority
from tests.unit.ca.conftest import (
    CLIENT,
    NOW,
    PAYMENT,
    T0,
    TD,
    csr_pem,
    ec_key,
    load_chain,
    rsa_key,
    static_roots,
)


def token(tokens: TokenAuthority, sa: str = "payment", ns: str = "default", ttl: float = 3600) -> str:
    return tokens.mint(ns, sa, timedelta(seconds=ttl), now=T0)


def refusal(service: CertificateService, csr: str, bearer: str | None, ttl: int = 0) -> Refusal:
    with pytest.raises(Refusal) as info:
        service.create_certificate(csr, ttl, bearer, peer="ipv4:127.0.0.1:5555")
    return info.value


# ---------------------------------------------------------------------------------------------- the happy path


def test_issues_the_token_identity_as_istio_shapes_it(service: CertificateService, tokens: TokenAuthority,
                                                      root: CertificateAuthority) -> None:
    key = ec_key()
    chain_pems = service.create_certificate(csr_pem(PAYMENT, key), 0, token(tokens), "ipv4:127.0.0.1:1")
    assert len(chain_pems) == 2 and all(p.count("BEGIN CERTIFICATE") == 1 for p in chain_pems)
    leaf, top = load_chain(chain_pems)
    assert top == root.cert  # Istio's order: leaf first, root last
    assert leaf.public_key() == key.public_key()
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [PAYMENT]
    assert len(list(san.value)) == 1
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=2)  # clock-skew grace
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)  # 0 = the default TTL
    # path validation against the trust bundle, as a TLS client certificate
    verified = verification.PolicyBuilder().store(verification.Store([root.cert])).time(
        NOW + timedelta(hours=1)).build_client_verifier().verify(leaf, [])
    assert x509.UniformResourceIdentifier(PAYMENT) in (verified.subjects or [])
    assert service.counters() == {"issued": 1, "refused": {}}


def test_issuance_is_logged(service: CertificateService, tokens: TokenAuthority, caplog: pytest.LogCaptureFixture,
                            ) -> None:
    with caplog.at_level(logging.INFO, logger="mesh_ctl.ca"):
        leaf = load_chain(service.create_certificate(csr_pem(PAYMENT), 60, token(tokens), "ipv4:127.0.0.9:7"))[0]
    line = next(r.getMessage() for r in caplog.records if "issued" in r.getMessage())
    assert PAYMENT in line and format(leaf.serial_number, "x") in line
    assert leaf.not_valid_after_utc.isoformat() in line and "127.0.0.9" in line


def test_rsa_2048_csr_like_istio_agent_default(service: CertificateService, tokens: TokenAuthority) -> None:
    chain = service.create_certificate(csr_pem(PAYMENT, rsa_key()), 3600, token(tokens))
    assert load_chain(chain)[0].not_valid_after_utc == NOW + timedelta(hours=1)


def test_csr_subject_and_extra_extensions_are_not_copied(service: CertificateService, tokens: TokenAuthority) -> None:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")])
    extra = [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)]
    leaf = load_chain(service.create_certificate(csr_pem(PAYMENT, subject=subject, extensions=extra), 0,
                                                 token(tokens)))[0]
    assert leaf.subject == x509.Name([])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CODE_SIGNING not in eku


# ---------------------------------------------------------------------------------------------- identity


def test_another_workloads_identity_is_refused_and_logged(service: CertificateService, tokens: TokenAuthority,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mesh_ctl.ca"):
        e = refusal(service, csr_pem(PAYMENT), token(tokens, "client"))
    assert isinstance(e, PermissionDenied) and e.code is grpc.StatusCode.PERMISSION_DENIED
    assert e.reason == (f"requested identity {PAYMENT} does not match the caller's token identity {CLIENT}")
    line = caplog.records[-1].getMessage()
    assert "refused" in line and e.reason in line and f"claimed identity {PAYMENT}" in line
    assert "127.0.0.1:5555" in line
    assert service.counters()["refused"] == {"PERMISSION_DENIED": 1}


def test_another_namespace_same_service_account_is_refused(service: CertificateService, tokens: TokenAuthority,
                                                           ) -> None:
    e = refusal(service, csr_pem("spiffe://cluster.local/ns/prod/sa/payment"), token(tokens, "payment", "default"))
    assert isinstance(e, PermissionDenied)


@pytest.mark.parametrize(("bearer", "match"), [
    (None, "no bearer token"),
    ("", "no bearer token"),
    ("not-a-jwt", "malformed"),
])
def test_missing_or_garbage_token_is_unauthenticated(service: CertificateService, bearer: str | None, match: str,
                                                     ) -> None:
    e = refusal(service, csr_pem(PAYMENT), bearer)
    assert isinstance(e, Unauthenticated) and e.code is grpc.StatusCode.UNAUTHENTICATED
    assert match in e.reason


def test_expired_token_is_unauthenticated(service: CertificateService, tokens: TokenAuthority) -> None:
    old = tokens.mint("default", "payment", timedelta(seconds=60), now=T0 - 3600)
    e = refusal(service, csr_pem(PAYMENT), old)
    assert isinstance(e, Unauthenticated) and "expired" in e.reason
    assert e.claimed == "default/payment (unverified token)"


def test_token_of_another_control_plane_is_unauthenticated(service: CertificateService, tokens: TokenAuthority,
                                                           ) -> None:
    stranger = TokenAuthority(ec.generate_private_key(ec.SECP256R1()), tokens.issuer)
    e = refusal(service, csr_pem(PAYMENT), stranger.mint("default", "payment", now=T0))
    assert isinstance(e, Unauthenticated) and "unknown key" in e.reason


def test_token_is_checked_before_the_csr(service: CertificateService) -> None:
    """An unauthenticated caller learns nothing about what the CA thinks of its CSR."""
    e = refusal(service, "garbage", "x.y.z")
    assert isinstance(e, Unauthenticated)


def test_bearer_metadata_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("x", "y"), ("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer")]) is None
    assert bearer_token(None) is None


# ---------------------------------------------------------------------------------------------- the CSR


@pytest.mark.parametrize(("names", "extensions", "match"), [
    ([x509.UniformResourceIdentifier(PAYMENT), x509.UniformResourceIdentifier(CLIENT)], [], "2 URI SANs"),
    ([x509.UniformResourceIdentifier(PAYMENT), x509.UniformResourceIdentifier(PAYMENT)], [], "2 URI SANs"),
    ([x509.UniformResourceIdentifier(PAYMENT), x509.DNSName("payment.default.svc")], [], "DNSName SAN"),
    ([x509.DNSName("payment.default.svc")], [], "DNSName SAN"),
    ([x509.UniformResourceIdentifier(PAYMENT), x509.RFC822Name("a@b.c")], [], "RFC822Name SAN"),
    ([x509.UniformResourceIdentifier("spiffe://evil.example/ns/default/sa/payment")], [], "trust domain"),
    ([x509.UniformResourceIdentifier("https://payment.default/")], [], "not a SPIFFE ID"),
    ([x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/payment/extra")], [], "not a SPIFFE ID"),
    ([x509.UniformResourceIdentifier("spiffe://cluster.local/ns/Default/sa/payment")], [], "namespace"),
    (None, [], "no subjectAltName"),
    ([x509.UniformResourceIdentifier(PAYMENT)], [(x509.BasicConstraints(ca=True, path_length=None), True)], "CA"),
    ([x509.UniformResourceIdentifier(PAYMENT)],
     [(x509.KeyUsage(True, False, False, False, False, True, False, False, False), True)], "signing key usage"),
    ([x509.UniformResourceIdentifier(PAYMENT)],
     [(x509.NameConstraints([x509.DNSName("x")], None), True)], "name constraints"),
])
def test_bad_csrs_are_invalid_argument(service: CertificateService, tokens: TokenAuthority,
                                       names: list[x509.GeneralName] | None,
                                       extensions: list[tuple[x509.ExtensionType, bool]], match: str) -> None:
    e = refusal(service, csr_pem(names, extensions=extensions), token(tokens))
    assert isinstance(e, InvalidRequest) and e.code is grpc.StatusCode.INVALID_ARGUMENT
    assert match in e.reason


def test_a_leaf_basic_constraints_in_the_csr_is_fine(service: CertificateService, tokens: TokenAuthority) -> None:
    csr = csr_pem(PAYMENT, extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    assert len(service.create_certificate(csr, 0, token(tokens))) == 2


def test_bad_csr_signature_is_refused(service: CertificateService, tokens: TokenAuthority) -> None:
    csr = x509.load_pem_x509_csr(csr_pem(PAYMENT).encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    e = refusal(service, tampered, token(tokens))
    assert isinstance(e, InvalidRequest) and "signature does not verify" in e.reason


def test_csr_signed_by_another_key_than_it_certifies_is_refused() -> None:
    """A CSR for someone else's public key (the requester does not hold it): self-signature check."""
    theirs, mine = ec_key(), ec_key()
    good = x509.load_pem_x509_csr(csr_pem(PAYMENT, theirs).encode())
    forged_tbs = x509.load_pem_x509_csr(csr_pem(PAYMENT, mine).encode())
    # splice: their SubjectPublicKeyInfo can only be presented with their signature; ours does not verify
    assert good.is_signature_valid and forged_tbs.is_signature_valid
    swapped = good.tbs_certrequest_bytes.replace(
        good.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        mine.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    der = good.public_bytes(serialization.Encoding.DER).replace(good.tbs_certrequest_bytes, swapped)
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature does not verify"):
        parse_csr(pem, TD)


@pytest.mark.parametrize(("pem", "match"), [
    ("", "no CSR"),
    ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
    ("hello", "exactly one PEM block"),
])
def test_unparseable_csrs(pem: str, match: str) -> None:
    with pytest.raises(CsrError, match=match):
        parse_csr(pem, TD)


def test_two_pem_blocks_and_weak_keys_are_refused() -> None:
    with pytest.raises(CsrError, match="exactly one PEM block"):
        parse_csr(csr_pem(PAYMENT) + csr_pem(PAYMENT), TD)
    with pytest.raises(CsrError, match="RSA key of 1024 bits"):
        parse_csr(csr_pem(PAYMENT, rsa_key(1024)), TD)
    with pytest.raises(CsrError, match="curve"):
        parse_csr(csr_pem(PAYMENT, ec.generate_private_key(ec.SECP256K1())), TD)


# ---------------------------------------------------------------------------------------------- TTLs


@pytest.mark.parametrize(("requested", "granted"), [
    (0, timedelta(hours=24)), (1, timedelta(seconds=1)), (5, timedelta(seconds=5)),
    (90 * 86400, timedelta(days=90)),
])
def test_ttl_bounds_granted(service: CertificateService, tokens: TokenAuthority, requested: int,
                            granted: timedelta) -> None:
    leaf = load_chain(service.create_certificate(csr_pem(PAYMENT), requested, token(tokens)))[0]
    assert leaf.not_valid_after_utc - NOW == granted


@pytest.mark.parametrize(("requested", "match"), [(-1, "negative"), (90 * 86400 + 1, "greater than the maximum")])
def test_ttl_bounds_refused(service: CertificateService, tokens: TokenAuthority, requested: int, match: str) -> None:
    e = refusal(service, csr_pem(PAYMENT), token(tokens), ttl=requested)
    assert isinstance(e, InvalidRequest) and match in e.reason


def test_ttl_policy_is_configurable() -> None:
    policy = TtlPolicy(default=timedelta(seconds=30), maximum=timedelta(hours=1))
    assert policy.resolve(0) == timedelta(seconds=30)
    with pytest.raises(TtlError):
        policy.resolve(3601)
    with pytest.raises(ValueError, match="default certificate TTL"):
        TtlPolicy(default=timedelta(hours=2), maximum=timedelta(hours=1))
    with pytest.raises(ValueError, match="default certificate TTL"):
        TtlPolicy(default=timedelta(0))


def test_leaf_never_outlives_the_signing_ca(tokens: TokenAuthority, tmp_path: Path) -> None:
    short_root = create_root_ca(TD, ttl=timedelta(hours=1), now=NOW)
    roots = static_roots(SigningAuthority(short_root, (), short_root.cert), [short_root.cert], tmp_path)
    service = CertificateService(roots, tokens, TD, clock=lambda: T0)
    leaf = load_chain(service.create_certificate(csr_pem(PAYMENT), 0, token(tokens)))[0]
    assert leaf.not_valid_after_utc == short_root.cert.not_valid_after_utc
    expired = CertificateService(roots, tokens, TD, clock=lambda: T0 + 7200)
    e = refusal(expired, csr_pem(PAYMENT), tokens.mint("default", "payment", now=T0 + 7200))
    assert e.code is grpc.StatusCode.FAILED_PRECONDITION and "expired" in e.reason


def test_current_time_is_used_without_a_clock(root: CertificateAuthority, tokens: TokenAuthority,
                                              tmp_path: Path) -> None:
    service = CertificateService(static_roots(SigningAuthority(root, (), root.cert), [root.cert], tmp_path),
                                 tokens, TD)
    before = datetime.now(UTC)
    leaf = load_chain(service.create_certificate(csr_pem(PAYMENT), 10, tokens.mint("default", "payment")))[0]
    assert before - timedelta(minutes=2, seconds=1) <= leaf.not_valid_before_utc <= datetime.now(UTC)
