"""A tiny deterministic reader over the fuzz input (not atheris' FuzzedDataProvider: the corpus files stay
meaningful without atheris, and seeds can be written by hand with :class:`Writer`)."""

from __future__ import annotations


class Input:
    """Consumes the input front to back; past its end every read returns zeros / empty bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "big")

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def choice(self, n: int) -> int:
        """An index below ``n`` (one byte)."""
        return self.byte() % n

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def blob(self, length_bytes: int = 1) -> bytes:
        """A length-prefixed byte string (big-endian length of ``length_bytes`` bytes)."""
        return self.take(self.uint(length_bytes))

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


class Writer:
    """Builds inputs that :class:`Input` reads back the same way (for seed corpora)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def byte(self, value: int) -> Writer:
        self.parts.append(bytes((value & 0xFF,)))
        return self

    def uint(self, value: int, nbytes: int) -> Writer:
        self.parts.append(value.to_bytes(nbytes, "big"))
        return self

    def raw(self, data: bytes) -> Writer:
        self.parts.append(data)
        return self

    def blob(self, data: bytes, length_bytes: int = 1) -> Writer:
        return self.uint(len(data), length_bytes).raw(data)

    def build(self) -> bytes:
        return b"".join(self.parts)
