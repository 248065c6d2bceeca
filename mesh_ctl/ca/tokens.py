"""Bootstrap tokens: JWTs (RFC 7519) the control plane signs, naming one workload's namespace and service account.

The analogue of a Kubernetes projected service-account token, which istio-agent presents to istiod as
``authorization: Bearer <jwt>``. A token is minted per workload when the mesh launches it; the workload's
sidecar presents it with every CSR, and the CA signs only ``spiffe://<td>/ns/<ns>/sa/<sa>`` for it.

Shape (compact JWS, ES256 = ECDSA P-256 + SHA-256, RFC 7518 3.4; the signature is ``r || s``, 64 bytes)::

    header  {"alg": "ES256", "typ": "JWT", "kid": <RFC 7638 thumbprint of the signing key>}
    claims  {"iss": "minimesh/<trust domain>", "sub": "system:serviceaccount:<ns>:<sa>", "aud": ["istio-ca"],
             "iat", "nbf", "exp" (NumericDate seconds), "jti": <random>,
             "kubernetes.io": {"namespace": <ns>, "serviceaccount": {"name": <sa>}}}

:meth:`TokenAuthority.verify` checks, in order: the compact form (three base64url parts, no padding, JSON
objects without duplicate keys), the algorithm (``none`` and anything but ES256 refused, ``crit`` refused),
the key id, the signature, then the claims (issuer, audience, ``nbf``/``iat``/``exp`` with a small leeway,
subject form and agreement with ``kubernetes.io``). Nothing from an unverified token is trusted; a refusal
is a :class:`TokenError` whose ``reason`` says which check failed (``claimed`` is the unverified subject,
for the log line only). Pure: the clock is a parameter, the key is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from mesh_ctl.ca.files import KEY_MODE, key_pem, write_file

ALGORITHM = "ES256"
AUDIENCE = "istio-ca"  # what istio-agent's token is scoped to (REFERENCE.md section 4)
DEFAULT_TOKEN_TTL = timedelta(hours=24)
MAX_TOKEN_TTL = timedelta(hours=24)  # hours, as Kubernetes' service-account tokens: a stolen one expires soon
# Everything here runs on one host's clock; go-jose / Kubernetes allow 60 s between machines.
LEEWAY = timedelta(seconds=10)
MAX_TOKEN_BYTES = 8192
TOKEN_KEY_FILE = "token-key.pem"
SUBJECT_PREFIX = "system:serviceaccount:"

# Kubernetes names: a namespace is a DNS-1123 label, a service account a DNS-1123 subdomain.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class TokenError(Exception):
    """A token was refused. ``reason`` is for the caller and the log; ``claimed`` the unverified subject."""

    def __init__(self, reason: str, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


@dataclass(frozen=True, slots=True)
class Identity:
    """A workload identity: a Kubernetes-style namespace and service account."""

    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(f"not a valid namespace name: {self.namespace!r} (DNS-1123 label)")
        if not _SERVICE_ACCOUNT.match(self.service_account) or ".." in self.service_account:
            raise ValueError(f"not a valid service account name: {self.service_account!r} (DNS-1123 subdomain)")

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}{self.namespace}:{self.service_account}"

    def spiffe_id(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    identity: Identity
    claims: Mapping[str, Any]

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])


def default_issuer(trust_domain: str) -> str:
    return f"minimesh/{trust_domain}"


class TokenAuthority:
    """Mints and verifies bootstrap tokens with one P-256 key (the control plane's)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str, *, leeway: timedelta = LEEWAY) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"ES256 needs a P-256 key, not {key.curve.name}")
        self._key = key
        self._public = key.public_key()
        self.issuer = issuer
        self.leeway = leeway.total_seconds()
        self.key_id = thumbprint(self._public)

    # ------------------------------------------------------------------------------------------ mint

    def mint(self, namespace: str, service_account: str, ttl: timedelta = DEFAULT_TOKEN_TTL, *,
             now: float | None = None) -> str:
        """A signed token for ``namespace``/``service_account`` valid ``ttl`` from ``now``."""
        identity = Identity(namespace, service_account)
        if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"token TTL must be between 1 s and {MAX_TOKEN_TTL} (got {ttl})")
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer, "sub": identity.subject, "aud": [AUDIENCE],
            "iat": issued, "nbf": issued, "exp": issued + int(ttl.total_seconds()),
            "jti": secrets.token_hex(16),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
        return self.sign({"alg": ALGORITHM, "typ": "JWT", "kid": self.key_id}, claims)

    def sign(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """A compact JWS of ``claims`` under ``header`` (any claims: tests use it to build bad tokens)."""
        signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode("ascii")
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return f"{signing_input.decode('ascii')}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    # ------------------------------------------------------------------------------------------ verify

    def verify(self, token: str, *, now: float | None = None) -> VerifiedToken:
        """The identity ``token`` proves, or :class:`TokenError` naming the first check that failed."""
        now = time.time() if now is None else now
        header, claims, signing_input, signature = _split(token)
        claimed = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenError("unsigned token (alg none) refused", claimed)
        if alg != ALGORITHM:
            raise TokenError(f"unsupported algorithm {alg!r} (only {ALGORITHM})", claimed)
        if "crit" in header:
            raise TokenError("critical header extensions are not supported", claimed)
        if header.get("typ", "JWT") not in ("JWT", "jwt"):
            raise TokenError(f"unexpected token type {header.get('typ')!r}", claimed)
        kid = header.get("kid", self.key_id)
        if kid != self.key_id:
            raise TokenError(f"signed by an unknown key (kid {str(kid)[:64]!r})", claimed)
        if len(signature) != 64:
            raise TokenError("bad signature (forged or damaged token)", claimed)
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self._public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise TokenError("bad signature (forged, altered, or signed by another control plane)", claimed) from None
        return VerifiedToken(self._check_claims(claims, now, claimed), claims)

    def _check_claims(self, claims: Mapping[str, Any], now: float, claimed: str | None) -> Identity:
        if claims.get("iss") != self.issuer:
            raise TokenError(f"wrong issuer {str(claims.get('iss'))[:100]!r} (expected {self.issuer!r})", claimed)
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if AUDIENCE not in audiences:
            raise TokenError(f"wrong audience {aud!r} (expected {AUDIENCE!r})", claimed)
        exp = _numeric_date(claims, "exp", claimed)
        if exp is None:
            raise TokenError("no exp claim (tokens must expire)", claimed)
        nbf = _numeric_date(claims, "nbf", claimed)
        iat = _numeric_date(claims, "iat", claimed)
        if now > exp + self.leeway:
            raise TokenError(f"expired {now - exp:.0f} s ago (exp {_iso(exp)})", claimed)
        if nbf is not None and now < nbf - self.leeway:
            raise TokenError(f"not valid yet (nbf {_iso(nbf)}, {nbf - now:.0f} s from now)", claimed)
        if iat is not None and now < iat - self.leeway:
            raise TokenError(f"issued in the future (iat {_iso(iat)})", claimed)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(SUBJECT_PREFIX) or sub.count(":") != 3:
            raise TokenError(f"subject {str(sub)[:100]!r} is not system:serviceaccount:<ns>:<sa>", claimed)
        namespace, service_account = sub[len(SUBJECT_PREFIX):].split(":")
        try:
            identity = Identity(namespace, service_account)
        except ValueError as e:
            raise TokenError(f"bad subject: {e}", claimed) from None
        k8s = claims.get("kubernetes.io")
        if k8s is not None:
            sa = k8s.get("serviceaccount") if isinstance(k8s, dict) else None
            if (not isinstance(sa, dict) or k8s.get("namespace") != namespace
                    or sa.get("name") != service_account):
                raise TokenError("the kubernetes.io claim does not match the subject", claimed)
        return identity


# ---------------------------------------------------------------------------------------------- the key


def load_or_create_key(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The token signing key in ``directory`` (``token-key.pem``, 0600), created if missing."""
    path = directory / TOKEN_KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{path}: not a P-256 private key")
        if path.stat().st_mode & 0o077:
            path.chmod(KEY_MODE)
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    write_file(path, key_pem(key), KEY_MODE)
    return key, True


def thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key: the token's ``kid``."""
    numbers = public_key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")),
           "y": _b64(numbers.y.to_bytes(32, "big"))}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


# ---------------------------------------------------------------------------------------------- encoding


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(part: str, what: str) -> bytes:
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise TokenError(f"malformed token: the {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"malformed token: the {what} is not base64url") from None


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _no_duplicates(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json would accept NaN / Infinity


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise TokenError(f"malformed token: the {what} is not a JSON object ({e})") from None
    if not isinstance(value, dict):
        raise TokenError(f"malformed token: the {what} is not a JSON object")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if not isinstance(token, str) or not token:
        raise TokenError("no token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(f"malformed token: longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError(f"malformed token: {len(parts)} parts, a signed JWT has 3 (header.claims.signature)")
    header = _object(_unb64(parts[0], "header"), "header")
    claims = _object(_unb64(parts[1], "claims"), "claims")
    signature = _unb64(parts[2], "signature")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _numeric_date(claims: Mapping[str, Any], name: str, claimed: str | None) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(f"the {name} claim is not a NumericDate", claimed)
    return float(value)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
