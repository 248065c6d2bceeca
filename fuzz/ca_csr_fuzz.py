"""The CA's CSR handling (:mod:`mesh_ctl.ca.csr`, :mod:`mesh_ctl.ca.signer`) through the certificate service.

Every input becomes one ``CreateCertificate`` call of :class:`CertificateService` (real token check, CSR
check, identity check, signing), by a caller whose token proves ``default/payment`` (or, mode bit 7,
``default/client``). Mode byte, low 2 bits:

- 0: the rest is the PEM text as sent (anything: several blocks, headers, garbage);
- 1: the rest is DER, wrapped in a ``CERTIFICATE REQUEST`` PEM block;
- 2/3: a real CSR built from the input (key: RSA 2048, P-256, P-384, P-521, Ed25519; SANs: the caller's
  SPIFFE ID, another identity, another trust domain, malformed IDs, DNS/IP/e-mail names; CA extensions;
  hash), signed, then optionally with a few DER bytes overwritten (mode 3).

Contract: the service either raises one of its :class:`Refusal` types, or returns a chain whose leaf is a
non-CA certificate, signed by our root, for the CSR's key, whose only name is exactly the caller's SPIFFE ID.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from fuzz._input import Input
from mesh_ctl.ca.authority import create_root_ca
from mesh_ctl.ca.material import PluginMaterial
from mesh_ctl.ca.roots import PluginRoots
from mesh_ctl.ca.service import CertificateService, Refusal
from mesh_ctl.ca.signer import SigningAuthority, TtlPolicy
from mesh_ctl.ca.tokens import TokenAuthority, default_issuer

TD = "cluster.local"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_ROOT = create_root_ca(TD, key=ec.generate_private_key(ec.SECP256R1()), now=NOW - timedelta(days=1))
_TOKENS = TokenAuthority(ec.generate_private_key(ec.SECP256R1()), default_issuer(TD))
_SERVICE = CertificateService(
    PluginRoots(PluginMaterial(SigningAuthority(_ROOT, (), _ROOT.cert), (_ROOT.cert,),
                               Path(tempfile.gettempdir()))),
    _TOKENS, TD, TtlPolicy(), clock=NOW.timestamp)
_CALLERS = (("default", "payment"), ("default", "client"))
_TOKEN = {c: _TOKENS.mint(*c, now=NOW.timestamp()) for c in _CALLERS}
logging.getLogger("mesh_ctl.ca").setLevel(logging.CRITICAL)  # one refusal line per execution otherwise

_KEYS = (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()),
         ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP521R1()),
         ed25519.Ed25519PrivateKey.generate())
_HASHES: tuple[hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512, ...] = (
    hashes.SHA256(), hashes.SHA384(), hashes.SHA512(), hashes.SHA224())
_URIS = (
    "spiffe://cluster.local/ns/default/sa/payment", "spiffe://cluster.local/ns/default/sa/client",
    "spiffe://other.domain/ns/default/sa/payment", "spiffe://cluster.local/ns/default/sa/payment/x",
    "spiffe://cluster.local/ns//sa/payment", "spiffe://cluster.local/ns/default/sa/../payment",
    "spiffe://cluster.local/ns/Default/sa/payment", "spiffe://CLUSTER.local/ns/default/sa/payment",
    "spiffe://cluster.local/ns/default/sa/payment\n", "spiffe://cluster.local/ns/default/sa/payment?x",
    "http://cluster.local/ns/default/sa/payment", "spiffe://cluster.local/ns/default/sa/payment#",
)


def _name(inp: Input) -> x509.GeneralName:
    kind = inp.byte()
    k = kind & 7
    if k <= 2:
        return x509.UniformResourceIdentifier(_URIS[(kind >> 3) % len(_URIS)])
    if k == 3:  # a URI from the input, with the payment ID as prefix half of the time
        tail = bytes(b & 0x7F for b in inp.blob()).decode("ascii")  # cryptography takes A-labels only
        return x509.UniformResourceIdentifier((_URIS[0] if kind & 8 else "") + tail)
    if k == 4:
        return x509.DNSName("payment.default.svc.cluster.local")
    if k == 5:
        return x509.IPAddress(ipaddress.ip_address("10.0.0.1"))
    if k == 6:
        return x509.RFC822Name("a@b.c")
    return x509.UniformResourceIdentifier(_URIS[0])


def _built(inp: Input, corrupt: bool) -> str:
    key = _KEYS[inp.choice(len(_KEYS))]
    flags = inp.byte()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, inp.blob()[:32].decode("latin-1") or "w")]))
    if not flags & 1:
        names = [_name(inp) for _ in range(1 + inp.choice(3))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=bool(flags & 2))
    if flags & 4:
        builder = builder.add_extension(x509.BasicConstraints(ca=bool(flags & 8), path_length=None), critical=True)
    if flags & 16:
        sign = bool(flags & 32)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=not sign, data_encipherment=False,
            key_agreement=False, key_cert_sign=sign, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
    if flags & 64:
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName("x")], excluded_subtrees=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else _HASHES[inp.choice(len(_HASHES))]
    rsa_padding = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if flags & 128 and isinstance(
        key, rsa.RSAPrivateKey) else None
    try:
        csr = builder.sign(key, algorithm, rsa_padding=rsa_padding)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return ""  # a combination cryptography refuses to build (not the CA's code)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    if corrupt:
        for _ in range(1 + inp.choice(4)):
            der[inp.uint(2) % len(der)] = inp.byte()
    return _pem(bytes(der))


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte()
    caller = _CALLERS[mode >> 7]
    ttl = (0, 3600, -1, 10**12)[mode >> 5 & 3]
    kind = mode & 3
    if kind == 0:
        pem = inp.rest().decode("utf-8", "replace")
    elif kind == 1:
        pem = _pem(inp.rest())
    else:
        pem = _built(inp, corrupt=kind == 3)
    try:
        chain = _SERVICE.create_certificate(pem, ttl, _TOKEN[caller], peer="fuzz")
    except Refusal:
        return
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    expected = f"spiffe://{TD}/ns/{caller[0]}/sa/{caller[1]}"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == [expected] and all(
        isinstance(n, x509.UniformResourceIdentifier) for n in san), f"issued {list(san)} to {expected}"
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, "issued a CA certificate"
    assert leaf.subject == x509.Name([]), f"issued subject {leaf.subject}"
    leaf.verify_directly_issued_by(_ROOT.cert)
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.is_signature_valid, "signed a CSR whose signature does not verify"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(*spki) == csr.public_key().public_bytes(*spki), "certified another key"
