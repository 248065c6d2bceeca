"""The sidecar's identity agent against the real CA: a real `mesh_ctl serve` (ADS + CreateCertificate on its
xDS port), a real pyproxy with ``--ca-address`` and a token minted by the control plane.

    pyproxy --ca-address XDS --token-path TOKEN --cert-ttl 5s
        key + CSR -> CreateCertificate (Bearer token) -> chain -> SDS default/ROOTCA -> TLS listener "probe"
    test: /ready, /certs, TLS handshakes with the probe listener (the certificate it presents), the logs

The bootstrap adds a static TLS listener ("probe", on its own free port) whose DownstreamTlsContext takes
``default`` and ``ROOTCA`` over SDS, so the test sees which certificate new connections get whatever the
control plane pushes.
"""

from __future__ import annotations

import json
import random
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mesh_ctl.addressing import can_bind
from tests.support.procs import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)

SPIFFE = "spiffe://cluster.local/ns/default/sa/payment"
ADS = {"ads": {}, "resource_api_version": "V3"}
H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0, proc: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise AssertionError(f"{what}: the process exited\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{proc.output()[-3000:]}" if proc else ""))
        time.sleep(0.1)


def free_block() -> str:
    """A 127.a.b.10 base address whose first workload addresses are free (the control plane's listeners)."""
    for _ in range(50):
        base = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
        if all(can_bind(f"{base}.{last}", port) for last in (10, 11, 12) for port in (8080, 15001, 15006)):
            return f"{base}.10"
    raise RuntimeError("no free loopback block")


@dataclass
class ControlPlane:
    proc: ManagedProcess
    xds: str
    api: str
    base: str

    run_dir: Path

    def _auth(self) -> dict[str, str]:
        """The owner's credential, as mesh_ctl sends it (the control plane's API refuses calls without it)."""
        return {"authorization": f"Bearer {(self.run_dir / 'api-token').read_text().strip()}"}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"http://{self.api}{path}", json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json", **self._auth()})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.load(r)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(urllib.request.Request(f"http://{self.api}{path}", headers=self._auth()),
                                    timeout=10) as r:
            return json.load(r)

    def token(self, directory: Path, namespace: str, service_account: str) -> Path:
        minted = self.post("/v1/ca/tokens", {"namespace": namespace, "service_account": service_account,
                                             "ttl_s": 3600})
        path = directory / f"token-{namespace}-{service_account}"
        path.write_text(minted["token"])
        path.chmod(0o600)
        return path

    def roots(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(p.encode()) for p in self.get("/v1/ca/root")["bundle"]]


@pytest.fixture
def control_plane(procs: ProcessGroup, tmp_path: Path) -> ControlPlane:
    xds, api, base = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block()
    proc = procs.python("serve", "mesh_ctl", "serve", "--run-dir", str(tmp_path / "run"), "--xds-address", xds,
                        "--api-address", api, "--base-address", base, "--address-mode", "per-workload")
    for address in (xds, api):
        host, port = address.rsplit(":", 1)
        wait_for_port(host, int(port), timeout=30, proc=proc.popen)
    return ControlPlane(proc, xds, api, base, tmp_path / "run")


@dataclass
class Sidecar:
    proc: ManagedProcess
    admin: int
    probe: int

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def ready(self) -> bool:
        return self.get("/ready")[0] == 200

    def certs(self) -> list[dict[str, Any]]:
        status, body = self.get("/certs")
        assert status == 200, body
        return list(json.loads(body)["certificates"])

    def agent_entry(self) -> dict[str, Any] | None:
        for entry in self.certs():
            if "default" in entry["secret_names"] and entry["cert_chain"]:
                return entry
        return None

    def presented(self, roots: Path) -> x509.Certificate:
        """Handshake with the probe listener (verifying its chain with the CA's roots) and return its leaf."""
        ctx = ssl.create_default_context(cafile=str(roots))
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", self.probe), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


# The default topology's workloads: address (last byte), service account.
WORKLOADS = {"payment-v1": (10, "payment"), "payment-v2": (11, "payment"), "client": (12, "client")}


def bootstrap(cp: ControlPlane, admin: int, probe: int | None, initial_fetch_timeout: str | None = None,
              workload: str = "payment-v1") -> dict[str, Any]:
    """An Istio-shaped ADS bootstrap for ``workload`` (plus the "probe" listener when ``probe`` is a port)."""
    xds_host, xds_port = cp.xds.rsplit(":", 1)
    source = dict(ADS, initial_fetch_timeout=initial_fetch_timeout) if initial_fetch_timeout else ADS
    last, service_account = WORKLOADS[workload]
    address = f"{cp.base.rsplit('.', 1)[0]}.{last}"
    app = workload.split("-", maxsplit=1)[0]
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": ADS}],
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": ADS}}}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "probe", "route_config": {"name": "probe", "virtual_hosts": [{
            "name": "probe", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                           "direct_response": {"status": 200}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}
    return {
        "node": {"id": f"sidecar~{address}~{workload}.default~default.svc.cluster.local",
                 "cluster": f"{app}.default",
                 "metadata": {"NAMESPACE": "default", "SERVICE_ACCOUNT": service_account,
                              "CLUSTER_ID": "Kubernetes"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "lds_config": source, "cds_config": source,
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {
            "listeners": [] if probe is None else [{
                "name": "probe", "address": {"socket_address": {"address": "127.0.0.1", "port_value": probe}},
                "filter_chains": [{"transport_socket": tls, "filters": [hcm]}]}],
            "clusters": [{
                "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s", "typed_extension_protocol_options": H2,
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": xds_host, "port_value": int(xds_port)}}}}]}]}}]},
    }


def start_sidecar(procs: ProcessGroup, cp: ControlPlane, tmp_path: Path, token: Path, *extra: str,
                  initial_fetch_timeout: str | None = None, workload: str = "payment-v1",
                  probe: bool = True) -> Sidecar:
    admin, probe_port = free_port(), free_port()
    path = tmp_path / f"{workload}-sidecar.yaml"
    path.write_text(yaml.safe_dump(bootstrap(cp, admin, probe_port if probe else None, initial_fetch_timeout,
                                             workload)))
    proc = procs.python(f"{workload}-sidecar", "pyproxy", "-c", str(path), "-l", "info", "--ca-address", cp.xds,
                        "--token-path", str(token), "--secret-dir", str(tmp_path), *extra)
    return Sidecar(proc, admin, probe_port)


def issued_serials(log: str, spiffe_id: str = SPIFFE) -> list[str]:
    found = re.findall(r"certificate issued: serial=([0-9a-f]+) spiffe_id=(\S+)", log)
    assert all(issued_for == spiffe_id for _, issued_for in found), found
    return [serial for serial, _ in found]


def test_certificate_issued_shown_and_renewed_every_half_lifetime(procs: ProcessGroup, tmp_path: Path,
                                                                  control_plane: ControlPlane) -> None:
    cp = control_plane
    token = cp.token(tmp_path, "default", "payment")
    sidecar = start_sidecar(procs, cp, tmp_path, token, "--cert-ttl", "5s")  # RSA 2048, the default
    wait_until("the sidecar is ready", sidecar.ready, proc=sidecar.proc)
    started = time.monotonic()
    roots_file = tmp_path / "roots.pem"
    roots = cp.roots()
    roots_file.write_text(cp.get("/v1/ca/root")["pem"])

    # /certs: the SPIFFE ID, a serial, a not-after 5 s away, the CA's root with its fingerprint.
    entry = sidecar.agent_entry()
    assert entry is not None, sidecar.certs()
    leaf = entry["cert_chain"][0]
    assert leaf["subject_alt_names"] == [{"uri": SPIFFE}]
    assert leaf["days_until_expiration"] == "0" and re.fullmatch(r"[0-9a-f]+", leaf["serial_number"])
    assert entry["root_fingerprints_sha256"][0] in [r.fingerprint(hashes.SHA256()).hex() for r in roots]
    secret_dir = Path(leaf["path"]).parent
    assert secret_dir.parent == tmp_path and (secret_dir.stat().st_mode & 0o777) == 0o700

    # ~12 s: TLS handshakes with the probe listener all succeed and show the renewals; /certs follows.
    served: list[str] = []
    shown: set[str] = set()
    failures: list[str] = []
    while time.monotonic() - started < 12.5:
        try:
            cert = sidecar.presented(roots_file)
            served.append(format(cert.serial_number, "x"))
            assert [u.value for u in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value] \
                == [SPIFFE]
        except (OSError, ssl.SSLError) as e:
            failures.append(repr(e))
        current = sidecar.agent_entry()
        if current is not None:
            shown.add(current["cert_chain"][0]["serial_number"].lstrip("0"))
        # The files of earlier certificates are gone: only the installed key, chain and root are left.
        files = list(secret_dir.iterdir())
        assert len(files) == 3, sorted(p.name for p in files)
        for path in files:
            try:
                assert (path.stat().st_mode & 0o777) == 0o600, path
            except FileNotFoundError:  # renewed between the listing and the stat
                pass
        time.sleep(0.2)
    assert not failures, failures[:3]
    log = sidecar.proc.output()
    serials = issued_serials(log)
    assert len(serials) >= 4, log[-3000:]  # the first certificate and at least 3 renewals
    assert len(set(serials)) == len(serials)
    distinct_served = list(dict.fromkeys(served))
    assert len(distinct_served) >= 4, distinct_served
    assert set(distinct_served) <= {s.lstrip("0") for s in serials}
    assert len(shown) >= 4 and shown <= {s.lstrip("0") for s in serials}
    assert "not issued" not in log
    print(f"{len(serials)} certificates issued in {time.monotonic() - started:.1f}s; {len(served)} TLS handshakes "
          f"saw {len(distinct_served)} of them; /certs showed {len(shown)}")

    # Stopped: the private directory with the key is gone.
    assert sidecar.proc.stop() == 0
    assert not secret_dir.exists()


def test_a_token_for_another_identity_is_refused_and_the_sidecar_is_not_ready(
        procs: ProcessGroup, tmp_path: Path, control_plane: ControlPlane) -> None:
    cp = control_plane
    token = cp.token(tmp_path, "default", "client")  # the sidecar asks for .../sa/payment
    # Envoy's initial_fetch_timeout makes a proxy ready without all its resources; not without a certificate.
    sidecar = start_sidecar(procs, cp, tmp_path, token, "--key-algorithm", "ecdsa", initial_fetch_timeout="1s")
    wait_until("the CA's refusal in the sidecar's log", lambda: "not issued" in sidecar.proc.output(),
               proc=sidecar.proc)
    wait_until("the initial fetch to end (complete, or timed out: ROOTCA may not be pushed)",
               lambda: any(m in sidecar.proc.output() for m in ("initial configuration complete",
                                                                "initial fetch not complete")), proc=sidecar.proc)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status, body = sidecar.get("/ready")
        assert (status, body) == (503, b"PRE_INITIALIZING\n")
        time.sleep(0.2)
    log = sidecar.proc.output()
    refusal = next(line for line in log.splitlines() if "not issued" in line)
    assert "PERMISSION_DENIED" in refusal and SPIFFE in refusal and "no certificate yet" in refusal, refusal
    assert "certificate issued" not in log
    assert sidecar.agent_entry() is None
    # It keeps trying (back-off), each refusal logged.
    wait_until("a retry", lambda: sidecar.proc.output().count("not issued") >= 2, proc=sidecar.proc)


DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def mesh_ctl(cp: ControlPlane, run_dir: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mesh_ctl", *args, "--run-dir", str(run_dir)], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, f"mesh_ctl {' '.join(args)}: {done.stdout}{done.stderr}"


@pytest.mark.slow
def test_mtls_traffic_keeps_flowing_while_both_sidecars_renew(procs: ProcessGroup, tmp_path: Path,
                                                              control_plane: ControlPlane) -> None:
    """client --h2c--> client sidecar ==mTLS (SDS default/ROOTCA from the agents)==> payment-v1 sidecar --> app,
    with 5 s certificates on both sidecars: every call succeeds while each renews several times."""
    cp = control_plane
    base = cp.base.rsplit(".", 1)[0]
    server = procs.python("payment-v1", "payment_service.server", "--version", "v1", "--listen", f"{base}.10:8080",
                          "--name", "payment-v1")
    wait_for_port(f"{base}.10", 8080, proc=server.popen)
    sidecars = {}
    for workload in ("payment-v1", "client"):
        _, service_account = WORKLOADS[workload]
        token = cp.token(tmp_path, "default", service_account)
        sidecars[workload] = start_sidecar(procs, cp, tmp_path, token, "--cert-ttl", "5s", "--key-algorithm", "ecdsa",
                                           workload=workload, probe=False)
    for sidecar in sidecars.values():
        wait_until("the sidecar is ready", sidecar.ready, timeout=30, proc=sidecar.proc)
    (tmp_path / "dr.yaml").write_text(DR)
    mesh_ctl(cp, tmp_path / "run", "apply", "-f", str(tmp_path / "dr.yaml"))
    mesh_ctl(cp, tmp_path / "run", "set-weight", "payment", "v1=100", "v2=0")
    def pushed() -> bool:
        """Both sidecars ACKed the configuration of the store's latest revision (the 100/0 split)."""
        ps = cp.get("/v1/proxy-status")
        return (len(ps["proxies"]) == 2 and all(p["revision"] == str(ps["store_revision"]) for p in ps["proxies"])
                and {t["status"] for p in ps["proxies"] for t in p["types"]} <= {"SYNCED", "NOT SENT"})

    wait_until("both sidecars run the 100/0 split", pushed, timeout=20)
    load = procs.python("load", "payment_service.client", "--target", f"{base}.12:15001", "--authority",
                        "payment:8080", "--rps", "40", "--duration", "12", "--json", "--interval", "1")
    load.popen.wait(timeout=40)
    reports = [json.loads(line) for line in load.output().splitlines() if line.startswith("{")]
    final = reports[-1]
    for name, sidecar in sidecars.items():
        spiffe_id = f"spiffe://cluster.local/ns/default/sa/{WORKLOADS[name][1]}"
        assert len(issued_serials(sidecar.proc.output(), spiffe_id)) >= 4, f"{name}: {sidecar.proc.output()[-2000:]}"
    assert final["type"] == "final" and final["requests"] >= 400, final
    assert final["by_status"] == {"OK": final["requests"]}, final
    # No call needed a retry (a reset connection would have shown as one), and mTLS was in use throughout.
    status, body = sidecars["client"].get("/stats?format=json")
    assert status == 200, body
    stats = {s["name"]: s["value"] for s in json.loads(body)["stats"]}
    outbound = {k: v for k, v in stats.items() if k.startswith("cluster.outbound|8080|")}
    assert sum(v for k, v in outbound.items() if k.endswith(".upstream_rq_total")) >= final["requests"], outbound
    for counter in ("upstream_rq_retry", "upstream_rq_5xx", "upstream_cx_connect_fail"):
        assert sum(v for k, v in outbound.items() if k.endswith("." + counter)) == 0, (counter, outbound)
    status, body = sidecars["payment-v1"].get("/stats?format=json")
    assert status == 200, body
    inbound = {s["name"]: s["value"] for s in json.loads(body)["stats"]}
    assert inbound["listener.downstream_tls_failures"] == 0
    # The server sidecar saw the client's agent-made certificate: mTLS, with the client's SPIFFE ID.
    status, body = sidecars["payment-v1"].get("/stats/prometheus")
    served = [line for line in body.decode().splitlines() if line.startswith("istio_requests_total{")
              and 'reporter="destination"' in line]
    assert served and all('connection_security_policy="mutual_tls"' in line for line in served), served
    assert all('source_principal="spiffe://cluster.local/ns/default/sa/client"' in line for line in served), served
    # Renewals do not reset connections: the one mTLS connection opened at the start carried every call.
    assert sum(v for k, v in outbound.items() if k.endswith(".upstream_cx_total")) == 1, outbound
    print(f"{final['requests']} calls, all OK, p99 {final['latency_ms']['p99']} ms; renewals: " + ", ".join(
        f"{name} {len(issued_serials(sc.proc.output(), f'spiffe://cluster.local/ns/default/sa/{WORKLOADS[name][1]}'))}"
        for name, sc in sidecars.items()))


def test_root_rotation_with_overlap(procs: ProcessGroup, tmp_path: Path, control_plane: ControlPlane) -> None:
    """The control plane's ROOTCA (pushed over SDS) wins over the agent's own: during a rotation the sidecar
    trusts old and new roots together, its next certificate chains to the new root, and no handshake fails."""
    cp = control_plane
    token = cp.token(tmp_path, "default", "payment")
    sidecar = start_sidecar(procs, cp, tmp_path, token, "--cert-ttl", "4s", "--key-algorithm", "ecdsa")
    wait_until("the sidecar is ready", sidecar.ready, proc=sidecar.proc)
    wait_until("an SDS answer", lambda: "SDS version" in sidecar.proc.output(), proc=sidecar.proc)
    assert not re.search(r"SDS version \S+ accepted \(0 resources\)", sidecar.proc.output()), \
        "the control plane must push ROOTCA over SDS"
    [old_root] = cp.roots()

    def fingerprints() -> list[str]:
        entry = sidecar.agent_entry()
        return list(entry["root_fingerprints_sha256"]) if entry else []

    def fp(cert: x509.Certificate) -> str:
        return cert.fingerprint(hashes.SHA256()).hex()

    assert fingerprints() == [fp(old_root)]
    cp.post("/v1/ca/rotate-root", {"publish_delay_s": 3})
    both = cp.roots()
    assert len(both) == 2 and both[0] == old_root
    new_root = both[1]
    wait_until("the sidecar trusts both roots", lambda: fingerprints() == [fp(old_root), fp(new_root)],
               proc=sidecar.proc)
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(cp.get("/v1/ca/root")["pem"])
    only_new = tmp_path / "new-root.pem"
    only_new.write_text(cp.get("/v1/ca/root")["bundle"][1])

    def chains_to_new_root() -> bool:
        try:
            sidecar.presented(only_new)
        except ssl.SSLCertVerificationError:
            return False
        return True

    failures = []
    deadline = time.monotonic() + 20
    while not chains_to_new_root():
        try:
            sidecar.presented(bundle)  # whichever root signed it, the bundle verifies it
        except (OSError, ssl.SSLError) as e:
            failures.append(repr(e))
        assert time.monotonic() < deadline, "the sidecar never got a certificate from the new root"
        time.sleep(0.2)
    assert not failures, failures[:3]
    # Retire the old root: the bundle the sidecar trusts is the new root alone.
    cp.post("/v1/ca/rotate-root", {"step": True, "force": True})
    wait_until("the old root is gone from the sidecar's bundle", lambda: fingerprints() == [fp(new_root)],
               proc=sidecar.proc)
