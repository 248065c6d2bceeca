"""The official gRPC interop cases through two sidecars, and directly as the control group.

    interop client --h2c--> sidecar A ==mTLS h2==> sidecar B --h2c--> interop server

Every process is real (server, sidecars, one client process per case). ``INTEROP_TARGET`` picks the
sidecars: ``pyproxy`` (default; ``python -m pyproxy -c BOOTSTRAP``, or ``INTEROP_PROXY_CMD``), ``nginx``
(the same pair as nginx, for comparison) or ``direct`` (control group only). pyproxy runs every case with
the plain YAML bootstraps and a smoke set with the legacy-YAML + JSON pair.

Reading the results: ``test_control_*`` (marker ``interop_control``) run client -> server with no proxy;
when one fails, the interop client/server or this harness is broken, not the proxy, and the proxied run
of the same case is failed with a pointer to it. The module shares one time budget (< 90 s in all).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.interop.cases import CASES
from tests.interop.certs import CertPaths
from tests.interop.harness import (
    Budget,
    ClientRun,
    InteropServer,
    Sidecars,
    Stack,
    TopologyError,
    empty_call_status,
    is_ready,
    tail,
)
from tests.support.procs import ManagedProcess, ProcessGroup

MODULE_BUDGET_S = 70.0  # every wait of the module draws on it; leaves room for start-up and teardown
ALL_CASES = list(CASES)
SMOKE_CASES = [
    "empty_unary",
    "large_unary",
    "client_compressed_streaming",
    "ping_pong",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "unimplemented_service",
]
TLS_CASES = ["large_unary", "client_compressed_streaming", "ping_pong", "custom_metadata"]
PYPROXY_PAIRS = {
    "yaml": ("sidecar_a.yaml", "sidecar_b.yaml", ALL_CASES),
    "legacy_json": ("sidecar_a_legacy.yaml", "sidecar_b.json", SMOKE_CASES),
}
MTLS = "mtls_enforced"  # after the cases: sidecar B takes only our CA's client with the right identity
SURVIVED = "sidecars_survived"  # then: both sidecars still run and are ready
A_SHUTDOWN = "client_sidecar_shutdown"  # last: A stops gracefully; B must stay ready, then stop on SIGTERM
TARGET = os.environ.get("INTEROP_TARGET", "pyproxy")
if TARGET == "pyproxy":
    PAIR_CASES = {pair: cases for pair, (_, _, cases) in PYPROXY_PAIRS.items()}
elif TARGET == "nginx":
    PAIR_CASES = {"nginx": ALL_CASES}
elif TARGET == "direct":
    PAIR_CASES = {}
else:
    raise ValueError(f"INTEROP_TARGET={TARGET!r}: use pyproxy, nginx or direct")
# One parametrised test per pair, in this order, so the survival check runs after that pair's cases.
PROXIED = [
    (pair, step) for pair, cases in PAIR_CASES.items() for step in [*cases, MTLS, SURVIVED, A_SHUTDOWN]
]

CONTROL_BROKEN = (
    "CONTROL GROUP FAILED (client -> server, no proxy involved): the interop client/server or the harness "
    "is broken, not the proxy."
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, interop_certs: CertPaths) -> Iterator[Stack]:
    group = ProcessGroup(tmp_path_factory.mktemp("interop"))
    try:
        yield Stack(group, Budget(MODULE_BUDGET_S), interop_certs)
    finally:
        group.close()


@pytest.fixture(scope="module")
def server(stack: Stack) -> InteropServer:
    return stack.start_server()


@pytest.fixture(scope="module")
def tls_server(stack: Stack) -> InteropServer:
    return stack.start_server(tls=True)


@pytest.fixture(scope="module")
def control_failures() -> set[str]:
    """Cases whose control run failed (their proxied runs then say so instead of blaming the proxy)."""
    return set()


class PairPool:
    """Starts the sidecar pairs one at a time, when their first case runs, and stops the previous pair.

    (An indirectly parametrised module fixture would not do: pytest tears it down and starts it again for
    every (pair, case) tuple.) A pair that fails to start fails each of its cases at once with the reason.
    """

    def __init__(self, stack: Stack, server: InteropServer) -> None:
        self.stack, self.server = stack, server
        self.current: tuple[str, Sidecars | Exception] | None = None

    def get(self, pair: str) -> Sidecars:
        if self.current is None or self.current[0] != pair:
            self.close()
            started: Sidecars | Exception
            try:
                if pair == "nginx":
                    started = self.stack.start_nginx_pair(self.server.port)
                else:
                    a, b, _ = PYPROXY_PAIRS[pair]
                    started = self.stack.start_pyproxy_pair(self.server.port, pair, a, b)
            except (TopologyError, TimeoutError) as error:
                started = error
            self.current = (pair, started)
        value = self.current[1]
        if isinstance(value, Exception):
            pytest.fail(f"the {pair} sidecars did not start: {value}", pytrace=False)
        return value

    def close(self) -> None:
        if self.current is not None and isinstance(self.current[1], Sidecars):
            self.current[1].stop()
        self.current = None


@pytest.fixture(scope="module")
def pairs(stack: Stack, server: InteropServer) -> Iterator[PairPool]:
    pool = PairPool(stack, server)
    try:
        yield pool
    finally:
        pool.close()


def _report(run: ClientRun) -> str:
    verdict = "timed out" if run.returncode is None else f"exit {run.returncode}"
    return f"client {verdict} after {run.seconds:.1f} s:\n{run.output[-4000:]}"


@pytest.mark.interop_control
@pytest.mark.parametrize("case", ALL_CASES)
def test_control_direct(stack: Stack, server: InteropServer, control_failures: set[str], case: str) -> None:
    run = stack.run_client("direct", server.port, case)
    if not run.passed:
        control_failures.add(case)
        pytest.fail(f"{CONTROL_BROKEN}\n{_report(run)}\n{tail(server.proc)}")


@pytest.mark.interop_control
@pytest.mark.parametrize("case", TLS_CASES)
def test_control_direct_tls(stack: Stack, tls_server: InteropServer, case: str) -> None:
    """The same client and server over TLS (ALPN h2, our CA, name override): the TLS flags work."""
    run = stack.run_client("direct-tls", tls_server.port, case, tls=True)
    if not run.passed:
        pytest.fail(f"{CONTROL_BROKEN}\n{_report(run)}\n{tail(tls_server.proc)}")


@pytest.mark.interop_proxy
@pytest.mark.parametrize(("pair", "case"), PROXIED, ids=[f"{pair}-{case}" for pair, case in PROXIED])
def test_through_sidecars(
    stack: Stack, pairs: PairPool, control_failures: set[str], pair: str, case: str
) -> None:
    sidecars = pairs.get(pair)
    if case == SURVIVED:
        _check_survived(sidecars)
        return
    if case == MTLS:
        _check_mtls(sidecars, stack.certs, stack.budget)
        return
    if case == A_SHUTDOWN:
        _check_client_sidecar_shutdown(sidecars, stack.budget)
        return
    if case in control_failures:
        pytest.fail(f"{case} failed in the control group too (test_control_direct): fix the harness first")
    dead = sidecars.dead()
    if dead:
        pytest.fail(f"sidecar {dead[0].log_path.stem} is no longer running\n{sidecars.logs()}")
    run = stack.run_client(sidecars.name, sidecars.entry_port, case)
    if not run.passed:
        pytest.fail(f"{case} through the {sidecars.name} sidecars failed; {_report(run)}\n{sidecars.logs()}")


def _check_mtls(sidecars: Sidecars, certs: CertPaths, budget: Budget) -> None:
    """The hop between the sidecars really is mTLS: sidecar B serves our EmptyCall to a client holding
    sidecar A's certificate, and refuses plaintext, a client without a certificate and (pyproxy: SAN match)
    a client whose certificate is from our CA but names another SPIFFE identity."""
    port = sidecars.b_port
    ok = empty_call_status(port, certs, (certs.client_cert, certs.client_key), timeout=budget.cap(5))
    assert ok == grpc.StatusCode.OK, f"sidecar B refused sidecar A's identity: {ok}\n{sidecars.logs()}"
    refused = {
        "plaintext h2c": empty_call_status(port, certs, None, tls=False, timeout=budget.cap(5)),
        "TLS without a client certificate": empty_call_status(port, certs, None, timeout=budget.cap(5)),
    }
    if sidecars.name != "nginx":  # nginx checks the chain only, it cannot match URI SANs
        intruder = (certs.intruder_cert, certs.intruder_key)
        refused["client certificate for another identity"] = empty_call_status(
            port, certs, intruder, timeout=budget.cap(5)
        )
    accepted = [what for what, code in refused.items() if code == grpc.StatusCode.OK]
    assert not accepted, f"sidecar B served calls it must refuse: {accepted}\n{sidecars.logs()}"


def _check_survived(sidecars: Sidecars) -> None:
    """After all cases (cancellations, deadlines, errors included) both sidecars still run and are ready."""
    dead = [p.log_path.stem for p in sidecars.dead()]
    assert not dead, f"sidecars exited during the run: {dead}\n{sidecars.logs()}"
    not_ready = [port for port in sidecars.admin_ports if not is_ready(port)]
    assert not not_ready, f"admin /ready no longer 200 on ports {not_ready}\n{sidecars.logs()}"


def _exits_after_sigterm(proc: ManagedProcess, within: float) -> bool:
    proc.kill(signal.SIGTERM)
    try:
        proc.popen.wait(timeout=within)
    except subprocess.TimeoutExpired:
        return False
    return True


def _check_client_sidecar_shutdown(sidecars: Sidecars, budget: Budget) -> None:
    """Sidecar A shuts down gracefully (SIGTERM: GOAWAY, TLS close); sidecar B, which loses its downstream
    connection, must keep serving its admin /ready, and must itself stop on SIGTERM."""
    b, a = sidecars.procs
    assert _exits_after_sigterm(a, budget.cap(10)), (
        f"sidecar A still running after SIGTERM\n{sidecars.logs()}"
    )
    time.sleep(1.0)  # B notices the closed connection
    assert b.alive(), f"sidecar B exited after sidecar A shut down\n{sidecars.logs()}"
    assert is_ready(sidecars.admin_ports[0]), (
        f"sidecar B stopped answering /ready after sidecar A shut down (its mTLS connection from A closed)\n"
        f"{sidecars.logs()}"
    )
    assert _exits_after_sigterm(b, budget.cap(10)), (
        f"sidecar B still running after SIGTERM\n{sidecars.logs()}"
    )
