"""The certificate service: Istio's ``CreateCertificate`` with the caller's identity proven by a token.

    CertificateService.create_certificate(csr_pem, ttl_seconds, bearer_token, peer) -> [leaf, ..., root]
      1. the bearer token verifies (tokens.py)        else Unauthenticated   (gRPC UNAUTHENTICATED)
      2. the TTL is allowed (signer.TtlPolicy)        else InvalidRequest    (gRPC INVALID_ARGUMENT)
      3. the CSR is well-formed, one SPIFFE URI SAN   else InvalidRequest
         in our trust domain (csr.py)
      4. that SAN is the token's identity             else PermissionDenied  (gRPC PERMISSION_DENIED)
      5. signed by the current signing CA (roots.py)  CaExpired -> Unavailable (gRPC FAILED_PRECONDITION)

One log line per issuance (identity, serial, not-after, signing root) and per refusal (reason, claimed
identity, peer address), on the ``mesh_ctl.ca`` logger. Metrics as istiod's CA counts them
(``mesh_ctl.monitoring``): every request is a ``citadel_server_csr_count``; (1) and (4) refused are
``..._authentication_failure_count`` (Istio counts a refused impersonation there too), (3)
``..._csr_parsing_err_count``, (2) and (5) ``..._csr_sign_err_count{error="TTL_ERROR"|"CA_NOT_READY"}``, a
signing bug ``{error="CERT_GEN_ERROR"}``; a signed one ``..._success_cert_issuance_count``.
:class:`IstioCertificateServicer` is the grpc.aio face of it (``istio.v1.auth.IstioCertificateService``,
``authorization: Bearer <token>`` metadata); the synchronous work runs in a worker thread so the event loop
keeps serving ADS streams.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
import grpc.aio

from mesh_ctl.ca.csr import CsrError, parse_csr
from mesh_ctl.ca.proto import istio_ca_pb2, istio_ca_pb2_grpc
from mesh_ctl.ca.roots import RootSource
from mesh_ctl.ca.signer import CaExpired, TtlError, TtlPolicy, issue
from mesh_ctl.ca.tokens import TokenAuthority, TokenError
from mesh_ctl.monitoring.families import CA_NOT_READY, CERT_GEN_ERROR, TTL_ERROR, ControlPlaneMetrics

log = logging.getLogger("mesh_ctl.ca")

SERVICE = "istio.v1.auth.IstioCertificateService"


class Refusal(Exception):
    """A request the CA will not sign; ``code`` is the gRPC status to answer with."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


class Unauthenticated(Refusal):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(Refusal):
    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidRequest(Refusal):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(Refusal):
    code = grpc.StatusCode.FAILED_PRECONDITION


class CertificateService:
    """Token-authenticated CSR signing (thread-safe; see the module docstring)."""

    def __init__(self, roots: RootSource, tokens: TokenAuthority, trust_domain: str,
                 ttl: TtlPolicy | None = None, *, clock: Callable[[], float] = time.time,
                 metrics: ControlPlaneMetrics | None = None) -> None:
        self.roots = roots
        self.metrics = metrics or ControlPlaneMetrics(process=False)
        self.tokens = tokens
        self.trust_domain = trust_domain
        self.ttl = ttl or TtlPolicy()
        self.clock = clock
        self._lock = threading.Lock()
        self.issued = 0
        self.refused: Counter[str] = Counter()

    def create_certificate(self, csr_pem: str, ttl_seconds: int, bearer_token: str | None,
                           peer: str = "unknown") -> list[str]:
        """Sign ``csr_pem`` for the identity ``bearer_token`` proves; the PEM chain, leaf first, root last."""
        self.metrics.csr_received()
        try:
            chain = self._create(csr_pem, ttl_seconds, bearer_token, peer)
        except Refusal as e:
            with self._lock:
                self.refused[e.code.name] += 1
            log.warning("CA refused a certificate: %s (%s); claimed identity %s; peer %s",
                        e.reason, e.code.name, e.claimed or "unknown", peer)
            raise
        except Exception:
            self.metrics.signing_failed(CERT_GEN_ERROR)
            raise
        self.metrics.csr_issued()
        return chain

    def _create(self, csr_pem: str, ttl_seconds: int, bearer_token: str | None, peer: str) -> list[str]:
        now = self.clock()
        if not bearer_token:
            self.metrics.authentication_failed()
            raise Unauthenticated("no bearer token (send `authorization: Bearer <token>` metadata)")
        try:
            token = self.tokens.verify(bearer_token, now=now)
        except TokenError as e:
            self.metrics.authentication_failed()
            raise Unauthenticated(f"token refused: {e.reason}", _claimed_from_subject(e.claimed)) from None
        caller = token.identity
        caller_id = caller.spiffe_id(self.trust_domain)
        try:
            ttl = self.ttl.resolve(ttl_seconds)
        except TtlError as e:
            self.metrics.signing_failed(TTL_ERROR)
            raise InvalidRequest(str(e), caller_id) from None
        try:
            request = parse_csr(csr_pem, self.trust_domain)
        except CsrError as e:
            self.metrics.csr_parsing_failed()
            raise InvalidRequest(str(e), caller_id) from None
        if request.identity != caller:
            self.metrics.authentication_failed()
            raise PermissionDenied(f"requested identity {request.spiffe_id} does not match the caller's token "
                                   f"identity {caller_id}", request.spiffe_id)
        authority = self.roots.signing()
        try:
            issued = issue(authority, request, ttl, datetime.fromtimestamp(now, UTC), max_ttl=self.ttl.maximum)
        except CaExpired as e:
            self.metrics.signing_failed(CA_NOT_READY)
            raise Unavailable(str(e), caller_id) from None
        self.roots.record_issue(authority, issued.not_after)
        with self._lock:
            self.issued += 1
        log.info("CA issued %s serial %s not-after %s (ttl %ss, signed by %s, peer %s)", request.spiffe_id,
                 issued.serial, issued.not_after.isoformat(), int(ttl.total_seconds()),
                 authority.fingerprint[:16], peer)
        return issued.pems

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"issued": self.issued, "refused": dict(self.refused)}


def _claimed_from_subject(subject: str | None) -> str | None:
    """The unverified token subject, as ``ns/sa (unverified)``, for the refusal log line."""
    if not subject:
        return None
    return f"{subject.removeprefix('system:serviceaccount:').replace(':', '/')} (unverified token)"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry (scheme case-insensitive)."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


Context: TypeAlias = (
    "grpc.aio.ServicerContext[istio_ca_pb2.IstioCertificateRequest, istio_ca_pb2.IstioCertificateResponse]")


class IstioCertificateServicer(istio_ca_pb2_grpc.IstioCertificateServiceServicer):
    """``istio.v1.auth.IstioCertificateService/CreateCertificate`` on grpc.aio."""

    def __init__(self, service: CertificateService) -> None:
        self.service = service

    async def CreateCertificate(  # noqa: N802 - the gRPC method name
        self, request: istio_ca_pb2.IstioCertificateRequest, context: Context,
    ) -> istio_ca_pb2.IstioCertificateResponse:
        token = bearer_token(tuple(context.invocation_metadata() or ()))
        try:
            chain = await asyncio.to_thread(self.service.create_certificate, request.csr,
                                            request.validity_duration, token, context.peer())
        except Refusal as e:
            await context.abort(e.code, e.reason)
            raise  # abort raises; this is for the type checker
        except Exception:
            log.exception("CA: signing failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while signing (see the control plane log)")
            raise
        return istio_ca_pb2.IstioCertificateResponse(cert_chain=chain)


def add_to_server(servicer: IstioCertificateServicer, server: grpc.aio.Server) -> None:
    istio_ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
