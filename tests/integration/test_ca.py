"""The CA in a real `mesh_ctl serve`, called by a real grpcio client, driven by the real `mesh_ctl ca` CLI.

    mesh_ctl ca mint-token / status / root / rotate-root --run-dir RUN --> serve (management API)
    grpcio client --IstioCertificateService/CreateCertificate, authorization: Bearer--> serve (xDS port)
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from mesh_ctl.ca.authority import create_intermediate_ca, create_root_ca, fingerprint
from mesh_ctl.ca.files import cert_pem, key_pem, write_file
from mesh_ctl.ca.proto import istio_ca_pb2, istio_ca_pb2_grpc
from mesh_ctl.ca.tokens import TokenAuthority, load_or_create_key
from tests.support.procs import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)

PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
CLIENT = "spiffe://cluster.local/ns/default/sa/client"


@dataclass
class Serve:
    procs: ProcessGroup
    run_dir: Path
    xds: str
    api: str
    proc: ManagedProcess | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.python(f"serve-{self.starts}", "mesh_ctl", "serve", "--run-dir", str(self.run_dir),
                                      "--xds-address", self.xds, "--api-address", self.api)
        for address in (self.xds, self.api):
            host, port = address.rsplit(":", 1)
            wait_for_port(host, int(port), proc=self.proc.popen)

    def restart(self) -> None:
        assert self.proc is not None
        self.proc.kill(signal.SIGTERM)
        self.proc.popen.wait(timeout=15)
        self.start()

    def log(self) -> str:
        return "".join(p.output() for p in self.procs.procs)

    def cli(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "mesh_ctl", "ca", *args, "--run-dir", str(self.run_dir)],
                              capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
        if check is not None:
            assert done.returncode == check, f"ca {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("status", "-o", "json").stdout)
        return result

    def token(self, namespace: str = "default", sa: str = "payment", ttl: str = "1h") -> str:
        return self.cli("mint-token", "--namespace", namespace, "--service-account", sa, "--ttl", ttl).stdout.strip()

    def create(self, spiffe_id: str, token: str | None, ttl: int = 0) -> list[x509.Certificate]:
        """CreateCertificate as istio-agent calls it; the chain, or the grpc.RpcError raised."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
               .sign(key, hashes.SHA256()))
        request = istio_ca_pb2.IstioCertificateRequest(csr=csr.public_bytes(serialization.Encoding.PEM).decode(),
                                                       validity_duration=ttl)
        request.metadata.update({"ClusterID": "Kubernetes"})
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        with grpc.insecure_channel(self.xds) as channel:
            stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(channel)  # type: ignore[no-untyped-call]
            response = stub.CreateCertificate(request, metadata=metadata, timeout=10)
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in response.cert_chain]
        assert chain[0].public_key() == key.public_key()
        return chain

    def refused(self, spiffe_id: str, token: str | None) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            self.create(spiffe_id, token)
        return info.value

    def bundle(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.cli("root").stdout.encode())


@pytest.fixture
def serve(procs: ProcessGroup, tmp_path: Path) -> Iterator[Serve]:
    s = Serve(procs, tmp_path / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    yield s


def verify(leaf: x509.Certificate, intermediates: list[x509.Certificate], bundle: list[x509.Certificate],
           ) -> list[x509.Certificate]:
    """Path validation of a workload certificate (as a TLS client certificate) against the trust bundle."""
    verifier = verification.PolicyBuilder().store(verification.Store(bundle)).build_client_verifier()
    return list(verifier.verify(leaf, intermediates).chain)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what}")
        time.sleep(0.1)


def issuer_root(chain: list[x509.Certificate]) -> str:
    return fingerprint(chain[-1])


def test_a_workload_gets_its_own_identity_and_nothing_else(serve: Serve) -> None:
    serve.start()
    token = serve.token(sa="payment")
    chain = serve.create(PAYMENT, token, ttl=120)
    bundle = serve.bundle()
    assert len(chain) == 2 and chain[-1] == bundle[0]  # [leaf, root], Istio's order
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [PAYMENT]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc) == timedelta(seconds=120 + 120)  # + skew grace
    assert verify(leaf, [], bundle) == chain
    assert (serve.run_dir / "certs" / "ca" / "root-key.pem").stat().st_mode & 0o777 == 0o600
    assert (serve.run_dir / "certs" / "ca" / "token-key.pem").stat().st_mode & 0o777 == 0o600

    # the same caller asking for another workload's identity
    denied = serve.refused(CLIENT, token)
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert denied.details() == f"requested identity {CLIENT} does not match the caller's token identity {PAYMENT}"

    # an expired token, signed with the control plane's real key
    key, _ = load_or_create_key(serve.run_dir / "certs" / "ca")
    real = TokenAuthority(key, "minimesh/cluster.local")
    expired = real.mint("default", "payment", timedelta(minutes=1), now=time.time() - 3600)
    e = serve.refused(PAYMENT, expired)
    assert e.code() is grpc.StatusCode.UNAUTHENTICATED and "expired" in (e.details() or "")

    # a forged token: the right key id and claims, signed by someone else's key
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))
    forger = TokenAuthority(ec.generate_private_key(ec.SECP256R1()), real.issuer)
    forged = forger.sign({"alg": "ES256", "typ": "JWT", "kid": real.key_id}, claims)
    e = serve.refused(PAYMENT, forged)
    assert e.code() is grpc.StatusCode.UNAUTHENTICATED and "bad signature" in (e.details() or "")

    # no token; a CSR for two identities
    e = serve.refused(PAYMENT, None)
    assert e.code() is grpc.StatusCode.UNAUTHENTICATED
    e = serve.refused("spiffe://other.domain/ns/default/sa/payment", token)
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT and "trust domain" in (e.details() or "")

    status = serve.status()
    assert status["issued"] == 1
    assert status["refused"] == {"PERMISSION_DENIED": 1, "UNAUTHENTICATED": 3, "INVALID_ARGUMENT": 1}
    log = serve.log()
    refusals = [line for line in log.splitlines() if "CA refused a certificate" in line]
    assert len(refusals) == 5  # every refusal is logged ...
    mismatch = next(line for line in refusals if "does not match" in line)
    assert f"claimed identity {CLIENT}" in mismatch and "peer ipv4:127.0.0.1:" in mismatch  # ... with who and where
    assert any("expired" in line and "claimed identity default/payment (unverified token)" in line
               for line in refusals)
    assert any(f"CA issued {PAYMENT} serial" in line for line in log.splitlines())


def test_root_rotation_end_to_end(serve: Serve) -> None:
    """bundle [old] -> [old, new] (old signs) -> [old, new] (new signs) -> [new], across a restart."""
    serve.start()
    token = serve.token(sa="client")
    old = serve.bundle()
    assert len(old) == 1
    before = serve.create(CLIENT, token, ttl=6)  # the old root's last certificate: valid 6 s
    serve.cli("rotate-root", "--publish-delay", "3s")

    status = serve.status()
    assert status["phase"] == "publishing"
    both = serve.bundle()
    assert both[0] == old[0] and len(both) == 2  # old first, the new root joins the bundle
    during = serve.create(CLIENT, token, ttl=6)
    assert issuer_root(during) == fingerprint(old[0])  # published, not yet signing
    again = serve.cli("rotate-root", check=1)
    assert "already in progress" in again.stderr

    wait_until("the new root signs", lambda: serve.status()["phase"] == "switched")
    after = serve.create(CLIENT, token, ttl=12)
    assert issuer_root(after) == fingerprint(both[1])
    assert serve.bundle() == both  # the old root stays trusted while its certificates are valid
    for chain in (before, during, after):
        if chain[0].not_valid_after_utc.timestamp() > time.time():
            assert verify(chain[0], [], both)[-1] == chain[-1]

    serve.restart()  # the phase survives the control plane
    st = serve.status()
    assert st["phase"] in ("switched", "stable") and st["signing"]["fingerprint"] == fingerprint(both[1])
    wait_until("the old root leaves the bundle", lambda: serve.status()["phase"] == "stable", timeout=20)
    assert serve.bundle() == [both[1]]
    assert verify(after[0], [], serve.bundle()) == after
    with pytest.raises(verification.VerificationError):
        verify(during[0], [], serve.bundle())  # (expired anyway by now)
    assert not (serve.run_dir / "certs" / "ca" / "roots" / fingerprint(old[0])).exists()

    # a second rotation, followed with --wait: the current root's last certificate (`after`) ends it
    serve.create(CLIENT, token, ttl=2)
    done = serve.cli("rotate-root", "--publish-delay", "1s", "--wait", "--timeout", "60s")
    assert "rotation complete" in done.stdout and "-> switched" in done.stdout
    assert len(serve.bundle()) == 1 and serve.bundle() != [both[1]]
    log = serve.log()
    assert log.count("rotation started: new root published in the trust bundle") == 2
    assert "trust bundle changed: 2 root(s)" in log and "trust bundle changed: 1 root(s)" in log


def test_plugged_in_cacerts_with_an_intermediate(serve: Serve) -> None:
    """Istio's cacerts in <run dir>/cacerts: the intermediate signs, the operator's root anchors the chain."""
    root = create_root_ca("corp.example")
    intermediate = create_intermediate_ca(root, "cluster.local", common_name="mesh CA")
    cacerts = serve.run_dir / "cacerts"
    write_file(cacerts / "ca-cert.pem", cert_pem(intermediate.cert), 0o644)
    write_file(cacerts / "ca-key.pem", key_pem(intermediate.key), 0o600)
    write_file(cacerts / "root-cert.pem", cert_pem(root.cert), 0o644)
    write_file(cacerts / "cert-chain.pem", cert_pem(intermediate.cert, root.cert), 0o644)
    serve.start()
    assert serve.bundle() == [root.cert]
    chain = serve.create(PAYMENT, serve.token(sa="payment"))
    assert chain[1:] == [intermediate.cert, root.cert]
    assert verify(chain[0], [intermediate.cert], [root.cert]) == chain
    refused = serve.cli("rotate-root", check=1)
    assert "plug-in certificates" in refused.stderr
    assert serve.status()["mode"] == "plugin"


def test_broken_cacerts_stop_the_control_plane_with_a_clear_error(procs: ProcessGroup, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    root = create_root_ca("corp.example")
    other = create_root_ca("other.example")
    intermediate = create_intermediate_ca(root, "cluster.local")
    cacerts = run_dir / "cacerts"
    write_file(cacerts / "ca-cert.pem", cert_pem(intermediate.cert), 0o644)
    write_file(cacerts / "ca-key.pem", key_pem(other.key), 0o600)  # not the intermediate's key
    write_file(cacerts / "root-cert.pem", cert_pem(root.cert), 0o644)
    proc = procs.python("serve", "mesh_ctl", "serve", "--run-dir", str(run_dir), "--xds-address",
                        f"127.0.0.1:{free_port()}", "--api-address", f"127.0.0.1:{free_port()}")
    assert proc.popen.wait(timeout=30) == 1
    assert "cannot start" in proc.output() and "ca-key.pem does not match the public key" in proc.output()
