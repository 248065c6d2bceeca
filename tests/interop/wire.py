"""Message (de)serialisers that can tell whether a gRPC message arrived compressed.

The compression test cases need the per-message *compressed flag*, which grpcio does not expose (nor the
``grpc-encoding`` header). The channel/server option ``grpc.per_message_decompression = 0`` makes gRPC
core hand compressed messages to the application as they arrived; the deserialisers here then gunzip them
themselves and record that they did. A serialised protobuf message can never start with byte ``0x1f``
(field 3 with wire type 7, which does not exist), so gzip's magic ``1f 8b`` tells the two cases apart without
ambiguity. Only gzip is recognised: it is the only algorithm this harness asks for.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

# Channel / server options that leave compressed messages compressed for the deserialisers below.
NO_DECOMPRESSION: tuple[tuple[str, int], ...] = (("grpc.per_message_decompression", 0),)
GZIP_MAGIC = b"\x1f\x8b"

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Received(Generic[M]):
    """A decoded message and whether it was compressed on the wire."""

    message: M
    compressed: bool


def inspecting_deserializer(cls: type[M]) -> Callable[[bytes], Received[M]]:
    """A deserialiser for ``cls`` that also reports the message's compressed flag (see module doc)."""

    def parse(data: bytes) -> Received[M]:
        if data[:2] == GZIP_MAGIC:
            return Received(cls.FromString(gzip.decompress(data)), compressed=True)
        return Received(cls.FromString(data), compressed=False)

    return parse


def serialize(message: Message) -> bytes:
    return message.SerializeToString()
