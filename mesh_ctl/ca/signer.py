"""The signing core (pure): a checked request + a TTL + the current signing CA -> the chain Istio returns.

:class:`SigningAuthority` is whatever signs right now: a self-signed root (chain ``[leaf, root]``) or a
plugged-in intermediate (chain ``[leaf, ca-cert, intermediates..., root]``: Istio's order, leaf first, root
last, one PEM certificate per element). :class:`TtlPolicy` turns the requested ``validity_duration`` into a
lifetime: 0 means the default (24 h), anything from 1 s to the maximum (90 d) is granted as asked, more is
refused (Istio refuses too rather than silently shortening). The leaf never outlives any certificate of
its chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh_ctl.ca.authority import (
    MAX_WORKLOAD_TTL,
    WORKLOAD_TTL,
    CertificateAuthority,
    fingerprint,
    sign_workload_cert,
)
from mesh_ctl.ca.csr import CsrRequest

MIN_WORKLOAD_TTL = timedelta(seconds=1)


class TtlError(ValueError):
    """The requested lifetime is not allowed."""


class CaExpired(RuntimeError):
    """The signing CA (or a certificate above it) is no longer valid: nothing can be issued."""


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    default: timedelta = WORKLOAD_TTL  # Istio DEFAULT_WORKLOAD_CERT_TTL
    maximum: timedelta = MAX_WORKLOAD_TTL  # Istio MAX_WORKLOAD_CERT_TTL

    def __post_init__(self) -> None:
        if not MIN_WORKLOAD_TTL <= self.default <= self.maximum:
            raise ValueError(f"default certificate TTL {self.default} must be between {MIN_WORKLOAD_TTL} and the "
                             f"maximum {self.maximum}")

    def resolve(self, requested_seconds: int) -> timedelta:
        """The lifetime to grant for a request's ``validity_duration`` (seconds; 0 = default)."""
        if requested_seconds == 0:
            return self.default
        if requested_seconds < 0:
            raise TtlError(f"requested TTL {requested_seconds} s is negative")
        if requested_seconds > self.maximum.total_seconds():
            raise TtlError(f"requested TTL {requested_seconds} s is greater than the maximum allowed "
                           f"{int(self.maximum.total_seconds())} s")
        return timedelta(seconds=requested_seconds)


@dataclass(frozen=True, slots=True)
class SigningAuthority:
    """The CA that signs, the certificates between it and its root, and the root."""

    ca: CertificateAuthority
    intermediates: tuple[x509.Certificate, ...]  # above ca.cert, below root; usually empty
    root: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ca.cert)

    @property
    def root_fingerprint(self) -> str:
        return fingerprint(self.root)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """From the signing certificate up to and including the root."""
        own = () if self.ca.cert == self.root else (self.ca.cert,)
        return (*own, *self.intermediates, self.root)

    @property
    def not_after(self) -> datetime:
        return min(c.not_valid_after_utc for c in self.chain)


@dataclass(frozen=True, slots=True)
class Issued:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first, root last

    @property
    def pems(self) -> list[str]:
        return [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.chain]

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def serial(self) -> str:
        return format(self.leaf.serial_number, "x")


def issue(authority: SigningAuthority, request: CsrRequest, ttl: timedelta, now: datetime,
          *, max_ttl: timedelta = MAX_WORKLOAD_TTL) -> Issued:
    """Sign ``request``'s key for its SPIFFE ID, valid ``ttl`` (capped by the chain's expiry)."""
    cap = authority.not_after
    if cap <= now:
        raise CaExpired(f"the signing CA chain expired at {cap.isoformat()}")
    ttl = min(ttl, cap - now)
    leaf = sign_workload_cert(authority.ca, request.public_key, request.spiffe_id, ttl, now=now,
                              max_ttl=max(max_ttl, ttl))
    return Issued(leaf, (leaf, *authority.chain))
