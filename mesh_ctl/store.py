"""The control plane's durable, versioned store of Istio resources.

Model (Kubernetes' API server, reduced to one process and one file):

- A global ``revision`` counts accepted changes. Each stored resource carries ``metadata.resourceVersion``
  (the revision that last changed it), ``generation`` (bumped when its spec changes), ``creationTimestamp``
  and ``uid``. Re-applying an identical document changes nothing ("unchanged", no new revision).
- ``apply`` and ``delete`` are transactional: the batch is validated against the state as it would be after
  the change (:func:`mesh_ctl.resources.validate_batch`); any error refuses the whole batch and nothing
  changes. Optional extra ``checks`` (e.g. the translator's ``check_resource``) run on every document.

Durability (``<directory>/store.json``): every change writes the whole snapshot to a temporary file in the
same directory, fsyncs it, renames it over ``store.json`` and fsyncs the directory, before ``apply``
returns. A crash at any point leaves either the old or the new snapshot: what was acknowledged is kept. A
leftover temporary file (a crash mid-write) is ignored and removed on open; a ``store.json`` that does not
parse is reported (:class:`StoreCorrupt`), never silently replaced.

Concurrency: a thread lock guards memory; ``flock`` on ``store.lock`` serialises writers across processes,
and each writer re-reads ``store.json`` first if another process changed it (:meth:`ConfigStore.refresh`).

Change notification is framework-neutral: :meth:`ConfigStore.subscribe` calls a callback after every commit
(from the committing thread; bridge to your loop: ``trio_token.run_sync_soon(event.set)`` or
``loop.call_soon_threadsafe(event.set)``), and :meth:`ConfigStore.wait_for_revision` blocks a thread until
the revision moves. Events only say "revision N is out"; consumers read :meth:`ConfigStore.snapshot`, so
several quick changes can be coalesced into one push.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import datetime as dt
import fcntl
import json
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mesh_ctl.resources import (
    InvalidConfig,
    Resource,
    ResourceKey,
    ValidationProblem,
    kind_info,
    normalized,
    validate_batch,
)
from mesh_ctl.resources.batch import BatchReport
from mesh_ctl.resources.crossref import ImplicitSubsets
from mesh_ctl.resources.names import resolve_host
from mesh_ctl.resources.normalize import prune_nulls
from mesh_ctl.resources.weights import weights_virtual_service

__all__ = [
    "ApplyResult",
    "Change",
    "ConfigStore",
    "NotFound",
    "StoreCorrupt",
    "StoreEvent",
    "StoreSnapshot",
    "weights_virtual_service",
]

log = logging.getLogger(__name__)

FORMAT = "minimesh-config-store/1"
SNAPSHOT_FILE = "store.json"
LOCK_FILE = "store.lock"
TMP_PREFIX = ".store.json.tmp"
HISTORY_LIMIT = 200
STORE_ORIGIN = "<store>"
SERVER_OWNED = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

Action = Literal["created", "configured", "unchanged", "deleted"]
Check = Callable[[Mapping[str, Any]], None]


class StoreCorrupt(Exception):
    """``store.json`` exists but is not a readable store; it is left untouched for a person to look at."""


class NotFound(LookupError):
    """``delete`` or ``get`` of a resource that is not stored."""


@dataclass(frozen=True, slots=True)
class Change:
    key: ResourceKey
    action: Action
    resource_version: str
    generation: int

    def __str__(self) -> str:
        """kubectl's line: ``virtualservice.networking.istio.io/payment configured``."""
        info = kind_info(self.key.kind)
        kind = f"{self.key.kind.lower()}.{info.group}" if info else self.key.kind.lower()
        return f"{kind}/{self.key.name} {self.action}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int  # the store's revision after the change (unchanged for dry runs and no-op applies)
    changes: tuple[Change, ...]
    warnings: tuple[ValidationProblem, ...] = ()
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def lines(self) -> list[str]:
        suffix = " (dry run)" if self.dry_run else ""
        return [f"{c}{suffix}" for c in self.changes]


@dataclass(frozen=True, slots=True)
class StoreEvent:
    revision: int
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """An immutable view: every stored resource at one revision, in creation order."""

    revision: int
    resources: tuple[Resource, ...]

    def normalized(self) -> list[dict[str, Any]]:
        """The translator's input: :func:`mesh_ctl.resources.normalized` of every resource."""
        return [normalized(r) for r in self.resources]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(resource: Resource) -> tuple[Any, ...]:
    """What decides "unchanged": the spec, labels and annotations (not the apiVersion spelling)."""
    meta = resource.metadata
    return (prune_nulls(resource.spec), dict(meta.get("labels") or {}), dict(meta.get("annotations") or {}))


def _from_stored(doc: Mapping[str, Any]) -> Resource:
    return Resource(doc["apiVersion"], doc["kind"], doc["metadata"], doc.get("spec") or {}, STORE_ORIGIN, 0, doc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ConfigStore:
    """See the module docstring. ``checks`` run on each normalized document of an apply; one that raises
    an exception with ``path`` and ``reason`` attributes (or any ``ValueError``) refuses the batch.
    ``implicit_subsets(resolved_host)`` names the subsets a host has when no DestinationRule defines any
    (minimesh's topology subsets), so a VirtualService may use them before a DestinationRule is applied."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        checks: Sequence[Check] = (),
        implicit_subsets: ImplicitSubsets | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / SNAPSHOT_FILE
        self.checks = tuple(checks)
        self.implicit_subsets = implicit_subsets
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._subscribers: list[Callable[[StoreEvent], None]] = []
        self._resources: dict[ResourceKey, Resource] = {}
        self._history: list[dict[str, Any]] = []
        self._revision = 0
        self._file_id: tuple[int, int, int] | None = None
        self._remove_torn_temp_files()
        self._load()

    # ------------------------------------------------------------------------------------------ reading

    @property
    def revision(self) -> int:
        return self._revision

    def snapshot(self) -> StoreSnapshot:
        with self._lock:
            return StoreSnapshot(self._revision, tuple(self._resources.values()))

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        key = self._key(kind, namespace, name)
        with self._lock:
            return self._resources.get(key)

    def list(self, kind: str | None = None, namespace: str | None = None) -> builtins.list[Resource]:
        info = kind_info(kind) if kind else None
        if kind and info is None:
            raise NotFound(f"unknown kind {kind!r}")
        with self._lock:
            return [
                r
                for r in self._resources.values()
                if (info is None or r.kind == info.kind) and (namespace is None or r.namespace == namespace)
            ]

    def history(self) -> builtins.list[dict[str, Any]]:
        """The last changes, oldest first: ``{"revision", "time", "changes": [{"action", "kind", ...}]}``."""
        with self._lock:
            return copy.deepcopy(self._history)

    def analyze(self, resources: Sequence[Resource]) -> BatchReport:
        """Validate only (``mesh_ctl analyze``): the problems applying ``resources`` now would meet."""
        self.refresh()
        with self._lock:
            report = validate_batch(resources, self._resources, implicit_subsets=self.implicit_subsets)
            self._run_checks(report)
            return report

    # ------------------------------------------------------------------------------------------ writing

    def apply(self, resources: Sequence[Resource], dry_run: bool = False) -> ApplyResult:
        """Create or update every resource, or none (raises :class:`InvalidConfig`)."""
        with self._writer():
            return self._apply_locked(resources, dry_run)

    def update(self, make: Callable[[StoreSnapshot], Sequence[Resource]], dry_run: bool = False) -> ApplyResult:
        """Read, modify, write: ``make`` gets the state under the writer lock (no writer, in this process or
        another, changes the store between that read and the write) and returns the resources to apply, which
        are validated and stored as :meth:`apply` does. An exception from ``make`` propagates; nothing changes."""
        with self._writer():
            return self._apply_locked(make(self.snapshot()), dry_run)

    def _apply_locked(self, resources: Sequence[Resource], dry_run: bool) -> ApplyResult:
        report = validate_batch(resources, self._resources, implicit_subsets=self.implicit_subsets)
        self._run_checks(report)
        errors = list(report.errors)
        changes: list[Change] = []
        staged: dict[ResourceKey, Resource] = {}
        revision = self._revision + 1
        for doc in report.documents:
            resource = doc.resource
            old = self._resources.get(resource.key)
            errors.extend(self._precondition(resource, old))
            if old is not None and _content(old) == _content(resource):
                changes.append(
                    Change(
                        resource.key,
                        "unchanged",
                        str(old.metadata["resourceVersion"]),
                        int(old.metadata["generation"]),
                    )
                )
                continue
            stored = self._stamp(resource, old, revision)
            staged[resource.key] = stored
            changes.append(
                Change(
                    resource.key,
                    "configured" if old else "created",
                    str(revision),
                    int(stored.metadata["generation"]),
                )
            )
        if errors:
            raise _invalid(errors, report.warnings)
        if dry_run or not staged:
            return ApplyResult(self._revision, tuple(changes), tuple(report.warnings), dry_run)
        new_state = dict(self._resources)
        new_state.update(staged)
        self._commit(new_state, revision, changes)
        return ApplyResult(revision, tuple(changes), tuple(report.warnings))

    def delete(self, kind: str, namespace: str, name: str, dry_run: bool = False) -> ApplyResult:
        """Delete one resource; refused if a stored VirtualService still uses one of its subsets."""
        key = self._key(kind, namespace, name)
        with self._writer():
            old = self._resources.get(key)
            if old is None:
                raise NotFound(f"{key.kind} {namespace}/{name} not found")
            report = validate_batch([], self._resources, deletions=[key], implicit_subsets=self.implicit_subsets)
            if report.errors:
                raise _invalid(report.errors, report.warnings)
            revision = self._revision + 1
            changes = [Change(key, "deleted", str(revision), int(old.metadata.get("generation", 1)))]
            if dry_run:
                return ApplyResult(self._revision, tuple(changes), (), True)
            new_state = {k: v for k, v in self._resources.items() if k != key}
            self._commit(new_state, revision, changes)
            return ApplyResult(revision, tuple(changes))

    def set_weights(self, host: str, namespace: str, weights: Mapping[str, int], dry_run: bool = False,
                    relative: bool = False) -> ApplyResult:
        """``mesh_ctl set-weight payment v1=90 v2=10``: rewrite the default route of the host's
        VirtualService (created if there is none) and apply it (``relative``: see
        :func:`~mesh_ctl.resources.weights.weights_virtual_service`)."""

        def make(_: StoreSnapshot) -> list[Resource]:
            existing = self._virtual_service_for(host, namespace)
            subsets = self._subsets_for(host, namespace)
            doc = weights_virtual_service(
                host, namespace, weights, existing.to_dict() if existing else None, known_subsets=subsets,
                relative=relative,
            )
            origin = existing.origin if existing else "set-weight"
            return [Resource(doc["apiVersion"], doc["kind"], doc["metadata"], doc["spec"], origin, 0, doc)]

        return self.update(make, dry_run=dry_run)

    # ---------------------------------------------------------------------------------- notifications

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after each commit; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def wait_for_revision(self, after: int, timeout: float | None = None) -> int:
        """Block until ``revision > after`` (or ``timeout`` seconds); return the revision then."""
        with self._changed:
            self._changed.wait_for(lambda: self._revision > after, timeout)
            return self._revision

    # -------------------------------------------------------------------------------------- internals

    def refresh(self) -> bool:
        """Re-read ``store.json`` if another process replaced it; True if the state changed."""
        with self._lock:
            if self._stat() == self._file_id:
                return False
            before = self._revision
            self._load()
            if self._revision != before:
                self._notify(StoreEvent(self._revision, ()))
            return True

    def _key(self, kind: str, namespace: str, name: str) -> ResourceKey:
        info = kind_info(kind)
        if info is None:
            raise NotFound(f"unknown kind {kind!r}")
        return ResourceKey(info.group, info.kind, namespace, name)

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        with self._lock, open(self.directory / LOCK_FILE, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                if self._stat() != self._file_id:
                    self._load()
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _run_checks(self, report: BatchReport) -> None:
        if not self.checks:
            return
        for doc in report.documents:
            if doc.errors or not doc.schema_valid:
                continue
            for check in self.checks:
                try:
                    check(normalized(doc.resource))
                except (ValueError, LookupError) as err:
                    path = str(getattr(err, "path", ""))
                    reason = str(getattr(err, "reason", err))
                    doc.add(path, reason)
                    report.errors.append(doc.errors[-1])
                    break

    def _precondition(self, resource: Resource, old: Resource | None) -> builtins.list[ValidationProblem]:
        """kubectl's optimistic concurrency: a resourceVersion in the document must be the stored one."""
        wanted = resource.metadata.get("resourceVersion")
        if wanted in (None, ""):
            return []
        name = f"{resource.namespace}/{resource.name}"
        if old is None:
            reason = "resourceVersion should not be set on objects to be created"
        elif str(wanted) != str(old.metadata.get("resourceVersion")):
            reason = (
                "the object has been modified; please apply your changes to the latest version and try again"
                f" (yours: {wanted}, stored: {old.metadata.get('resourceVersion')})"
            )
        else:
            return []
        return [
            ValidationProblem(
                resource.origin, resource.kind, name, "metadata.resourceVersion", reason, resource.document
            )
        ]

    def _stamp(self, resource: Resource, old: Resource | None, revision: int) -> Resource:
        meta = {k: v for k, v in resource.metadata.items() if k not in SERVER_OWNED}
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        else:
            generation = int(old.metadata.get("generation", 1))
            if prune_nulls(old.spec) != prune_nulls(resource.spec):
                generation += 1
            meta.update(
                uid=old.metadata.get("uid"),
                creationTimestamp=old.metadata.get("creationTimestamp"),
                generation=generation,
            )
        meta["resourceVersion"] = str(revision)
        doc = {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": meta,
            "spec": prune_nulls(resource.spec),
        }
        return Resource(resource.api_version, resource.kind, meta, doc["spec"], resource.origin, resource.document, doc)

    def _commit(self, state: dict[ResourceKey, Resource], revision: int, changes: Sequence[Change]) -> None:
        entry = {
            "revision": revision,
            "time": _now(),
            "changes": [
                {"action": c.action, "kind": c.key.kind, "namespace": c.key.namespace, "name": c.key.name}
                for c in changes
                if c.action != "unchanged"
            ],
        }
        history = [*self._history, entry][-HISTORY_LIMIT:]
        self._write(revision, state, history)  # raises before anything changes in memory
        self._resources = state
        self._revision = revision
        self._history = history
        self._notify(StoreEvent(revision, tuple(changes)))

    def _notify(self, event: StoreEvent) -> None:
        self._changed.notify_all()
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not undo a committed change
                log.exception("config store subscriber failed for revision %d", event.revision)

    # ------------------------------------------------------------------------------------ persistence

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _remove_torn_temp_files(self) -> None:
        for leftover in self.directory.glob(f"{TMP_PREFIX}*"):
            log.warning("removing %s: a write interrupted before it was committed", leftover)
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _load(self) -> None:
        file_id = self._stat()
        if file_id is None:
            self._resources, self._revision, self._history, self._file_id = {}, 0, [], None
            return
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as err:
            raise StoreCorrupt(
                f"{self.path}: cannot read the config store ({err}); it was left untouched: "
                "restore it or move it away to start with an empty store"
            ) from err
        problem = _format_problem(data)
        if problem:
            raise StoreCorrupt(f"{self.path}: not a minimesh config store ({problem}); it was left untouched")
        resources: dict[ResourceKey, Resource] = {}
        for doc in data["resources"]:
            resource = _from_stored(doc)
            resources[resource.key] = resource
        self._resources = resources
        self._revision = int(data["revision"])
        self._history = list(data.get("history", []))
        self._file_id = file_id

    def _write(
        self, revision: int, state: Mapping[ResourceKey, Resource], history: builtins.list[dict[str, Any]]
    ) -> None:
        data = {
            "format": FORMAT,
            "revision": revision,
            "written": _now(),
            "resources": [r.raw or r.to_dict() for r in state.values()],
            "history": history,
        }
        payload = json.dumps(data, indent=1, sort_keys=False).encode() + b"\n"
        tmp = self.directory / f"{TMP_PREFIX}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._file_id = self._stat()

    # --------------------------------------------------------------------------------------- set-weight

    def _virtual_service_for(self, host: str, namespace: str) -> Resource | None:
        target = resolve_host(host, namespace)
        for r in self._resources.values():
            if (
                r.kind == "VirtualService"
                and r.namespace == namespace
                and any(resolve_host(str(h), namespace) == target for h in r.spec.get("hosts") or ())
            ):
                return r
        return None

    def _subsets_for(self, host: str, namespace: str) -> Collection[str] | None:
        target = resolve_host(host, namespace)
        names: list[str] = []
        found = False
        for r in self._resources.values():
            if r.kind == "DestinationRule" and resolve_host(str(r.spec.get("host", "")), r.namespace) == target:
                found = True
                names.extend(str(s.get("name")) for s in r.spec.get("subsets") or ())
        if not found and self.implicit_subsets is not None:
            return self.implicit_subsets(target)
        return names if found else None


def _invalid(errors: Sequence[ValidationProblem], warnings: Sequence[ValidationProblem]) -> InvalidConfig:
    return InvalidConfig(errors, warnings)


def _format_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format is {data.get('format')!r}, expected {FORMAT!r}"
    if not isinstance(data.get("revision"), int) or data["revision"] < 0:
        return "revision is not a non-negative integer"
    resources = data.get("resources")
    if not isinstance(resources, list):
        return "resources is not a list"
    for i, doc in enumerate(resources):
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("metadata"), dict)
            and isinstance(doc.get("kind"), str)
            and isinstance(doc.get("apiVersion"), str)
        ):
            return f"resources[{i}] is not a stored resource"
    return None
