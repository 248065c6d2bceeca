"""GrpcCaClient (pyproxy's own gRPC client) against a real grpcio server on loopback: metadata, messages that
grpcio's generated code reads, gRPC statuses, TLS verified with --ca-root, timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from pyproxy.agent.ca_client import CaError, GrpcCaClient
from pyproxy.agent.options import AgentOptions
from pyproxy.agent.proto import IstioCertificateRequest, IstioCertificateResponse
from tests.support.procs import free_port

CHAIN = ["-----BEGIN CERTIFICATE-----\nleaf\n", "-----BEGIN CERTIFICATE-----\nroot\n"]


@dataclass
class Server:
    port: int
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    behaviour: Callable[[bytes, Any], bytes] | None = None


def _serve(credentials: grpc.ServerCredentials | None) -> Iterator[Server]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = free_port()
    state = Server(port)

    def create_certificate(request: bytes, context: grpc.ServicerContext) -> bytes:
        state.seen.append(({k: str(v) for k, v in context.invocation_metadata()}, request))
        if state.behaviour is not None:
            return state.behaviour(request, context)
        return bytes(IstioCertificateResponse(cert_chain=CHAIN).SerializeToString())

    handler = grpc.method_handlers_generic_handler("istio.v1.auth.IstioCertificateService", {
        "CreateCertificate": grpc.unary_unary_rpc_method_handler(create_certificate)})
    server.add_generic_rpc_handlers((handler,))
    if credentials is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    try:
        yield state
    finally:
        server.stop(0).wait(5)


@pytest.fixture
def plain() -> Iterator[Server]:
    yield from _serve(None)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA) -> Iterator[Server]:
    cert = ca.issue_cert("istiod.istio-system.svc", "127.0.0.1")
    credentials = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
    yield from _serve(credentials)


def options(port: int, **kw: Any) -> AgentOptions:
    return AgentOptions(ca_host="127.0.0.1", ca_port=port, token_path="/unused", namespace="default",
                        service_account="payment", cluster_id="Kubernetes", **kw)


async def test_request_metadata_and_response(plain: Server) -> None:
    chain = await GrpcCaClient(options(plain.port))("CSR PEM", 5, "header.claims.signature")
    assert chain == CHAIN
    [(metadata, request)] = plain.seen
    assert metadata["authorization"] == "Bearer header.claims.signature"
    assert metadata["clusterid"] == "Kubernetes"
    decoded = IstioCertificateRequest.FromString(request)
    assert (decoded.csr, decoded.validity_duration) == ("CSR PEM", 5)


async def test_the_control_planes_generated_messages_read_ours(plain: Server) -> None:
    generated = pytest.importorskip("mesh_ctl.ca.proto.istio_ca_pb2")
    plain.behaviour = lambda request, context: generated.IstioCertificateResponse(
        cert_chain=[generated.IstioCertificateRequest.FromString(request).csr, "root"]).SerializeToString()
    assert await GrpcCaClient(options(plain.port))("the csr", 86400, "t") == ["the csr", "root"]


@pytest.mark.parametrize("code, name", [(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
                                        (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
                                        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")])
async def test_the_cas_refusal_keeps_its_status_and_words(plain: Server, code: grpc.StatusCode, name: str) -> None:
    def refuse(request: bytes, context: Any) -> bytes:
        context.abort(code, "token is for ns/default/sa/other, the CSR asks for ns/default/sa/payment")
        raise AssertionError

    plain.behaviour = refuse
    with pytest.raises(CaError) as info:
        await GrpcCaClient(options(plain.port))("csr", 5, "t")
    assert info.value.code == code.value[0]
    assert str(info.value) == f"{name}: token is for ns/default/sa/other, the CSR asks for ns/default/sa/payment"


async def test_nothing_listening() -> None:
    with pytest.raises(CaError, match=r"cannot reach the CA at 127\.0\.0\.1:") as info:
        await GrpcCaClient(options(free_port()))("csr", 5, "t")
    assert info.value.code is None


async def test_a_ca_that_does_not_answer_in_time(plain: Server) -> None:
    release = threading.Event()

    def slow(request: bytes, context: Any) -> bytes:
        release.wait(5)
        return b""

    plain.behaviour = slow
    started = time.monotonic()
    try:
        with pytest.raises(CaError, match=r"no answer from the CA .* within 0\.3s"):
            await GrpcCaClient(options(plain.port, request_timeout=0.3))("csr", 5, "t")
    finally:
        release.set()
    assert time.monotonic() - started < 2


async def test_tls_verified_with_the_ca_root(tls: Server, ca: trustme.CA, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    ca.cert_pem.write_to_path(str(root))
    assert await GrpcCaClient(options(tls.port, ca_root=str(root)))("csr", 5, "t") == CHAIN
    assert tls.seen[0][0]["authorization"] == "Bearer t"


async def test_tls_with_another_root_fails(tls: Server, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(CaError, match=r"cannot reach the CA.*(CERTIFICATE_VERIFY_FAILED|certificate verify failed)"):
        await GrpcCaClient(options(tls.port, ca_root=str(other)))("csr", 5, "t")
    assert tls.seen == []  # the token never left


async def test_plaintext_to_a_tls_ca_fails_cleanly(tls: Server) -> None:
    with pytest.raises(CaError):
        await GrpcCaClient(options(tls.port, request_timeout=2.0))("csr", 5, "t")
