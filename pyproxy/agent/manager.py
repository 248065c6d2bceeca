"""SecretManager: the workload certificate's life cycle, as one trio task for as long as the proxy runs.

    loop:
        key (new every time, made in a worker thread: RSA generation takes ~0.1 s) + CSR for the SPIFFE ID
        CreateCertificate(csr, ttl, token read from the file now)       -> cert_chain
        validate_chain(cert_chain, key, SPIFFE ID)                       (pki.py; nothing unchecked is used)
        write key/chain/root under new names                            (store.py)
        publish default + ROOTCA -> the xDS state installs a snapshot   (new connections get the new cert)
        remove the files no installed snapshot names any more
        sleep until not_after - (0.5 +- 0.01) * lifetime                (schedule.py)
    on failure: log it, keep the current certificate, retry with back-off.

Every issuance and every failure is logged (serial, SPIFFE ID, not-after; the CA's status and message).

Resource handling: the private directory belongs to the manager and is removed when :meth:`run` ends (by
cancellation at shutdown, normally). Error handling: no failure ends :meth:`run`; a failure to publish (the
runtime could not load the new files) discards that issuance and is retried like a CA failure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from pyproxy.agent import pki
from pyproxy.agent.ca_client import CaError, CreateCertificate, GrpcCaClient
from pyproxy.agent.options import AgentOptions
from pyproxy.agent.schedule import Backoff, renewal_time
from pyproxy.agent.store import IssuedFiles, SecretDirectory
from pyproxy.config import model as m

log = logging.getLogger("pyproxy.agent")

MAX_SLEEP = 30.0
# Called with the new ``default`` and ``ROOTCA`` secrets; installs a snapshot using them or raises.
Publish = Callable[[m.TlsSecret, m.ValidationSecret], None]


class IssueError(Exception):
    """One attempt failed (the message says where: token, CA, validation, installation)."""


@dataclass(frozen=True, slots=True)
class Current:
    """The certificate in use."""

    issued: pki.Issued
    files: IssuedFiles
    received_at: float  # wall clock
    renew_at: float  # wall clock

    @property
    def not_after(self) -> float:
        return self.issued.not_after.timestamp()


class SecretManager:
    def __init__(self, options: AgentOptions, publish: Publish, *, files_in_use: Callable[[], set[str]],
                 create_certificate: CreateCertificate | None = None, rng: random.Random | None = None,
                 wall: Callable[[], float] = time.time, store: SecretDirectory | None = None) -> None:
        self.options = options
        self.publish = publish
        self.files_in_use = files_in_use
        self.ca: CreateCertificate = create_certificate if create_certificate is not None else GrpcCaClient(options)
        self.rng = rng or random.Random()
        self.wall = wall
        self.store = store if store is not None else SecretDirectory(options.secret_dir)
        self.backoff = Backoff.for_ttl(self.rng, options.ttl)
        self.current: Current | None = None
        self.issued_count = 0
        self.failures = 0
        # Istio's agent metrics (pyproxy/agent/metrics.py): CSRs sent to the CA, failed, and the total latency of
        # the successful ones in milliseconds.
        self.csr_requests = 0
        self.csr_failures = 0
        self.csr_latency_ms = 0.0
        self.last_error = ""
        self.has_certificate = trio.Event()  # set once the first certificate is installed

    # ------------------------------------------------------------------------------------------ loop

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        o = self.options
        log.info("identity agent: %s from the CA at %s (%s, %s key, TTL %gs), secrets in %s", o.spiffe_id,
                 o.ca_address, "TLS" if o.ca_root else "plaintext", o.key_algorithm.upper(), o.ttl, self.store.path)
        task_status.started()
        try:
            while True:
                try:
                    current = await self.issue()
                except IssueError as e:
                    delay = self._retry_delay()
                    self._log_failure(str(e), delay)
                except Exception as e:  # a bug must not take the proxy down: log it loudly and retry
                    delay = self._retry_delay()
                    log.exception("identity agent: unexpected failure; retrying in %.1fs", delay)
                    self.last_error = f"unexpected: {e!r}"
                else:
                    self.backoff.reset()
                    delay = current.renew_at - self.wall()
                await self._sleep_until(self.wall() + delay)
        finally:
            self.store.close()

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until the wall clock reaches ``deadline``, looking at it at least every 30 s: trio's clock
        stops while a laptop is suspended, the certificate's expiry does not."""
        while (left := deadline - self.wall()) > 0:  # noqa: ASYNC110 - polling the wall clock is the point
            await trio.sleep(min(left, MAX_SLEEP))

    def _retry_delay(self) -> float:
        delay = self.backoff.next_delay()
        if self.current is not None:
            left = self.current.not_after - self.wall()
            if left > 0:
                delay = min(delay, max(left / 2, 0.05))  # several more tries before it expires
        return delay

    def _log_failure(self, error: str, delay: float) -> None:
        self.failures += 1
        self.last_error = error
        cur = self.current
        if cur is None:
            state = "no certificate yet: the proxy is not ready"
        elif cur.not_after > self.wall():
            state = f"serial {cur.issued.serial} stays in use until it expires at {_iso(cur.not_after)}"
        else:
            state = f"serial {cur.issued.serial} EXPIRED at {_iso(cur.not_after)}"
        log.error("identity agent: certificate for %s not issued: %s; %s; retrying in %.1fs",
                  self.options.spiffe_id, error, state, delay)

    # ------------------------------------------------------------------------------------------ one issuance

    async def issue(self) -> Current:
        """Get, check, store and publish one certificate; raises IssueError (nothing changes then)."""
        o = self.options
        token = self._read_token()
        if o.key_algorithm == "rsa":  # ~0.1 s of CPU: off the event loop that proxies traffic
            key = await trio.to_thread.run_sync(pki.new_key, o.key_algorithm)
        else:  # ECDSA P-256 takes microseconds
            key = pki.new_key(o.key_algorithm)
        csr = pki.make_csr(key, o.spiffe_id)
        self.csr_requests += 1
        sent = time.monotonic()
        try:
            chain = await self.ca(csr.decode(), max(1, round(o.ttl)), token)
        except CaError as e:
            self.csr_failures += 1
            raise IssueError(f"the CA refused or failed: {e}") from None
        self.csr_latency_ms += (time.monotonic() - sent) * 1000
        received_at = self.wall()
        try:
            issued = pki.validate_chain(chain, key, o.spiffe_id, datetime.fromtimestamp(received_at, UTC))
        except pki.CertificateRejected as e:
            raise IssueError(f"the CA's answer was rejected: {e}") from None
        try:
            files = self.store.write(pki.key_pem(key), pki.certs_pem(issued.chain), pki.certs_pem([issued.root]))
        except OSError as e:
            raise IssueError(f"cannot write the certificate files: {e}") from None
        try:
            self.publish(m.TlsSecret(pki.WORKLOAD_SECRET, files.cert_chain, files.key),
                         m.ValidationSecret(pki.ROOT_SECRET, files.root_cert))
        except Exception as e:
            self.store.discard(files)
            raise IssueError(f"the new certificate could not be installed: {e}") from None
        self.store.commit(files)
        self.store.prune(self.files_in_use())
        renew_at = renewal_time(received_at, issued.not_after.timestamp(), self.rng)
        current = self.current = Current(issued, files, received_at, renew_at)
        self.issued_count += 1
        self.last_error = ""
        log.info("identity agent: certificate issued: serial=%s spiffe_id=%s not_after=%s renew_at=%s root=%s",
                 issued.serial, issued.spiffe_id, _iso(current.not_after), _iso(renew_at),
                 pki.fingerprint_sha256(issued.root)[:16])
        self.has_certificate.set()
        return current

    def _read_token(self) -> str:
        try:
            with open(self.options.token_path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise IssueError(f"cannot read the token {self.options.token_path}: {e}") from None
        if not token:
            raise IssueError(f"the token file {self.options.token_path} is empty")
        if any(c in token for c in "\r\n\0"):
            raise IssueError(f"the token file {self.options.token_path} holds more than one line")
        return token


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
