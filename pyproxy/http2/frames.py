"""HTTP/2 frame constants and serialisers (RFC 9113 section 6). No state, no I/O."""

from __future__ import annotations

import struct
from enum import IntEnum

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBL")  # length(24) as H+B, type, flags, stream id (31 bits + R)
_HEADER_ONLY = struct.Struct(">HBBBL")
_UINT32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = 2**24 - 1

# Frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


def frame_header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    return _HEADER_ONLY.pack(length >> 8, length & 0xFF, ftype, flags, stream_id)


def settings_frame(settings: dict[int, int] | None = None, ack: bool = False) -> bytes:
    if ack:
        return frame_header(0, SETTINGS, FLAG_ACK, 0)
    payload = b"".join(_SETTING.pack(k, v) for k, v in (settings or {}).items())
    return frame_header(len(payload), SETTINGS, 0, 0) + payload


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame_header(4, WINDOW_UPDATE, 0, stream_id) + _UINT32.pack(increment)


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return frame_header(4, RST_STREAM, 0, stream_id) + _UINT32.pack(code)


def ping_frame(payload: bytes, ack: bool = False) -> bytes:
    return frame_header(8, PING, FLAG_ACK if ack else 0, 0) + payload


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame_header(8 + len(debug), GOAWAY, 0, 0) + _GOAWAY.pack(last_stream_id, code) + debug


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    """HEADERS (+ CONTINUATION frames when the block exceeds the peer's SETTINGS_MAX_FRAME_SIZE)."""
    flags = FLAG_END_STREAM if end_stream else 0
    n = len(block)
    if n <= max_frame_size:
        return _HEADER_ONLY.pack(n >> 8, n & 0xFF, HEADERS, flags | FLAG_END_HEADERS, stream_id) + block
    parts = [frame_header(max_frame_size, HEADERS, flags, stream_id), block[:max_frame_size]]
    pos = max_frame_size
    while pos < n:
        chunk = block[pos:pos + max_frame_size]
        pos += len(chunk)
        last = pos >= n
        parts.append(frame_header(len(chunk), CONTINUATION, FLAG_END_HEADERS if last else 0, stream_id))
        parts.append(chunk)
    return b"".join(parts)


def data_frames(stream_id: int, data: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    n = len(data)
    if n <= max_frame_size:
        return _HEADER_ONLY.pack(n >> 8, n & 0xFF, DATA, FLAG_END_STREAM if end_stream else 0, stream_id) + data
    parts: list[bytes | memoryview] = []
    view = memoryview(data)
    pos = 0
    while pos < n:
        chunk = view[pos:pos + max_frame_size]
        pos += len(chunk)
        flags = FLAG_END_STREAM if (end_stream and pos >= n) else 0
        parts.append(frame_header(len(chunk), DATA, flags, stream_id))
        parts.append(chunk)
    return b"".join(parts)
