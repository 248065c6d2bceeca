"""Issue 4's acceptance tests: mutual TLS, identities and authorization on a real mesh, with real TLS everywhere.

One mesh for the module, started as a user starts it: ``mesh_ctl up --detach --non-mesh-client --cert-ttl 6s``
on addresses of its own (workloads on 127.x.y.10-12, the client outside the mesh on .13, the control plane on
.9), driven through the CLI (`mtls`, `apply`, `delete`, `ca`, `proxy-config secret`, `status`)::

    client --h2c--> client sidecar ==mTLS==> payment-v1 / payment-v2 sidecars --h2c--> apps
    legacy-client (no sidecar) --h2c--> payment-v1 sidecar :15006      (PERMISSIVE: accepted; STRICT: refused)
    this test: load through the client sidecar; its own TLS clients (ssl + h2) to payment-v1's :15006 with
               certificates from another CA, expired, or issued by the mesh's CA to an `intruder`
    sidecars' identity agents --CSR + token--> the control plane's CA (6 s certificates: renewed every ~3 s)

Each test leaves the mesh as it found it (PERMISSIVE, no policy), so they also run one by one; the last one
rotates the root. "Refused at the handshake" is checked on both ends: the TLS client gets the server's alert
(or its connection closed) and no gRPC answer, and the sidecar counts and logs the failure. Every negative
case has its positive twin (the same client with a valid certificate, the same policy without the DENY ...),
so none of them can pass because the client is broken.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca.proto import istio_ca_pb2, istio_ca_pb2_grpc
from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.certs import TestCA
from tests.support.live_mesh import Load, Mesh, failures, requests_total, wait_until

pytestmark = pytest.mark.timeout(300)

TTL_S = 6
NON_MESH_RPS = 5
TRUST = "cluster.local/ns/default/sa"
SPIFFE = {sa: f"spiffe://{TRUST}/{sa}" for sa in ("client", "payment", "intruder")}
ISTIO_ALPN = ["istio-peer-exchange", "istio", "h2"]  # what a sidecar offers (Istio's mTLS chains match on it)
DENIED = (7, "RBAC: access denied")  # PERMISSION_DENIED, as Envoy's RBAC filter answers

ALLOW_ONLY_CLIENT = f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-client, namespace: default}}
spec:
  selector: {{matchLabels: {{app: payment}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{TRUST}/client"]}}}}]
"""
DENY_REFUND = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-refund, namespace: default}
spec:
  selector: {matchLabels: {app: payment}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/payment.PaymentService/Refund"]}}]
"""
ALLOW_IP_BLOCK = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-ip, namespace: default}}
spec:
  selector: {{matchLabels: {{app: payment}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{ipBlocks: ["{ip}/32"]}}}}]
"""
ALLOW_NOTHING = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"""


# ------------------------------------------------------------------------------------------------ the mesh


class SecureMesh(Mesh):
    """:class:`Mesh` plus what these tests read: logs, sidecars' /certs and counters, the clients' summaries."""

    def log(self, name: str) -> str:
        return (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def admin(self, workload: str) -> str:
        return str(self.workload(workload)["sidecar"]["addresses"]["admin"])

    def inbound(self, workload: str) -> str:
        return str(self.workload(workload)["sidecar"]["addresses"]["inbound"])

    def xds(self) -> str:
        return next(p for p in self.state().processes if p.role == "control-plane").addresses["xds"]

    def certs(self, workload: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.admin(workload)}/certs", timeout=5) as r:
            return dict(json.load(r))

    def counter(self, workload: str, name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", self.prometheus(workload), re.MULTILINE)
        assert m, f"{workload}: no {name} in /stats/prometheus"
        return float(m.group(1))

    def summary(self, client: str) -> dict[str, Any]:
        return next(s for s in self.status()["summary"] if s["client"] == client)

    def wait_report(self, client: str, after: float, timeout: float = 10.0) -> dict[str, Any]:
        """The client's summary once it covers ``after`` + 1 s of its run (a report finished since)."""
        wait_until(f"a report of {client} after {after:.0f} s", lambda: self.summary(client)["elapsed_s"] >= after + 1,
                   timeout)
        return self.summary(client)

    def ca(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("ca", *args)

    def token(self, service_account: str) -> str:
        return self.ca("mint-token", "--namespace", "default", "--service-account", service_account,
                       "--ttl", "1h").stdout.strip()

    def roots(self) -> list[str]:
        status = json.loads(self.ca("status", "-o", "json").stdout)
        return [str(r["fingerprint"]) for r in status["bundle"]]

    def delete(self, name: str, text: str) -> None:
        self.cli("delete", "-f", str(self.write(name, text)))
        self.wait_converged()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureMesh]:
    work = tmp_path_factory.mktemp("security")
    m = SecureMesh(work / "run", work)
    try:
        m.up("--rps", "20", "--concurrency", "2", "--non-mesh-client", "--non-mesh-rps", str(NON_MESH_RPS),
             "--cert-ttl", f"{TTL_S}s")
        m.wait_converged()
        yield m
    finally:
        m.stop()


# ------------------------------------------------------------------------------------------------ TLS clients


@dataclass(frozen=True)
class Identity:
    """A certificate (chain) and its key, as files."""

    cert: Path
    key: Path


def write_identity(directory: Path, name: str, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey,
                   ) -> Identity:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return Identity(cert, key_file)


def csr_for(spiffe_id: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def create_certificate(xds: str, token: str, spiffe_id: str, validity_s: int = 20,
                       ) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """istio-agent's call: CreateCertificate(CSR for ``spiffe_id``) with ``authorization: Bearer <token>``.
    Raises grpc.RpcError when the CA refuses. Short-lived: a root leaves the trust bundle only once every
    certificate it signed has expired, so a long one would hold up the rotation test."""
    csr, key = csr_for(spiffe_id)
    request = istio_ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=validity_s)
    request.metadata.update({"ClusterID": "Kubernetes"})
    with grpc.insecure_channel(xds) as channel:
        stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.CreateCertificate(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
    return [x509.load_pem_x509_certificate(p.encode()) for p in response.cert_chain], key


def sign_with_mesh_root(run_dir: Path, spiffe_id: str, not_before: datetime.datetime,
                        not_after: datetime.datetime) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """A workload certificate signed with the signing root's key from the run dir (what a stolen CA key, or a
    CA that ignores dates, would produce)."""
    ca = run_dir / "certs" / "ca"
    root = x509.load_pem_x509_certificate((ca / "root-cert.pem").read_bytes())
    root_key = serialization.load_pem_private_key((ca / "root-key.pem").read_bytes(), None)
    assert isinstance(root_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey), type(root_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(root_key, hashes.SHA256()))
    return [cert, root], key


def call_over_mtls(address: str, who: Identity, method: str = "Charge", timeout: float = 5.0) -> tuple[int, str]:
    """One unary gRPC call to a sidecar's inbound port over mTLS, presenting ``who``: (grpc-status,
    grpc-message). Our own client (ssl + h2), because grpcio checks the server's hostname and a sidecar's
    certificate has no DNS name, only its SPIFFE ID. Raises ssl.SSLError / OSError when the server refuses
    the handshake (with TLS 1.3 the client learns it from the server's alert on its first read)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server is not under test here: its identity is checked elsewhere
    ctx.load_cert_chain(who.cert, who.key)
    ctx.set_alpn_protocols(ISTIO_ALPN)
    request = pb.ChargeRequest(customer_id="cust-1", amount=100, currency="EUR").SerializeToString() \
        if method == "Charge" else pb.ServerStatsRequest().SerializeToString()
    with socket.create_connection((host, int(port)), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "https"), (":path", api.path(method)),
                                   (":authority", "payment:8080"), ("content-type", "application/grpc"),
                                   ("te", "trailers")])
        conn.send_data(stream, b"\0" + len(request).to_bytes(4, "big") + request, end_stream=True)
        tls.sendall(conn.data_to_send())
        headers: dict[str, str] = {}
        while True:
            data = tls.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection before answering")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers.update((str(k), str(v)) for k, v in event.headers)  # str: header_encoding
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return int(headers.get("grpc-status", "-1")), unquote(headers.get("grpc-message", ""))
            tls.sendall(conn.data_to_send())


def refused(address: str, who: Identity) -> str:
    """The error of a handshake the server refuses (fails the test if the call gets an answer)."""
    try:
        answer = call_over_mtls(address, who)
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    raise AssertionError(f"the handshake was accepted: the call answered {answer}")


def call_through_mesh(target: str, method: str) -> tuple[str, str]:
    """One call through the client's sidecar (outbound, as the client app makes it): (status name, message)."""
    with grpc.insecure_channel(target, options=api.channel_options("payment:8080")) as channel:
        stub = api.Stub(channel)
        try:
            if method == "Refund":
                stub.Refund(pb.RefundRequest(payment_id="pay-demo-1", amount=100, reason="test"), timeout=5)
            else:
                stub.Charge(pb.ChargeRequest(customer_id="cust-1", amount=100, currency="EUR"), timeout=5)
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    return "OK", ""


def outcomes(target: str, method: str, n: int = 10) -> set[tuple[str, str]]:
    """The distinct outcomes of ``n`` calls (on new connections: both payment versions get some)."""
    return {call_through_mesh(target, method) for _ in range(n)}


@pytest.fixture
def intruder(mesh: SecureMesh, tmp_path: Path) -> Identity:
    """A genuine certificate (20 s) from the mesh's CA for service account ``intruder`` (its token proves it)."""
    chain, key = create_certificate(mesh.xds(), mesh.token("intruder"), SPIFFE["intruder"])
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE["intruder"]]
    return write_identity(tmp_path / "intruder", "intruder", chain, key)


# ------------------------------------------------------------------------------------------------ 1. PERMISSIVE


def test_permissive_by_default_the_client_outside_the_mesh_gets_through_in_plaintext(mesh: SecureMesh) -> None:
    """No PeerAuthentication: PERMISSIVE. legacy-client's plaintext calls to payment-v1's inbound port all
    succeed; payment-v1's sidecar counts them as ``connection_security_policy="none"`` with no principal, and
    the mesh client's as ``mutual_tls`` from spiffe://.../sa/client."""
    wait_until("legacy-client's first 10 calls", lambda: mesh.summary("legacy-client")["requests"] >= 10, 20)
    before = mesh.summary("legacy-client")
    text = mesh.prometheus("payment-v1")
    after = mesh.wait_report("legacy-client", before["elapsed_s"] + 1.5)
    dest = {"reporter": "destination"}
    plaintext = requests_total(text, **dest, connection_security_policy="none")
    mtls = requests_total(text, **dest, connection_security_policy="mutual_tls")
    print(f"\nlegacy-client {after['requests']} calls, {after['errors']} errors; payment-v1's sidecar: "
          f"{plaintext:.0f} plaintext, {mtls:.0f} mutual TLS requests")
    assert after["errors"] == 0 and after["by_status"] == {"OK": after["requests"]}, after
    assert after["by_version"] == {"v1": after["requests"]}  # straight to payment-v1, no routing
    assert after["note"] == "outside the mesh: no sidecar, plaintext"
    # Every plaintext request the sidecar counted is one of legacy-client's (the sidecar counts a call
    # before the client hears its answer, so the client's count before <= the sidecar's <= its count after).
    assert before["requests"] <= plaintext <= after["requests"], (before["requests"], plaintext, after["requests"])
    assert requests_total(text, **dest, connection_security_policy="none", source_principal="unknown",
                          source_workload="unknown") == plaintext
    assert mtls > 0 and requests_total(text, **dest, connection_security_policy="mutual_tls",
                                       source_principal=SPIFFE["client"], source_workload="client") == mtls
    assert "FAIL" not in mesh.log("legacy-client")
    # The access log (Istio's format + gRPC status and peer identities) says the same, call by call: the
    # mesh client's calls come from its own address with its SPIFFE ID; legacy-client's have no identity.
    lines = [line for line in mesh.log("payment-v1-sidecar").splitlines() if '"POST /payment.' in line]
    client_ip = mesh.workload("client")["address"]
    from_client = [line for line in lines if line.endswith(f' OK "{SPIFFE["client"]}" "-"')]
    anonymous = [line for line in lines if line.endswith(' OK "-" "-"')]
    assert from_client and all(f" {client_ip}:" in line for line in from_client), lines[-5:]
    assert len(anonymous) >= before["requests"] and all(" inbound|8080|| " in line for line in anonymous), \
        lines[-5:]
    outbound = [line for line in mesh.log("client-sidecar").splitlines() if '"POST /payment.' in line]
    assert outbound and all(line.endswith(f' "-" "{SPIFFE["payment"]}"') for line in outbound[-20:]), outbound[-3:]
    status = mesh.cli("status").stdout
    assert re.search(r"legacy-client \(outside the mesh: no sidecar, plaintext\): .* errors 0 ", status), status
    assert re.search(r"^legacy-client +- +127\.\S+\.13 .* none \(outside the mesh\)$", status, re.MULTILINE), status


def test_proxy_config_secret_shows_the_certificate_in_use(mesh: SecureMesh) -> None:
    """`proxy-config secret payment-v1`: its own certificate (the SPIFFE ID of its service account, issued by
    its agent, valid for the 6 s asked for) and the CA's root, whose fingerprint `ca status` shows too."""
    roots = mesh.roots()
    table = mesh.cli("proxy-config", "secret", "payment-v1").stdout
    view = json.loads(mesh.cli("proxy-config", "secret", "payment-v1", "-o", "json").stdout)
    head, *rows = table.splitlines()[:3]
    assert head.split() == ["RESOURCE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER", "NOT",
                            "AFTER", "NOT", "BEFORE", "DAYS", "LEFT", "SPIFFE", "ID"], table
    assert rows[0].split()[:5] == ["default", "Cert", "Chain", "ACTIVE", "true"], table
    assert rows[0].split()[-1] == SPIFFE["payment"] and rows[1].split()[:4] == ["ROOTCA", "CA", "ACTIVE", "true"]
    assert table.rstrip().endswith(f"ROOTCA: trust bundle of 1 root, SHA-256 fingerprints:\n  {roots[0]}"), table

    [own, root] = view["secrets"]
    assert (own["name"], own["type"], own["valid"], own["spiffe_ids"]) == ("default", "Cert Chain", True,
                                                                           [SPIFFE["payment"]])
    issued = re.findall(r"certificate issued: serial=([0-9a-f]+) spiffe_id=(\S+)", mesh.log("payment-v1-sidecar"))
    assert own["serial_number"].lstrip("0") in {serial.lstrip("0") for serial, _ in issued}
    assert {spiffe_id for _, spiffe_id in issued} == {SPIFFE["payment"]}
    lifetime = (datetime.datetime.fromisoformat(own["not_after"]) - datetime.datetime.now(datetime.UTC))
    assert own["days_left"] == 0 and 0 <= own["seconds_left"] <= TTL_S and lifetime.total_seconds() <= TTL_S
    assert (root["name"], root["type"], root["fingerprint_sha256"]) == ("ROOTCA", "CA", roots[0])
    assert view["root_fingerprints_sha256"] == roots


# ------------------------------------------------------------------------------------------------ 2. STRICT


def test_strict_refuses_plaintext_at_the_handshake_while_mesh_traffic_flows(mesh: SecureMesh) -> None:
    """`mesh_ctl mtls strict`: within seconds every call of legacy-client fails with UNAVAILABLE, its status
    and its own log say the server closed the connection during the handshake, payment-v1's sidecar logs and
    counts refused plaintext connections, no plaintext request reaches the app any more, and not one mesh call
    fails meanwhile. `mesh_ctl mtls permissive` lets legacy-client through again."""
    sidecar_log = len(mesh.log("payment-v1-sidecar"))
    refused_before = mesh.counter("payment-v1", "envoy_listener_downstream_plaintext_refused")
    mesh_client = mesh.summary("client")
    try:
        with Load(mesh.client_target(), rps=50, concurrency=8) as load:
            wait_until("50 mesh calls before the change", lambda: len(load.calls) >= 50, timeout=30)
            t0 = time.monotonic()
            out = mesh.cli("mtls", "strict").stdout
            assert "PeerAuthentication istio-system/default (mesh-wide)" in out and "-> STRICT" in out, out

            def failing_now() -> bool:
                now = mesh.summary("legacy-client")["recent_by_status"]
                return set(now) == {"UNAVAILABLE"}

            delay = wait_until("every legacy-client call of an interval fails", failing_now, timeout=10)
            wait_until("3 plaintext connections refused and 200 mesh calls made", lambda: mesh.counter(
                "payment-v1", "envoy_listener_downstream_plaintext_refused") - refused_before >= 3
                and len(load.calls) >= 200, timeout=20)
            legacy = mesh.wait_report("legacy-client", mesh.summary("legacy-client")["elapsed_s"])
        calls = load.calls
        text = mesh.prometheus("payment-v1")
        status = mesh.cli("status").stdout
    finally:
        mesh.cli("mtls", "permissive")
    print(f"\nSTRICT: legacy-client failing {delay:.1f} s after `mtls strict` ({time.monotonic() - t0:.1f} s ago); "
          f"{len(calls)} mesh calls, {len(failures(calls))} failed")
    assert delay <= 5.0
    assert not failures(calls) and len(calls) >= 200, failures(calls)[:5]
    after_client = mesh.wait_report("client", mesh.summary("client")["elapsed_s"])
    assert after_client["errors"] == mesh_client["errors"] == 0, after_client

    message = legacy["first_errors"]["UNAVAILABLE"]
    assert "failed to connect to all addresses" in message and "Socket closed" in message, message
    assert "closed the connection during the handshake" in legacy["hints"]["UNAVAILABLE"]
    assert re.search(r"legacy-client \(outside the mesh: no sidecar, plaintext\): .* now OK=0 UNAVAILABLE=\d+",
                     status), status
    assert "first UNAVAILABLE: failed to connect to all addresses" in status
    client_log = mesh.log("legacy-client")
    assert re.search(r"payment-client: \[\d+\.\ds\] calls to \S+:15006 FAIL: \d+ of \d+ in the last", client_log)
    assert "Socket closed" in client_log and "closed the connection during the handshake" in client_log

    # The sidecar: refused plaintext, said so, counted it; the app got no plaintext request since (the
    # sidecar's count of plaintext requests is exactly the number legacy-client saw succeed).
    new_lines = mesh.log("payment-v1-sidecar")[sidecar_log:]
    assert re.search(r"plaintext HTTP/2 \(h2c\) connection from \S+ refused: this listener requires \(m\)TLS "
                     r"\(PeerAuthentication STRICT\)", new_lines), new_lines[-2000:]
    refused_after = float(re.findall(r"^envoy_listener_downstream_plaintext_refused (\S+)$", text, re.M)[0])
    assert refused_after - refused_before >= 3, (refused_before, refused_after)
    assert requests_total(text, reporter="destination", connection_security_policy="none") == \
        legacy["by_status"]["OK"]

    # PERMISSIVE again: legacy-client recovers by itself (its channel reconnects within a second).
    wait_until("legacy-client's calls succeed again",
               lambda: set(mesh.summary("legacy-client")["recent_by_status"]) == {"OK"}, timeout=10)
    assert re.search(r"calls to \S+:15006 succeed again", mesh.log("legacy-client"))


# ------------------------------------------------------------------------------------------------ 3. certificates


def test_certificates_from_another_ca_or_expired_are_refused_at_the_handshake(mesh: SecureMesh, tmp_path: Path,
                                                                             intruder: Identity) -> None:
    """To payment-v1's inbound port, with the SPIFFE ID of the client: a certificate from another CA and an
    expired one signed by the mesh's own root are refused at the handshake (the server's alert says why; the
    sidecar counts both); the same certificate as the expired one, but current, is accepted."""
    address = mesh.inbound("payment-v1")
    failures_before = mesh.counter("payment-v1", "envoy_listener_downstream_tls_failures")
    log_before = len(mesh.log("payment-v1-sidecar"))
    foreign_ca = TestCA(tmp_path / "other-ca", "not the mesh's CA")
    foreign = foreign_ca.issue("client", spiffe_id=SPIFFE["client"], dns=())
    now = datetime.datetime.now(datetime.UTC)
    hour = datetime.timedelta(hours=1)
    expired = write_identity(tmp_path, "expired", *sign_with_mesh_root(mesh.run_dir, SPIFFE["client"],
                                                                       now - 2 * hour, now - hour))
    current = write_identity(tmp_path, "current", *sign_with_mesh_root(mesh.run_dir, SPIFFE["client"],
                                                                       now - 2 * hour, now + hour))

    foreign_error = refused(address, Identity(foreign.cert, foreign.key))
    expired_error = refused(address, expired)
    print(f"\nanother CA: {foreign_error}\nexpired: {expired_error}")
    assert "UNKNOWN_CA" in foreign_error, foreign_error
    assert "CERTIFICATE_EXPIRED" in expired_error, expired_error
    assert call_over_mtls(address, current) == (0, "")  # the positive twin: same root, same code, in date
    assert call_over_mtls(address, intruder) == (0, "")  # and a certificate from the CA itself
    assert mesh.counter("payment-v1", "envoy_listener_downstream_tls_failures") - failures_before == 2
    new_lines = mesh.log("payment-v1-sidecar")[log_before:]
    assert len(re.findall(r"TLS handshake with \S+ failed: .*CERTIFICATE_VERIFY_FAILED", new_lines)) == 2, new_lines


# ------------------------------------------------------------------------------------------------ 4. the CA


def test_the_ca_refuses_a_workload_asking_for_another_identity(mesh: SecureMesh) -> None:
    """A token for ``client`` with a CSR for ``payment``: PERMISSION_DENIED, logged by the control plane with
    who asked for what, and counted; the same token with a CSR for ``client`` gets its certificate."""
    refused_before = json.loads(mesh.ca("status", "-o", "json").stdout)["refused"].get("PERMISSION_DENIED", 0)
    log_before = len(mesh.log("control-plane"))
    token = mesh.token("client")
    with pytest.raises(grpc.RpcError) as info:
        create_certificate(mesh.xds(), token, SPIFFE["payment"])
    error: Any = info.value
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (f"requested identity {SPIFFE['payment']} does not match the caller's token "
                               f"identity {SPIFFE['client']}")
    chain, _ = create_certificate(mesh.xds(), token, SPIFFE["client"])  # the positive twin
    assert chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SPIFFE["client"]]
    logged = [line for line in mesh.log("control-plane")[log_before:].splitlines()
              if "CA refused a certificate" in line]
    assert len(logged) == 1 and f"claimed identity {SPIFFE['payment']}" in logged[0] and "does not match" in logged[0]
    status = json.loads(mesh.ca("status", "-o", "json").stdout)
    assert status["refused"]["PERMISSION_DENIED"] == refused_before + 1


# ------------------------------------------------------------------------------------------------ 5. authorization


def test_a_valid_certificate_with_the_wrong_spiffe_id_is_denied_by_authorization_policy(
        mesh: SecureMesh, intruder: Identity) -> None:
    """An AuthorizationPolicy allowing only cluster.local/ns/default/sa/client on the payment workloads:
    the intruder's genuine mesh certificate still passes the handshake, but its call is denied with
    PERMISSION_DENIED "RBAC: access denied"; legacy-client (no identity at all) is denied too; the mesh client
    is not. Without the policy the intruder's call succeeds."""
    address = mesh.inbound("payment-v1")
    assert call_over_mtls(address, intruder) == (0, "")
    try:
        mesh.apply("allow-client.yaml", ALLOW_ONLY_CLIENT)
        with Load(mesh.client_target(), rps=50, concurrency=4) as load:
            intruder_answer = call_over_mtls(address, intruder)
            wait_until("legacy-client denied", lambda: set(mesh.summary("legacy-client")["recent_by_status"]) ==
                       {"PERMISSION_DENIED"}, timeout=10)
            wait_until("100 mesh calls", lambda: len(load.calls) >= 100, timeout=20)
        legacy = mesh.summary("legacy-client")
    finally:
        mesh.delete("allow-client.yaml", ALLOW_ONLY_CLIENT)
    assert intruder_answer == DENIED
    assert not failures(load.calls), failures(load.calls)[:5]
    assert legacy["first_errors"]["PERMISSION_DENIED"] == DENIED[1]
    assert call_over_mtls(address, intruder) == (0, "")  # the policy is gone
    wait_until("legacy-client allowed again",
               lambda: set(mesh.summary("legacy-client")["recent_by_status"]) == {"OK"}, timeout=10)


def test_deny_beats_allow_and_an_empty_policy_denies_everything(mesh: SecureMesh) -> None:
    """ALLOW everything from client + DENY Refund: Refund is denied, Charge allowed (and Refund was allowed
    before the DENY). Then `spec: {}` alone: every call denied; deleted: calls go through again."""
    target = mesh.client_target()
    try:
        mesh.apply("allow-client.yaml", ALLOW_ONLY_CLIENT)
        assert outcomes(target, "Refund") == outcomes(target, "Charge") == {("OK", "")}
        mesh.apply("deny-refund.yaml", DENY_REFUND)
        assert outcomes(target, "Refund") == {("PERMISSION_DENIED", DENIED[1])}
        assert outcomes(target, "Charge") == {("OK", "")}
    finally:
        mesh.delete("deny-refund.yaml", DENY_REFUND)
        mesh.delete("allow-client.yaml", ALLOW_ONLY_CLIENT)
    try:
        mesh.apply("allow-nothing.yaml", ALLOW_NOTHING)
        assert outcomes(target, "Charge") == outcomes(target, "Refund") == {("PERMISSION_DENIED", DENIED[1])}
    finally:
        mesh.delete("allow-nothing.yaml", ALLOW_NOTHING)
    assert outcomes(target, "Charge") == outcomes(target, "Refund") == {("OK", "")}


def test_ip_blocks_see_each_workloads_own_address(mesh: SecureMesh) -> None:
    """Sidecars connect from their workload's address (``upstream_bind_config``, like a pod IP), so
    ``source.ipBlocks`` tells callers apart: allowing the client's address lets the mesh client through and
    denies legacy-client (no sidecar: it connects from 127.0.0.1); allowing another address denies the client."""
    client_ip = mesh.workload("client")["address"]
    target = mesh.client_target()
    policy = ALLOW_IP_BLOCK.format(ip=client_ip)
    try:
        mesh.apply("allow-ip.yaml", policy)
        assert outcomes(target, "Charge") == {("OK", "")}
        wait_until("legacy-client denied", lambda: set(mesh.summary("legacy-client")["recent_by_status"]) ==
                   {"PERMISSION_DENIED"}, timeout=10)
        mesh.apply("allow-ip.yaml", ALLOW_IP_BLOCK.format(ip="127.0.0.1"))
        assert outcomes(target, "Charge") == {("PERMISSION_DENIED", DENIED[1])}
    finally:
        mesh.delete("allow-ip.yaml", policy)
    assert outcomes(target, "Charge") == {("OK", "")}
    wait_until("legacy-client allowed again",
               lambda: set(mesh.summary("legacy-client")["recent_by_status"]) == {"OK"}, timeout=10)


# ------------------------------------------------------------------------------------------------ 6. rotation


def _leaf_and_roots(mesh: SecureMesh, workload: str) -> tuple[str | None, tuple[str, ...], str | None]:
    """(serial of the sidecar's own certificate, its trust bundle's fingerprints, its chain file)."""
    for entry in mesh.certs(workload)["certificates"]:
        if "default" in entry["secret_names"] and entry["cert_chain"]:
            leaf = entry["cert_chain"][0]
            return leaf["serial_number"].lstrip("0"), tuple(entry["root_fingerprints_sha256"]), leaf["path"]
    return None, (), None


def _chains_to(path: str, root: x509.Certificate) -> bool:
    """Whether the chain file's leaf was signed by ``root`` (False if renewed away under our feet)."""
    try:
        leaf = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    except (OSError, ValueError):
        return False
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):  # another issuer name, key type or signature
        return False
    return True


def test_renewals_and_a_root_rotation_under_load_fail_no_request(mesh: SecureMesh) -> None:
    """At >= 100 calls/s for >= 20 s through the sidecars, with 6 s certificates: every sidecar renews at
    least 3 times (the serial in its /certs changes) and `mesh_ctl ca rotate-root --publish-delay 2s` runs its
    course ([old] -> [old, new] -> [new], seen in every sidecar's bundle): zero failed calls. Afterwards each
    sidecar trusts only the new root and its certificate chains to it."""
    sidecars = ("payment-v1", "payment-v2", "client")
    [old_root] = mesh.roots()
    mesh_client = mesh.wait_report("client", mesh.summary("client")["elapsed_s"])  # up to now (earlier denials)
    serials: dict[str, list[str]] = {w: [] for w in sidecars}
    bundles: dict[str, list[tuple[str, ...]]] = {w: [] for w in sidecars}
    new_root: str | None = None
    with Load(mesh.client_target(), rps=120, concurrency=16) as load:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            for w in sidecars:
                serial, roots, _ = _leaf_and_roots(mesh, w)
                if serial and (not serials[w] or serials[w][-1] != serial):
                    serials[w].append(serial)
                if roots and (not bundles[w] or bundles[w][-1] != roots):
                    bundles[w].append(roots)
            if new_root is None and elapsed >= 4.0:
                out = mesh.ca("rotate-root", "--publish-delay", "2s").stdout
                assert "publishing" in out, out
                new_root = mesh.roots()[-1]
            done = new_root is not None and all(bundles[w][-1] == (new_root,) for w in sidecars)
            if elapsed >= 22.0 and done:
                break
            assert elapsed < 60.0, f"the rotation did not complete: {bundles}"
            time.sleep(0.25)
    calls = load.calls
    duration = calls[-1].start - calls[0].start
    print(f"\n{len(calls)} calls in {duration:.1f} s ({len(calls) / duration:.0f}/s), {len(failures(calls))} "
          f"failed; certificates per sidecar: {({w: len(s) for w, s in serials.items()})}; bundles seen: "
          f"{({w: [len(b) for b in bs] for w, bs in bundles.items()})}")
    assert not failures(calls), failures(calls)[:10]
    assert duration >= 20.0 and len(calls) / duration >= 100.0, (len(calls), duration)
    after = mesh.wait_report("client", mesh.summary("client")["elapsed_s"])
    assert after["by_status"]["OK"] > mesh_client["by_status"]["OK"]
    assert {k: v for k, v in after["by_status"].items() if k != "OK"} == \
        {k: v for k, v in mesh_client["by_status"].items() if k != "OK"}, (mesh_client, after)
    assert new_root is not None and new_root != old_root
    for w in sidecars:
        assert len(serials[w]) >= 4, (w, serials[w])  # the certificate in use at the start + >= 3 renewals
        assert bundles[w] == [(old_root,), (old_root, new_root), (new_root,)], (w, bundles[w])
    assert json.loads(mesh.ca("status", "-o", "json").stdout)["phase"] == "stable"
    root_cert = x509.load_pem_x509_certificate((mesh.run_dir / "certs" / "ca" / "root-cert.pem").read_bytes())
    assert root_cert.fingerprint(hashes.SHA256()).hex() == new_root

    def all_chain_to_new_root() -> bool:
        return all(_chains_to(str(_leaf_and_roots(mesh, w)[2]), root_cert) for w in sidecars)

    wait_until("every sidecar's certificate chains to the new root", all_chain_to_new_root, timeout=5)
