"""Envoy's ``tls_inspector`` in miniature: peek at the first bytes of a connection.

A TLS connection starts with a handshake record (byte 0x16); everything else is plaintext (for us: the
HTTP/2 preface ``PRI * HTTP/2.0``). From a TLS ClientHello we read SNI and ALPN, which filter chain matching
needs before the handshake. The bytes read are replayed to the chosen transport.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TLS_HANDSHAKE = 0x16
_EXT_SNI = 0
_EXT_ALPN = 16


@dataclass(frozen=True, slots=True)
class ClientHelloInfo:
    server_name: str | None
    alpn: tuple[str, ...]


def looks_like_tls(first: bytes) -> bool:
    return len(first) >= 3 and first[0] == TLS_HANDSHAKE and first[1] == 3


def client_hello_complete(data: bytes) -> bool:
    """True once the whole first TLS record is buffered (or it can never be parsed)."""
    if len(data) < 5:
        return False
    length: int = struct.unpack_from(">H", data, 3)[0]
    return len(data) >= 5 + length


def parse_client_hello(data: bytes) -> ClientHelloInfo:
    """SNI and ALPN from the first TLS record; empty values when absent or malformed."""
    try:
        return _parse(data)
    except (IndexError, struct.error, UnicodeDecodeError):
        return ClientHelloInfo(None, ())


def _parse(data: bytes) -> ClientHelloInfo:
    record_len = struct.unpack_from(">H", data, 3)[0]
    body = data[5:5 + record_len]
    if not body or body[0] != 1:  # ClientHello
        return ClientHelloInfo(None, ())
    pos = 4 + 2 + 32  # handshake header, version, random
    sid_len = body[pos]
    pos += 1 + sid_len
    cs_len = struct.unpack_from(">H", body, pos)[0]
    pos += 2 + cs_len
    comp_len = body[pos]
    pos += 1 + comp_len
    if pos + 2 > len(body):
        return ClientHelloInfo(None, ())
    ext_total = struct.unpack_from(">H", body, pos)[0]
    pos += 2
    end = min(len(body), pos + ext_total)
    sni: str | None = None
    alpn: list[str] = []
    while pos + 4 <= end:
        ext_type, ext_len = struct.unpack_from(">HH", body, pos)
        pos += 4
        ext = body[pos:pos + ext_len]
        pos += ext_len
        if ext_type == _EXT_SNI and len(ext) >= 5:
            name_len = struct.unpack_from(">H", ext, 3)[0]
            if ext[2] == 0:
                sni = ext[5:5 + name_len].decode("ascii")
        elif ext_type == _EXT_ALPN and len(ext) >= 2:
            p = 2
            while p < len(ext):
                n = ext[p]
                alpn.append(ext[p + 1:p + 1 + n].decode("ascii"))
                p += 1 + n
    return ClientHelloInfo(sni, tuple(alpn))
