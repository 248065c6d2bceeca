"""Where the signing CA and the trust bundle come from: self-signed roots that rotate, or plug-in ``cacerts``.

Self-signed (the default), in the CA directory::

    rotation.json                   the rotation state (:mod:`rotation`): phase, signing root, bundle. The truth.
    roots/<sha256>/root-cert.pem    every root in the bundle; root-key.pem beside it (0600)
    root-cert.pem, root-key.pem     a copy of the signing root (what `mesh_ctl up` has always read)
    trust-bundle.pem                the bundle, oldest root first (rewritten on every change)

A directory without ``rotation.json`` but with ``root-cert.pem``/``root-key.pem`` (older runs) is adopted:
that root becomes the first entry, assumed to have signed 24 h certificates until now (the files
`mesh_ctl up` wrote), so a rotation keeps it trusted until those have expired. A root with less than 20 %
of its life left starts a rotation by itself (Istio's root grace period). Retired roots are deleted.
``rotation.json`` that cannot be read stops the control plane: a silently new root would make every
workload distrust every other one.

Plug-in (:mod:`material`): the operator's files are used as they are; they rotate by being replaced (a
rotation request is refused with that advice).

Both are thread-safe: certificates are signed in worker threads while the event loop ticks the rotation.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh_ctl.ca import rotation
from mesh_ctl.ca.authority import WORKLOAD_TTL, CertificateAuthority, create_root_ca, fingerprint
from mesh_ctl.ca.files import CERT_MODE, KEY_MODE, ROOT_GRACE, cert_pem, key_pem, load_or_create_root, write_file
from mesh_ctl.ca.material import CaConfigError, PluginMaterial
from mesh_ctl.ca.rotation import Phase, RotationError, RotationState
from mesh_ctl.ca.signer import SigningAuthority

log = logging.getLogger("mesh_ctl.ca")

STATE_FILE = "rotation.json"
BUNDLE_FILE = "trust-bundle.pem"
ROOTS_DIR = "roots"
STATE_MODE = 0o600


class RootSource(Protocol):
    """What the certificate service needs from its roots."""

    mode: str

    def signing(self) -> SigningAuthority: ...
    def bundle(self) -> tuple[x509.Certificate, ...]: ...
    def record_issue(self, authority: SigningAuthority, not_after: datetime) -> None: ...
    def tick(self, now: float) -> bool: ...  # True if the signer or the bundle changed
    def next_deadline(self) -> float | None: ...
    def rotate(self, now: float, publish_delay: float) -> None: ...
    def step(self, now: float, *, force: bool = False) -> None: ...
    def status(self) -> dict[str, Any]: ...


def describe(cert: x509.Certificate, role: str) -> dict[str, Any]:
    return {"fingerprint": fingerprint(cert), "subject": cert.subject.rfc4514_string(), "role": role,
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat()}


class PluginRoots:
    """Istio's plug-in CA: fixed material; no rotation from here."""

    mode = "plugin"

    def __init__(self, material: PluginMaterial) -> None:
        self.material = material

    def signing(self) -> SigningAuthority:
        return self.material.signing

    def bundle(self) -> tuple[x509.Certificate, ...]:
        return self.material.roots

    def record_issue(self, authority: SigningAuthority, not_after: datetime) -> None:
        pass

    def tick(self, now: float) -> bool:
        return False

    def next_deadline(self) -> float | None:
        return None

    def rotate(self, now: float, publish_delay: float) -> None:
        raise RotationError(f"the CA uses plug-in certificates from {self.material.directory}: rotate them by "
                            "putting the new root next to the old one in root-cert.pem, then replacing the "
                            "files (Istio's cacerts procedure) and restarting the control plane")

    def step(self, now: float, *, force: bool = False) -> None:
        self.rotate(now, 0)

    def status(self) -> dict[str, Any]:
        signing = self.material.signing
        return {"mode": self.mode, "directory": str(self.material.directory), "phase": Phase.STABLE.value,
                "signing": describe(signing.ca.cert, "signing"),
                "chain": [describe(c, "chain") for c in signing.chain],
                "bundle": [describe(r, "trusted") for r in self.material.roots]}


class SelfSignedRoots:
    """Self-signed roots under one directory, rotated with overlap (see the module docstring)."""

    mode = "self-signed"

    def __init__(self, directory: Path, trust_domain: str, state: RotationState,
                 roots: dict[str, CertificateAuthority], publish_delay: float) -> None:
        self.directory = directory
        self.trust_domain = trust_domain
        self.publish_delay = publish_delay
        self._state = state
        self._roots = roots
        self._lock = threading.RLock()
        self._saved_issue = dict(state.issued_until)

    @classmethod
    def open(cls, directory: Path, trust_domain: str, *, publish_delay: float = 10.0,
             now: float | None = None) -> SelfSignedRoots:
        now = datetime.now(UTC).timestamp() if now is None else now
        path = directory / STATE_FILE
        if path.exists():
            try:
                state = RotationState.from_json(json.loads(path.read_text()))
            except (OSError, ValueError) as e:
                raise CaConfigError(f"{path}: cannot read the CA's rotation state ({e}); fix or restore it "
                                    "(removing the CA directory makes a new root that no running workload "
                                    "trusts)") from None
            roots = {fp: _load_root(directory / ROOTS_DIR / fp, fp) for fp in state.bundle}
        else:
            ca, created = load_or_create_root(directory, trust_domain,
                                              now=datetime.fromtimestamp(now, UTC))
            fp = fingerprint(ca.cert)
            log.info("CA: %s self-signed root %s in %s", "created a" if created else "adopted the", fp[:16], directory)
            state = RotationState.initial(fp, now)
            if not created:  # `mesh_ctl up` signed workload files with it, unrecorded: assume 24 h ones
                state = rotation.record_issue(state, fp, now + WORKLOAD_TTL.total_seconds())
            roots = {fp: ca}
            _save_root(directory / ROOTS_DIR / fp, ca)
        self = cls(directory, trust_domain, state, roots, publish_delay)
        self._save()
        return self

    # ------------------------------------------------------------------------------------------ reads

    @property
    def state(self) -> RotationState:
        return self._state

    def signing(self) -> SigningAuthority:
        with self._lock:
            ca = self._roots[self._state.signing]
        return SigningAuthority(ca, (), ca.cert)

    def bundle(self) -> tuple[x509.Certificate, ...]:
        with self._lock:
            return tuple(self._roots[fp].cert for fp in self._state.bundle)

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._state.next_deadline

    def status(self) -> dict[str, Any]:
        with self._lock:
            s = self._state
            roles = {s.signing: "signing", s.pending or "": "pending", s.retiring or "": "retiring"}
            return {"mode": self.mode, "directory": str(self.directory), "phase": s.phase.value,
                    "signing": describe(self._roots[s.signing].cert, "signing"),
                    "bundle": [describe(self._roots[fp].cert, roles.get(fp, "trusted")) for fp in s.bundle],
                    "started_at": s.started_at, "switch_at": s.switch_at, "switched_at": s.switched_at,
                    "retire_at": s.retire_at, "publish_delay_s": self.publish_delay,
                    "issued_until": dict(s.issued_until), "history": [dict(h) for h in s.history]}

    # ------------------------------------------------------------------------------------------ changes

    def record_issue(self, authority: SigningAuthority, not_after: datetime) -> None:
        with self._lock:
            root = authority.root_fingerprint
            self._state = rotation.record_issue(self._state, root, not_after.timestamp())
            if self._state.issued_until.get(root, 0.0) >= self._saved_issue.get(root, 0.0) + 1.0:
                self._save()  # at most one write per second of not-after progress

    def tick(self, now: float) -> bool:
        with self._lock:
            before = self._state
            if before.phase is Phase.STABLE and self._expiring(now):
                log.warning("CA: the signing root %s has less than %d%% of its life left: rotating it",
                            before.signing[:16], ROOT_GRACE * 100)
                self.rotate(now, self.publish_delay)
            else:
                self._apply(rotation.due(before, now))
            return self._state.bundle != before.bundle or self._state.signing != before.signing

    def rotate(self, now: float, publish_delay: float) -> None:
        with self._lock:
            rotation.ensure_stable(self._state)
            if publish_delay < 0:
                raise RotationError("the publish delay cannot be negative")
            ca = create_root_ca(self.trust_domain, now=datetime.fromtimestamp(now, UTC))
            fp = fingerprint(ca.cert)
            _save_root(self.directory / ROOTS_DIR / fp, ca)
            self._roots[fp] = ca
            self._apply(rotation.begin(self._state, fp, now, publish_delay))

    def step(self, now: float, *, force: bool = False) -> None:
        with self._lock:
            self._apply(rotation.step(self._state, now, force=force))

    # ------------------------------------------------------------------------------------------ internals

    def _expiring(self, now: float) -> bool:
        cert = self._roots[self._state.signing].cert
        lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
        return cert.not_valid_after_utc.timestamp() - now < lifetime * ROOT_GRACE

    def _apply(self, new: RotationState) -> None:
        old = self._state
        if new == old:
            return
        new.check()
        self._state = new
        for event in (e for e in new.history if e not in old.history):
            log.info("CA root rotation: %s (root %s)", event.get("event"), str(event.get("root", ""))[:16])
        self._save()
        for fp in set(old.bundle) - set(new.bundle):
            shutil.rmtree(self.directory / ROOTS_DIR / fp, ignore_errors=True)
            self._roots.pop(fp, None)

    def _save(self) -> None:
        s = self._state
        write_file(self.directory / STATE_FILE, (json.dumps(s.to_json(), indent=1) + "\n").encode(), STATE_MODE)
        self._saved_issue = dict(s.issued_until)
        signing = self._roots[s.signing]
        if _read(self.directory / "root-cert.pem") != cert_pem(signing.cert):
            write_file(self.directory / "root-key.pem", key_pem(signing.key), KEY_MODE)
            write_file(self.directory / "root-cert.pem", cert_pem(signing.cert), CERT_MODE)
        bundle = cert_pem(*(self._roots[fp].cert for fp in s.bundle))
        if _read(self.directory / BUNDLE_FILE) != bundle:
            write_file(self.directory / BUNDLE_FILE, bundle, CERT_MODE)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _save_root(directory: Path, ca: CertificateAuthority) -> None:
    write_file(directory / "root-key.pem", key_pem(ca.key), KEY_MODE)
    write_file(directory / "root-cert.pem", cert_pem(ca.cert), CERT_MODE)


def _load_root(directory: Path, expected: str) -> CertificateAuthority:
    try:
        cert = x509.load_pem_x509_certificate((directory / "root-cert.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "root-key.pem").read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CaConfigError(f"{directory}: cannot load root {expected[:16]} named in {STATE_FILE} ({e})") from None
    if fingerprint(cert) != expected:
        raise CaConfigError(f"{directory}/root-cert.pem is not root {expected[:16]} named in {STATE_FILE}")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != cert.public_key(
            ).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CaConfigError(f"{directory}/root-key.pem does not match its root-cert.pem")
    return CertificateAuthority(key=key, cert=cert)
