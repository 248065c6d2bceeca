"""What an edit produces: the document to apply (or none), and each block it changes, before and after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NETWORKING_V1 = "networking.istio.io/v1"
KEPT_METADATA = ("name", "namespace", "labels", "annotations")


class EditRefused(ValueError):
    """The edit cannot be made as asked; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class Change:
    """One block of the resource: ``path`` (``spec.http[1]``, ``spec.trafficPolicy``), how it is shown
    (``label``: ``http[1] split``; ``to``: where the route sends calls, ``v1 90%, v2 10%``), and the block's
    value before and after (None: absent)."""

    path: str
    label: str
    to: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "to": self.to, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class Edit:
    """``document``: the whole resource to apply (None: nothing to write, e.g. clearing what is not there);
    ``created``: it did not exist; ``changes``: the blocks it touches; ``notes``: what the user should know
    (a subset's own policy that overrides this one, a route left alone and why); ``before_source``: where the
    "before" routing came from when no resource existed (``topology``)."""

    kind: str
    namespace: str
    name: str
    document: dict[str, Any] | None
    created: bool = False
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = field(default=())
    before_source: str = ""

    @property
    def resource(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def kept_metadata(existing: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a rewritten resource keeps (the store owns resourceVersion, uid, generation...)."""
    meta = existing.get("metadata") or {}
    return {k: v for k, v in meta.items() if k in KEPT_METADATA}
