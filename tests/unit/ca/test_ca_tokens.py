"""Bootstrap tokens: minted JWTs verify to their identity; every kind of bad token is refused with its reason."""

from __future__ import annotations

import base64
import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_ctl.ca.tokens import (
    AUDIENCE,
    Identity,
    TokenAuthority,
    TokenError,
    default_issuer,
    load_or_create_key,
    thumbprint,
)
from tests.unit.ca.conftest import T0, TD


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    h, c, _ = token.split(".")
    return (json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))),
            json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4))))


NAN_CLAIMS = b64(b'{"exp": NaN}')
DUPLICATE_CLAIMS = b64(b'{"sub": "a", "sub": "b"}')


def refused(tokens: TokenAuthority, token: str, match: str, now: float = T0 + 1) -> TokenError:
    with pytest.raises(TokenError, match=match) as info:
        tokens.verify(token, now=now)
    return info.value


def test_minted_token_has_the_kubernetes_shape_and_verifies(tokens: TokenAuthority) -> None:
    token = tokens.mint("default", "payment", timedelta(hours=2), now=T0)
    header, claims = parts(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": tokens.key_id}
    assert claims["iss"] == default_issuer(TD) == "minimesh/cluster.local"
    assert claims["sub"] == "system:serviceaccount:default:payment"
    assert claims["aud"] == [AUDIENCE] == ["istio-ca"]
    assert claims["iat"] == claims["nbf"] == int(T0)
    assert claims["exp"] == int(T0) + 7200
    assert claims["kubernetes.io"] == {"namespace": "default", "serviceaccount": {"name": "payment"}}
    assert isinstance(claims["jti"], str) and len(claims["jti"]) == 32
    verified = tokens.verify(token, now=T0 + 3600)
    assert verified.identity == Identity("default", "payment")
    assert verified.expires_at == T0 + 7200
    assert tokens.mint("default", "payment", now=T0) != tokens.mint("default", "payment", now=T0)  # jti differs


def test_signature_is_ieee_p1363_and_checks_with_an_independent_jose_library(tokens: TokenAuthority,
                                                                            token_key: ec.EllipticCurvePrivateKey,
                                                                            ) -> None:
    """ES256 as RFC 7518 says (r||s, 64 bytes): a second implementation must agree, both ways."""
    jose = pytest.importorskip("joserfc")
    from joserfc import jwt
    from joserfc.jwk import ECKey

    token = tokens.mint("default", "payment", now=T0)
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 64
    key = ECKey.import_key(token_key)
    decoded = jwt.decode(token, key, algorithms=["ES256"])
    assert decoded.claims["sub"] == "system:serviceaccount:default:payment"
    theirs = jwt.encode({"alg": "ES256", "kid": tokens.key_id},
                        {"iss": tokens.issuer, "aud": "istio-ca", "sub": "system:serviceaccount:ns1:sa1",
                         "exp": int(T0) + 60}, key)
    assert tokens.verify(theirs, now=T0).identity == Identity("ns1", "sa1")
    assert jose is not None


def test_forged_signature_is_refused(tokens: TokenAuthority) -> None:
    token = tokens.mint("default", "payment", now=T0)
    other = TokenAuthority(ec.generate_private_key(ec.SECP256R1()), tokens.issuer)
    forged = other.mint("default", "payment", now=T0)
    # same header (kid) as ours, their signature: only the signature check can catch it
    h, c, s = forged.split(".")
    ours_h = token.split(".")[0]
    refused(tokens, f"{ours_h}.{c}.{s}", "bad signature")
    refused(tokens, forged, "unknown key")  # their kid
    # our header and claims re-signed by nobody: one flipped bit in the signature
    h, c, s = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=="))
    raw[10] ^= 1
    refused(tokens, f"{h}.{c}.{b64(bytes(raw))}", "bad signature")


def test_claims_changed_after_signing_are_refused(tokens: TokenAuthority) -> None:
    """Replaying a token for another identity: edit the subject, keep the signature."""
    h, c, s = tokens.mint("default", "client", now=T0).split(".")
    _, claims = parts(f"{h}.{c}.{s}")
    claims["sub"] = "system:serviceaccount:default:payment"
    claims["kubernetes.io"] = {"namespace": "default", "serviceaccount": {"name": "payment"}}
    error = refused(tokens, f"{h}.{b64(json.dumps(claims).encode())}.{s}", "bad signature")
    assert error.claimed == "system:serviceaccount:default:payment"  # logged, never trusted


@pytest.mark.parametrize(("claims", "match"), [
    ({"iss": "kubernetes/default"}, "wrong issuer"),
    ({"aud": ["vault"]}, "wrong audience"),
    ({"aud": "istio-ca"}, None),  # a single string audience is valid JWT
    ({"exp": None}, "no exp"),
    ({"exp": "tomorrow"}, "not a NumericDate"),
    ({"exp": True}, "not a NumericDate"),
    ({"sub": "payment"}, "system:serviceaccount"),
    ({"sub": "system:serviceaccount:default"}, "system:serviceaccount"),
    ({"sub": "system:serviceaccount:Default:payment"}, "bad subject"),
    ({"kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "client"}}}, "does not match"),
])
def test_claims_are_checked(tokens: TokenAuthority, claims: dict[str, object], match: str | None) -> None:
    base: dict[str, object] = {"iss": tokens.issuer, "aud": ["istio-ca"],
                               "sub": "system:serviceaccount:default:payment",
                               "iat": int(T0), "nbf": int(T0), "exp": int(T0) + 60}
    base.update(claims)
    body = {k: v for k, v in base.items() if v is not None}
    token = tokens.sign({"alg": "ES256", "typ": "JWT", "kid": tokens.key_id}, body)
    if match is None:
        assert tokens.verify(token, now=T0).identity.service_account == "payment"
    else:
        refused(tokens, token, match, now=T0)


def test_expiry_and_not_before_with_leeway(tokens: TokenAuthority) -> None:
    token = tokens.mint("default", "payment", timedelta(seconds=60), now=T0)
    tokens.verify(token, now=T0 + 60 + 9)  # within the 10 s leeway
    error = refused(tokens, token, "expired", now=T0 + 60 + 11)
    assert error.claimed == "system:serviceaccount:default:payment"
    tokens.verify(token, now=T0 - 9)
    refused(tokens, token, "not valid yet", now=T0 - 11)
    future_iat = tokens.sign({"alg": "ES256", "kid": tokens.key_id},
                             {"iss": tokens.issuer, "aud": "istio-ca", "sub": "system:serviceaccount:a:b",
                              "iat": int(T0) + 3600, "exp": int(T0) + 7200})
    refused(tokens, future_iat, "issued in the future", now=T0)


def test_algorithm_none_and_others_are_refused(tokens: TokenAuthority) -> None:
    good = tokens.mint("default", "payment", now=T0)
    _, c, s = good.split(".")
    for alg in ("none", "None", "NONE"):
        h = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        refused(tokens, f"{h}.{c}.", "alg none")
        refused(tokens, f"{h}.{c}.{s}", "alg none")
    for alg in ("HS256", "RS256", "ES384", "EdDSA"):
        h = b64(json.dumps({"alg": alg, "kid": tokens.key_id}).encode())
        refused(tokens, f"{h}.{c}.{s}", "unsupported algorithm")
    h = b64(json.dumps({"kid": tokens.key_id}).encode())
    refused(tokens, f"{h}.{c}.{s}", "alg none")  # no alg at all is no signature either
    h = b64(json.dumps({"alg": "ES256", "kid": tokens.key_id, "crit": ["exp"]}).encode())
    refused(tokens, f"{h}.{c}.{s}", "critical")


def test_malformed_tokens_are_refused(tokens: TokenAuthority) -> None:
    good = tokens.mint("default", "payment", now=T0)
    h, c, s = good.split(".")
    for token, match in [
        ("", "no token"),
        (good[: len(good) // 2], "malformed|bad signature"),  # truncated
        (good[:-3], "bad signature|malformed"),  # truncated signature
        (f"{h}.{c}", "has 3"),
        (f"{h}.{c}.{s}.x", "has 3"),
        (f"{h}=.{c}.{s}", "base64url"),
        (f"{h}.{c}!.{s}", "base64url"),
        (f"{b64(b'[1,2]')}.{c}.{s}", "not a JSON object"),
        (f"{b64(b'not json')}.{c}.{s}", "not a JSON object"),
        (f"{h}.{NAN_CLAIMS}.{s}", "not a JSON object"),
        (f"{h}.{DUPLICATE_CLAIMS}.{s}", "duplicate"),
        ("x" * 9000, "longer than"),
        (f"{h}.{c}.{s}é", "base64url"),
    ]:
        refused(tokens, token, match)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies_and_never_crashes(text: str) -> None:
    tokens = TokenAuthority(_KEY, default_issuer(TD))
    with pytest.raises(TokenError):
        tokens.verify(text, now=T0)


_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, xor: int) -> None:
    tokens = TokenAuthority(_KEY, default_issuer(TD))
    token = tokens.mint("default", "payment", now=T0)
    i = position % len(token)
    changed = token[:i] + chr(ord(token[i]) ^ (xor or 1)) + token[i + 1:]
    if changed == token:
        return
    try:
        verified = tokens.verify(changed, now=T0)
    except TokenError:
        return
    # base64 has slack bits in the last character of a part: the decoded bytes, hence the identity, are the same
    assert verified.identity == Identity("default", "payment")


def test_identity_names_are_kubernetes_names(tokens: TokenAuthority) -> None:
    for ns, sa in [("Default", "payment"), ("default", "pay_ment"), ("-x", "a"), ("a" * 64, "b"), ("a", "")]:
        with pytest.raises(ValueError, match="not a valid"):
            tokens.mint(ns, sa, now=T0)
    with pytest.raises(ValueError, match="TTL"):
        tokens.mint("default", "payment", timedelta(0), now=T0)
    assert tokens.verify(tokens.mint("istio-system", "ingress.gateway-1", now=T0), now=T0).identity.spiffe_id(TD) \
        == "spiffe://cluster.local/ns/istio-system/sa/ingress.gateway-1"


def test_key_file_is_created_0600_reused_and_checked(tmp_path: Path) -> None:
    key, created = load_or_create_key(tmp_path)
    assert created
    assert stat.S_IMODE((tmp_path / "token-key.pem").stat().st_mode) == 0o600
    again, created = load_or_create_key(tmp_path)
    assert not created and thumbprint(again.public_key()) == thumbprint(key.public_key())
    (tmp_path / "token-key.pem").chmod(0o644)
    load_or_create_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "token-key.pem").stat().st_mode) == 0o600
    # tokens minted before a restart verify after it (same key file)
    before = TokenAuthority(key, "minimesh/cluster.local").mint("default", "payment", now=T0)
    assert TokenAuthority(again, "minimesh/cluster.local").verify(before, now=T0).identity.namespace == "default"


def test_thumbprint_matches_rfc7638_example_shape() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    kid = thumbprint(key.public_key())
    assert len(base64.urlsafe_b64decode(kid + "=")) == 32  # SHA-256
    jose = pytest.importorskip("joserfc")
    from joserfc.jwk import ECKey
    assert ECKey.import_key(key).thumbprint() == kid
    assert jose is not None


def test_non_p256_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        TokenAuthority(ec.generate_private_key(ec.SECP384R1()), "x")
    assert hashes.SHA256().digest_size == 32
