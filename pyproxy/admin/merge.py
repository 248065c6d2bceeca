"""Merging Prometheus text expositions into one (Istio's "metrics merging" on 15020), pure.

Istio's agent writes its own metrics, then Envoy's, then the app's into one ``/stats/prometheus`` answer. Written
one after the other, two sources that declare the same metric family would give a second ``# TYPE`` line for
it, and Prometheus refuses such a scrape ("second TYPE line for metric name"), losing every metric of the pod.
So here each source is cut into families (a family: its ``# HELP``/``# TYPE`` lines and its samples, including
a histogram's ``_bucket``/``_sum``/``_count``), and a family whose name, or any of whose sample names, an earlier
source already used is left out whole; the caller is told which (source, family) pairs were dropped. Sources
earlier in the list win: the proxy's own families over the app's.

Only the 0.0.4 text format is handled; an OpenMetrics ``# EOF`` line is dropped (it would end the exposition
early). Lines are not parsed further: values and labels pass through byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

_COMPOUND = ("histogram", "summary", "gaugehistogram")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info")


@dataclass(slots=True)
class Family:
    name: str
    lines: list[str] = field(default_factory=list)
    sample_names: set[str] = field(default_factory=set)
    kind: str = "untyped"

    def names(self) -> set[str]:
        """Every metric name the family uses or, by its type, may use (a histogram declared with no samples
        yet still owns ``_bucket``, ``_sum`` and ``_count``)."""
        implied = {self.name + s for s in ("_bucket", "_sum", "_count")} if self.kind in _COMPOUND else set()
        return {self.name, *self.sample_names, *implied}


@dataclass(frozen=True, slots=True)
class Merged:
    text: str
    dropped: tuple[tuple[str, str], ...]  # (source, family name) left out as duplicates


def sample_name(line: str) -> str:
    """The metric name of a sample line (``name{labels} value`` or ``name value``)."""
    end = len(line)
    for sep in ("{", " ", "\t"):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    return line[:end]


def _belongs(sample: str, family: str) -> bool:
    return sample == family or (sample.startswith(family) and sample[len(family):] in _SUFFIXES)


def families(text: str) -> Iterator[Family]:
    """The families of one exposition, in order. A ``# HELP``/``# TYPE`` line for a new name starts one; so does
    a sample that does not belong to the family before it (an untyped metric)."""
    current: Family | None = None
    # Lines end at "\n" only: str.splitlines() also cuts at U+0085, U+2028, form feed..., which a label value or
    # HELP text may hold unescaped (the format escapes only \\, \" and \n), and would break the sample in two.
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if current is None or current.name != parts[2] or current.sample_names:
                    if current is not None:
                        yield current
                    current = Family(parts[2])
                current.lines.append(line)
                if parts[1] == "TYPE" and len(parts) == 4:
                    current.kind = parts[3].strip()
            # other comments (and "# EOF") are dropped
            continue
        name = sample_name(line)
        if current is None or not _belongs(name, current.name):
            if current is not None:
                yield current
            current = Family(name)
        current.lines.append(line)
        current.sample_names.add(name)
    if current is not None:
        yield current


def merge(sources: Sequence[tuple[str, str]]) -> Merged:
    """``sources``: (source name, exposition text), in priority order -> one exposition without duplicate
    families."""
    seen: set[str] = set()
    out: list[str] = []
    dropped: list[tuple[str, str]] = []
    for source, text in sources:
        mine: set[str] = set()
        for family in families(text):
            names = family.names()
            if names & seen:
                dropped.append((source, family.name))
                continue
            mine |= names
            out.extend(family.lines)
        seen |= mine
    return Merged("\n".join(out) + "\n" if out else "", tuple(dropped))
