"""The agent's key, CSR and the checks on the CA's answer (pyproxy.agent.pki)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyproxy.agent import pki
from tests.unit.agent.signer import Signer, make_authority, pem

SPIFFE = "spiffe://cluster.local/ns/default/sa/payment"


def now() -> datetime:
    """The time of the call, not of the module's import: the suite may reach these tests many minutes after
    collecting them (a module-level constant once fell outside the 5 minute skew the agent allows)."""
    return datetime.now().astimezone()


@pytest.fixture(scope="module")
def ec_key() -> pki.PrivateKey:
    return pki.new_key("ecdsa")


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def test_default_key_is_rsa_2048_and_ecdsa_is_p256() -> None:
    rsa_key = pki.new_key()
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 2048
    assert rsa_key.public_key().public_numbers().e == 65537
    ec_key = pki.new_key("ecdsa")
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey) and isinstance(ec_key.curve, ec.SECP256R1)


@pytest.mark.parametrize("algorithm", ["rsa", "ecdsa"])
def test_csr_names_the_spiffe_id_only(algorithm: str) -> None:
    key = pki.new_key("ecdsa" if algorithm == "ecdsa" else "rsa")
    csr = x509.load_pem_x509_csr(pki.make_csr(key, SPIFFE))
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([])  # no subject: the identity is the SAN alone
    [ext] = list(csr.extensions)
    assert isinstance(ext.value, x509.SubjectAlternativeName) and ext.critical
    assert list(ext.value) == [x509.UniformResourceIdentifier(SPIFFE)]
    assert csr.public_key() == key.public_key()
    assert csr.signature_hash_algorithm is not None and csr.signature_hash_algorithm.name == "sha256"


def test_the_real_ca_accepts_our_csr() -> None:
    """The control plane's CSR checks (mesh_ctl.ca.csr) accept what the agent sends, for both key types."""
    csr_module = pytest.importorskip("mesh_ctl.ca.csr")
    for algorithm in ("rsa", "ecdsa"):
        key = pki.new_key("ecdsa" if algorithm == "ecdsa" else "rsa")
        request = csr_module.parse_csr(pki.make_csr(key, SPIFFE).decode(), "cluster.local")
        assert request.spiffe_id == SPIFFE


def answer(signer: Signer, key: pki.PrivateKey, **kw: object) -> list[str]:
    return signer.sign(pki.make_csr(key, SPIFFE).decode(), 3600, **kw)  # type: ignore[arg-type]


def test_a_good_answer_is_accepted(signer: Signer, ec_key: pki.PrivateKey) -> None:
    signed_at = datetime.now(UTC)
    issued = pki.validate_chain(answer(signer, ec_key), ec_key, SPIFFE, now())
    assert issued.spiffe_id == SPIFFE
    assert issued.root == signer.root.cert
    assert issued.chain == (issued.leaf,)  # the root is not part of the chain the proxy presents
    assert pki.uri_sans(issued.leaf) == [SPIFFE]
    assert issued.serial == format(issued.leaf.serial_number, "x").rjust(len(issued.serial), "0")
    assert len(issued.serial) % 2 == 0
    assert abs((issued.not_after - signed_at).total_seconds() - 3600) < 5


def test_an_intermediate_is_kept_in_the_chain(ec_key: pki.PrivateKey) -> None:
    signer = Signer(intermediate=True)
    issued = pki.validate_chain(answer(signer, ec_key), ec_key, SPIFFE, now())
    assert issued.chain[1] == signer.issuer.cert and issued.root == signer.root.cert
    assert pki.certs_pem(issued.chain).count(b"BEGIN CERTIFICATE") == 2


def test_several_certificates_in_one_element_are_read(signer: Signer, ec_key: pki.PrivateKey) -> None:
    issued = pki.validate_chain(["".join(answer(signer, ec_key))], ec_key, SPIFFE, now())
    assert issued.root == signer.root.cert


def rejected(chain: list[str], key: pki.PrivateKey, match: str) -> None:
    with pytest.raises(pki.CertificateRejected, match=match):
        pki.validate_chain(chain, key, SPIFFE, now())


def test_a_certificate_for_another_key_is_rejected(signer: Signer, ec_key: pki.PrivateKey) -> None:
    other = pki.new_key("ecdsa")
    rejected(answer(signer, other), ec_key, "not for our key")


@pytest.mark.parametrize("sans", [
    [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/other")],
    [x509.UniformResourceIdentifier("spiffe://other.domain/ns/default/sa/payment")],
    [x509.UniformResourceIdentifier(SPIFFE), x509.UniformResourceIdentifier("spiffe://cluster.local/ns/x/sa/y")],
    [x509.UniformResourceIdentifier(SPIFFE), x509.DNSName("payment.default.svc")],
    [],
])
def test_a_certificate_for_another_identity_is_rejected(signer: Signer, ec_key: pki.PrivateKey,
                                                        sans: list[x509.GeneralName]) -> None:
    leaf = signer.leaf(ec_key.public_key(), sans, 3600)
    rejected([pem(leaf), *signer.chain_tail()], ec_key, "expected exactly URI:" + SPIFFE)


def test_a_chain_that_does_not_lead_to_the_returned_root_is_rejected(signer: Signer, ec_key: pki.PrivateKey) -> None:
    other_root = make_authority("another root")
    leaf_pem = answer(signer, ec_key)[0]
    rejected([leaf_pem, pem(other_root.cert)], ec_key, "leaf certificate is not signed by the next")
    # Same subject name, different key: only the signature tells them apart.
    impostor = make_authority("root")
    rejected([leaf_pem, pem(impostor.cert)], ec_key, "not signed by")


def test_a_root_that_is_not_self_signed_is_rejected(ec_key: pki.PrivateKey) -> None:
    signer = Signer(intermediate=True)
    chain = answer(signer, ec_key)
    rejected(chain[:2], ec_key, "intermediate|root .*self-signed")


def test_an_intermediate_that_is_not_a_ca_is_rejected(ec_key: pki.PrivateKey) -> None:
    signer = Signer()
    not_ca = make_authority("not a ca", signer.root, ca=False)
    leaf = signer.leaf(ec_key.public_key(), [x509.UniformResourceIdentifier(SPIFFE)], 3600, issuer=not_ca)
    rejected([pem(leaf), pem(not_ca.cert), pem(signer.root.cert)], ec_key, "not a CA")


def test_a_leaf_that_is_a_ca_is_rejected(signer: Signer, ec_key: pki.PrivateKey) -> None:
    leaf = signer.leaf(ec_key.public_key(), [x509.UniformResourceIdentifier(SPIFFE)], 3600, ca=True)
    rejected([pem(leaf), *signer.chain_tail()], ec_key, "leaf certificate is a CA")


def test_expired_or_future_certificates_are_rejected(signer: Signer, ec_key: pki.PrivateKey) -> None:
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(SPIFFE)]
    expired = signer.leaf(ec_key.public_key(), sans, 60, now=now() - timedelta(hours=1))
    rejected([pem(expired), *signer.chain_tail()], ec_key, "leaf certificate expired")
    future = signer.leaf(ec_key.public_key(), sans, 3600, now=now() + timedelta(hours=1), backdate=0)
    rejected([pem(future), *signer.chain_tail()], ec_key, "not valid before")
    # A little clock skew is fine.
    skewed = signer.leaf(ec_key.public_key(), sans, 3600, now=now() + timedelta(minutes=1), backdate=0)
    pki.validate_chain([pem(skewed), *signer.chain_tail()], ec_key, SPIFFE, now())


@pytest.mark.parametrize("chain, match", [
    ([], "0 certificate"),
    (["not a certificate"], r"cert_chain\[0\] is not a PEM certificate"),
])
def test_malformed_answers_are_rejected(chain: list[str], match: str, ec_key: pki.PrivateKey) -> None:
    rejected(chain, ec_key, match)


def test_a_leaf_alone_is_rejected(signer: Signer, ec_key: pki.PrivateKey) -> None:
    rejected(answer(signer, ec_key)[:1], ec_key, "expected the leaf and its root")


def test_fingerprint_is_sha256_of_the_der(signer: Signer) -> None:
    from cryptography.hazmat.primitives import hashes

    assert pki.fingerprint_sha256(signer.root.cert) == signer.root.cert.fingerprint(hashes.SHA256()).hex()
