"""``CreateCertificate`` over pyproxy's own gRPC client: one connection per request (renewals are rare).

    POST /istio.v1.auth.IstioCertificateService/CreateCertificate
    authorization: Bearer <the token file's content, read again for every request: tokens rotate>
    clusterid: <node metadata CLUSTER_ID>            (istio-agent's ``ClusterID`` metadata)
    IstioCertificateRequest{csr, validity_duration}  ->  IstioCertificateResponse{cert_chain}

Transport: plain h2c (istiod's 15010, loopback) or, with ``--ca-root``, TLS whose server chain must verify
against that bundle (ALPN h2; the server's name is not checked, as for every mesh-internal peer here).

Error handling: every failure is a :class:`CaError` carrying the gRPC status (``code`` None when the CA could
not be reached or the call broke), so the manager can log the CA's own words and retry.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import trio

from pyproxy.agent.options import AgentOptions
from pyproxy.agent.proto import CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse
from pyproxy.config.model import TlsContext, ValidationContext
from pyproxy.io.transport import TransportClosed
from pyproxy.tls import TlsConfigError, build_context
from pyproxy.upstream.connection import ConnectError, connect
from pyproxy.xds.grpc import GrpcChannel, GrpcError

# (csr PEM, validity in seconds, bearer token) -> cert_chain (PEM strings, leaf first). The boundary the
# SecretManager is written against; tests pass a trio function in its place.
CreateCertificate = Callable[[str, int, str], Awaitable[list[str]]]

STATUS_NAMES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
                5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL",
                14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class CaError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        text = super().__str__()
        if self.code is None:
            return text
        return f"{STATUS_NAMES.get(self.code, str(self.code))}: {text}"


class GrpcCaClient:
    """The real CA client; an instance is a :data:`CreateCertificate`."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.tls: TlsContext | None = None
        self.ssl_context: ssl.SSLContext | None = None
        if options.ca_root:
            self.tls = TlsContext(server_side=False, validation=ValidationContext(trusted_ca_file=options.ca_root),
                                  alpn_protocols=("h2",))
            try:
                self.ssl_context = build_context(self.tls)
            except TlsConfigError as e:
                raise ValueError(f"--ca-root {options.ca_root}: {e}") from e

    async def __call__(self, csr_pem: str, validity: int, token: str) -> list[str]:
        o = self.options
        metadata = [("authorization", f"Bearer {token}")]
        if o.cluster_id:
            metadata.append(("clusterid", o.cluster_id))
        request = IstioCertificateRequest(csr=csr_pem, validity_duration=validity)
        try:
            with trio.fail_after(o.request_timeout):
                message = await self._exchange(request.SerializeToString(), metadata)
        except trio.TooSlowError:
            raise CaError(f"no answer from the CA at {o.ca_address} within {o.request_timeout:g}s") from None
        except GrpcError as e:
            raise CaError(e.message or "(no message)", e.code) from None
        except (ConnectError, TransportClosed, OSError) as e:
            raise CaError(f"cannot reach the CA at {o.ca_address}: {e}") from None
        try:
            response = IstioCertificateResponse.FromString(message)
        except Exception as e:  # protobuf's DecodeError and friends
            raise CaError(f"undecodable IstioCertificateResponse: {e}", 13) from None
        return list(response.cert_chain)

    async def _exchange(self, request: bytes, metadata: list[tuple[str, str]]) -> bytes:
        """One unary call on a new connection. Errors are raised after the nursery has closed, so callers see
        the error itself rather than an exception group."""
        o = self.options
        transport = await connect(o.ca_host, o.ca_port, self.tls, self.ssl_context, o.request_timeout)
        channel = GrpcChannel(transport, o.ca_address)
        message: bytes | None = None
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.run)
            try:
                call = channel.open_call(CREATE_CERTIFICATE, metadata)
                call.send(request)
                call.close_send()
                message = await call.receive()
                if message is None:
                    error = CaError("the CA ended the call without a response", 13)
                elif await call.receive() is not None:
                    error = CaError("the CA sent more than one response to a unary call", 13)
            except GrpcError as e:
                error = e
            finally:
                nursery.cancel_scope.cancel()  # channel.run returns and closes the connection
        if error is not None:
            raise error
        assert message is not None
        return message
