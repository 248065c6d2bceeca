"""Shared pieces for the CA unit tests: roots, token authorities, CSR builders, an in-memory TLS handshake."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca.authority import CertificateAuthority, PrivateKey, create_root_ca
from mesh_ctl.ca.material import PluginMaterial
from mesh_ctl.ca.roots import PluginRoots
from mesh_ctl.ca.service import CertificateService
from mesh_ctl.ca.signer import SigningAuthority, TtlPolicy
from mesh_ctl.ca.tokens import TokenAuthority, default_issuer

TD = "cluster.local"
PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()


@pytest.fixture(scope="session")
def root() -> CertificateAuthority:
    return create_root_ca(TD, now=NOW)


@pytest.fixture(scope="session")
def token_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def tokens(token_key: ec.EllipticCurvePrivateKey) -> TokenAuthority:
    return TokenAuthority(token_key, default_issuer(TD))


def static_roots(signing: SigningAuthority, bundle: Sequence[x509.Certificate], directory: Path) -> PluginRoots:
    return PluginRoots(PluginMaterial(signing, tuple(bundle), directory))


@pytest.fixture
def service(root: CertificateAuthority, tokens: TokenAuthority, tmp_path: Path) -> CertificateService:
    roots = static_roots(SigningAuthority(root, (), root.cert), [root.cert], tmp_path)
    return CertificateService(roots, tokens, TD, TtlPolicy(), clock=lambda: T0)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(names: Sequence[x509.GeneralName] | str | None, key: PrivateKey | None = None, *,
            extensions: Sequence[tuple[x509.ExtensionType, bool]] = (), subject: x509.Name | None = None) -> str:
    """A PEM CSR asking for ``names`` (a SPIFFE ID string = one URI SAN; None = no SAN extension)."""
    key = key or ec_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    if isinstance(names, str):
        names = [x509.UniformResourceIdentifier(names)]
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def load_chain(pems: Sequence[str]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems]


# ---------------------------------------------------------------------------------------------- real TLS (OpenSSL)


def tls_context(server: bool, key: PrivateKey, chain: Sequence[str], bundle: Sequence[str],
                tmp_path: Path, name: str) -> ssl.SSLContext:
    """An mTLS context like a sidecar's: its key + chain, trusting ``bundle``, peer certificate required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    key_file, chain_file = tmp_path / f"{name}-key.pem", tmp_path / f"{name}-chain.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    chain_file.write_text("".join(chain))
    ctx.load_cert_chain(chain_file, key_file)
    ctx.load_verify_locations(cadata="".join(bundle))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[dict[str, object], dict[str, object]]:
    """Run a TLS handshake in memory (no sockets); each side's view of the peer certificate. Raises
    ssl.SSLError from the side that refused."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    done = {"s": False, "c": False}
    for _ in range(20):
        for side, obj in (("c", client), ("s", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):  # the server finishes only after it has checked the client's certificate
            return dict(server.getpeercert() or {}), dict(client.getpeercert() or {})
    raise AssertionError("handshake did not finish")
