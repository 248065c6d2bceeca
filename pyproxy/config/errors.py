"""Configuration errors: every problem carries the Envoy-style field path it is about.

A :class:`Problems` collector travels through parsing, validation and translation so one pass reports as
many problems as it can; :class:`ConfigError` is what leaves the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration: ``path`` in Envoy's field style, ``reason`` in plain words."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(Exception):
    """A configuration was rejected. ``problems`` lists every ``(path, reason)`` found, in order."""

    def __init__(self, problems: Iterable[Problem | tuple[str, str]]) -> None:
        self.problems: list[Problem] = [p if isinstance(p, Problem) else Problem(*p) for p in problems]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class Problems:
    """Collects problems in order, dropping exact duplicates (two checks can find the same thing)."""

    def __init__(self) -> None:
        self._items: list[Problem] = []
        self._seen: set[Problem] = set()

    def add(self, path: str, reason: str) -> None:
        problem = Problem(path, reason)
        if problem not in self._seen:
            self._seen.add(problem)
            self._items.append(problem)

    def extend(self, other: Iterable[Problem]) -> None:
        for p in other:
            self.add(p.path, p.reason)

    def raise_if_any(self) -> None:
        if self._items:
            raise ConfigError(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self._items)


def join(path: str, name: str) -> str:
    """``join("a.b", "c")`` -> ``"a.b.c"``; an empty base gives just ``name``."""
    return f"{path}.{name}" if path else name
