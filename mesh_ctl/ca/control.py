"""The CA as the control plane runs it: roots + tokens + the certificate service + the rotation clock.

    ca = ControlPlaneCA.open(options.resolve(run_dir, state_dir), trust_domain)   # reads/creates files
    add_to_server(ca.servicer, grpc_server)             # CreateCertificate on the xDS port
    unsubscribe = ca.subscribe(on_bundle)               # on_bundle(list[pem]) after every bundle change
    task = asyncio.create_task(ca.run())                # moves rotations on at their deadlines

``trust_bundle()`` is what every proxy must trust (SDS secret ``ROOTCA``); it changes when a rotation
publishes a new root and when it retires the old one, and listeners are called then, on the event loop.
``await rotate()`` / ``await step()`` are what `mesh_ctl ca rotate-root` calls through the management API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization

from mesh_ctl.ca import material
from mesh_ctl.ca.options import CaOptions
from mesh_ctl.ca.roots import PluginRoots, RootSource, SelfSignedRoots
from mesh_ctl.ca.service import CertificateService, IstioCertificateServicer
from mesh_ctl.ca.signer import TtlPolicy
from mesh_ctl.ca.tokens import TokenAuthority, default_issuer, load_or_create_key
from mesh_ctl.monitoring.families import ControlPlaneMetrics

log = logging.getLogger("mesh_ctl.ca")

BundleListener = Callable[[list[str]], None]
MAX_SLEEP = 1.0  # the clock loop wakes at least this often (deadlines can move: a rotation starts)


class ControlPlaneCA:
    def __init__(self, roots: RootSource, tokens: TokenAuthority, trust_domain: str, options: CaOptions,
                 *, clock: Callable[[], float] = time.time, metrics: ControlPlaneMetrics | None = None) -> None:
        self.roots = roots
        self.tokens = tokens
        self.trust_domain = trust_domain
        self.options = options
        self.clock = clock
        self.service = CertificateService(roots, tokens, trust_domain, TtlPolicy(options.default_ttl, options.max_ttl),
                                          clock=clock, metrics=metrics)
        # istiod's expiry gauges, read when scraped: a root rotation moves them
        self.service.metrics.watch_ca(self._root_expiry, self._chain_expiry)
        self.servicer = IstioCertificateServicer(self.service)
        self._listeners: list[BundleListener] = []
        self._published = self.trust_bundle()  # what listeners were last told
        self._wake = asyncio.Event()

    @classmethod
    def open(cls, options: CaOptions, trust_domain: str, *, clock: Callable[[], float] = time.time,
             metrics: ControlPlaneMetrics | None = None) -> ControlPlaneCA:
        """Load (or create) everything the options name; :class:`material.CaConfigError` if unusable."""
        if options.directory is None:
            raise ValueError("CaOptions.directory must be resolved first (CaOptions.resolve)")
        try:
            TtlPolicy(options.default_ttl, options.max_ttl)  # refuse inconsistent TTLs before touching files
        except ValueError as e:
            raise material.CaConfigError(str(e)) from None
        roots: RootSource
        if options.cacerts is not None:
            plugin = material.load_plugin(options.cacerts)
            roots = PluginRoots(plugin)
            log.info("CA: plug-in certificates from %s (signing %s, %d trusted root(s))", options.cacerts,
                     plugin.signing.ca.cert.subject.rfc4514_string(), len(plugin.roots))
        else:
            roots = SelfSignedRoots.open(options.directory, trust_domain,
                                         publish_delay=options.publish_delay.total_seconds(), now=clock())
        try:
            key, created = load_or_create_key(options.directory)
        except (OSError, ValueError, TypeError) as e:
            raise material.CaConfigError(f"token signing key in {options.directory}: {e}") from None
        if created:
            log.info("CA: created the token signing key %s", options.directory / "token-key.pem")
        return cls(roots, TokenAuthority(key, default_issuer(trust_domain)), trust_domain, options, clock=clock,
                   metrics=metrics)

    def _root_expiry(self) -> float:
        return self.roots.signing().root.not_valid_after_utc.timestamp()

    def _chain_expiry(self) -> float:
        return self.roots.signing().not_after.timestamp()

    # ------------------------------------------------------------------------------------------ the bundle

    def trust_bundle(self) -> list[str]:
        """Every root a valid workload certificate may chain to, PEM, oldest first."""
        return [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.roots.bundle()]

    def subscribe(self, listener: BundleListener) -> Callable[[], None]:
        """Call ``listener(trust_bundle())`` after each change of the bundle; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def _changed(self) -> None:
        bundle = self.trust_bundle()
        log.info("CA: trust bundle has %d root(s); signing with %s", len(bundle),
                 self.roots.signing().fingerprint[:16])
        if bundle == self._published:
            return  # only the signer changed: nothing to push
        self._published = bundle
        for listener in list(self._listeners):
            try:
                listener(bundle)
            except Exception:
                log.exception("CA: a trust bundle listener failed")

    # ------------------------------------------------------------------------------------------ operations

    def mint_token(self, namespace: str, service_account: str, ttl: timedelta | None = None) -> dict[str, Any]:
        ttl = ttl or self.options.token_ttl
        now = self.clock()
        token = self.tokens.mint(namespace, service_account, ttl, now=now)
        log.info("CA: minted a bootstrap token for %s/%s valid %ss", namespace, service_account,
                 int(ttl.total_seconds()))
        return {"token": token, "namespace": namespace, "service_account": service_account,
                "spiffe_id": f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}",
                "expires_at": int(now) + int(ttl.total_seconds()), "issuer": self.tokens.issuer}

    async def rotate(self, publish_delay: timedelta | None = None) -> None:
        """Start a root rotation (RotationError if one is in progress or the CA is plug-in). The new key is
        made in a worker thread; listeners are called on the event loop."""
        delay = self.options.publish_delay if publish_delay is None else publish_delay
        await asyncio.to_thread(self.roots.rotate, self.clock(), delay.total_seconds())
        self._changed()
        self._wake.set()

    async def step(self, *, force: bool = False) -> None:
        """Move a rotation to its next phase now (RotationError if there is none, or retiring is unsafe)."""
        await asyncio.to_thread(self.roots.step, self.clock(), force=force)
        self._changed()
        self._wake.set()

    def tick(self) -> None:
        if self.roots.tick(self.clock()):
            self._changed()

    async def run(self) -> None:
        """Apply rotation deadlines as they come (until cancelled)."""
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("CA: rotation step failed; retrying")
            deadline = self.roots.next_deadline()
            delay = MAX_SLEEP if deadline is None else min(MAX_SLEEP, max(0.0, deadline - self.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay + 0.01)
            except TimeoutError:
                pass

    def status(self) -> dict[str, Any]:
        out = self.roots.status()
        out.update({"trust_domain": self.trust_domain, "token_issuer": self.tokens.issuer,
                    "token_key_id": self.tokens.key_id, "default_ttl_s": self.options.default_ttl.total_seconds(),
                    "max_ttl_s": self.options.max_ttl.total_seconds(), "now": self.clock(),
                    **self.service.counters()})
        return out
