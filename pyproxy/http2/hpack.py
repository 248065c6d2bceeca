"""HPACK (RFC 7541): a decoder that validates everything and an encoder tuned for proxying.

Headers are ``(name, value)`` pairs of ``bytes``; the proxy never needs to turn most of them into text.

Decoder: full RFC 7541 (indexed fields, literals with/without/never indexing, dynamic table size updates at the
start of a block only, Huffman strings with EOS and padding checks). Decoded Huffman strings are cached by
their encoded bytes, because a proxy sees the same values (paths, authorities, user agents) again and again.

Encoder: indexes what repeats and stays small, never Huffman-encodes (cheaper in Python, and after the first
request most fields are one-byte indexed references anyway), and never indexes sensitive or per-request
values (``grpc-timeout``, ``authorization``...), which would only churn the table.
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]

STATIC_TABLE: tuple[Header, ...] = tuple(HeaderTable.STATIC_TABLE)
STATIC_LEN = len(STATIC_TABLE)  # 61
ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
DEFAULT_TABLE_SIZE = 4096


class HpackError(Exception):
    """A header block that cannot be decoded: a connection error of type COMPRESSION_ERROR."""


class HeaderListTooLarge(Exception):
    """The decoded header list exceeds the limit we advertised (the block was still fully decoded)."""


# ------------------------------------------------------------------------------------------- Huffman

def _build_huffman_decoder() -> list[tuple[int, int, bytes, bool]]:
    """A 4-bit-at-a-time decoding table: ``table[state * 16 + nibble] = (next_state, flags, emitted, ok)``.

    States are internal nodes of the Huffman tree. ``flags`` bit 1: failure (EOS decoded), bit 2: the state
    reached is an "accepting" one (the bits since the last symbol are all ones and fewer than 8, so the string
    may end here).
    """
    # Build the tree: node = [child0, child1]; leaves are ints (symbols).
    root: list[object] = [None, None]
    for sym, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)):
        node = root
        for i in range(length - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                node[bit] = sym
            else:
                nxt = node[bit]
                if nxt is None:
                    nxt = [None, None]
                    node[bit] = nxt
                assert isinstance(nxt, list)
                node = nxt
    # Number internal nodes; record for each its depth of consecutive ones from the root path.
    nodes: list[list[object]] = []
    ids: dict[int, int] = {}
    ones: list[int] = []  # number of bits since last symbol if all were ones, else -1

    def walk(node: list[object], all_ones_depth: int) -> None:
        ids[id(node)] = len(nodes)
        nodes.append(node)
        ones.append(all_ones_depth)
        for bit in (0, 1):
            child = node[bit]
            if isinstance(child, list):
                depth = all_ones_depth + 1 if (bit == 1 and all_ones_depth >= 0) else -1
                walk(child, depth)

    walk(root, 0)
    table: list[tuple[int, int, bytes, bool]] = []
    for node in nodes:
        for nibble in range(16):
            cur = node
            out = bytearray()
            failed = False
            for i in (3, 2, 1, 0):
                bit = (nibble >> i) & 1
                child = cur[bit]
                if isinstance(child, int):
                    if child == 256:
                        failed = True
                        break
                    out.append(child)
                    cur = root
                else:
                    assert isinstance(child, list)
                    cur = child
            state = ids[id(cur)]
            accepting = 0 <= ones[state] < 8
            table.append((state, 1 if failed else 0, bytes(out), accepting))
    return table


_HUFFMAN_TABLE = _build_huffman_decoder()
_huffman_cache: dict[bytes, bytes] = {}
_HUFFMAN_CACHE_MAX = 4096
# Only short strings are cached (paths, authorities, user agents...): a peer sending large distinct values
# could otherwise park 4096 x 16 KiB+ of keys and values here. Bound: 4096 x (256 + 320) octets.
_HUFFMAN_CACHE_MAX_LEN = 256


def huffman_decode(data: bytes) -> bytes:
    cached = _huffman_cache.get(data)
    if cached is not None:
        return cached
    table = _HUFFMAN_TABLE
    state = 0
    accepting = True
    out = bytearray()
    for byte in data:
        state, failed, emitted, accepting = table[state * 16 + (byte >> 4)]
        if failed:
            raise HpackError("EOS symbol in Huffman string")
        if emitted:
            out += emitted
        state, failed, emitted, accepting = table[state * 16 + (byte & 0x0F)]
        if failed:
            raise HpackError("EOS symbol in Huffman string")
        if emitted:
            out += emitted
    if not accepting:
        raise HpackError("invalid Huffman padding")
    result = bytes(out)
    if len(data) <= _HUFFMAN_CACHE_MAX_LEN:
        if len(_huffman_cache) >= _HUFFMAN_CACHE_MAX:
            _huffman_cache.clear()
        _huffman_cache[data] = result
    return result


def huffman_encode(data: bytes) -> bytes:
    """Huffman-encode ``data`` (used by tests and peers; the proxy's encoder sends raw strings)."""
    acc = 0
    nbits = 0
    for byte in data:
        acc = (acc << REQUEST_CODES_LENGTH[byte]) | REQUEST_CODES[byte]
        nbits += REQUEST_CODES_LENGTH[byte]
    pad = (-nbits) % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    nbits += pad
    return acc.to_bytes(nbits // 8, "big")


# ------------------------------------------------------------------------------------------- integers

def encode_integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HpackError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too large")


# ------------------------------------------------------------------------------------------- decoder


class Decoder:
    """Decodes header blocks for one direction of one connection."""

    __slots__ = ("_dynamic", "_size", "max_allowed_table_size", "max_header_list_size", "table_size")

    def __init__(self, max_header_list_size: int = 1 << 20) -> None:
        self._dynamic: deque[Header] = deque()  # newest first
        self._size = 0
        self.table_size = DEFAULT_TABLE_SIZE  # current maximum set by the peer's size updates
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE  # our SETTINGS_HEADER_TABLE_SIZE
        self.max_header_list_size = max_header_list_size

    def _get(self, index: int) -> Header:
        if index <= 0:
            raise HpackError("index 0 is invalid")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        try:
            return self._dynamic[index - STATIC_LEN - 1]
        except IndexError:
            raise HpackError(f"index {index} is outside the table") from None

    def _add(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
        if size > self.table_size:
            self._dynamic.clear()
            self._size = 0
            return
        self._dynamic.appendleft(header)
        self._size += size
        limit = self.table_size
        while self._size > limit:
            old = self._dynamic.pop()
            self._size -= len(old[0]) + len(old[1]) + ENTRY_OVERHEAD

    def _resize(self, new_size: int) -> None:
        if new_size > self.max_allowed_table_size:
            raise HpackError(f"table size update {new_size} exceeds the allowed {self.max_allowed_table_size}")
        self.table_size = new_size
        while self._size > new_size:
            old = self._dynamic.pop()
            self._size -= len(old[0]) + len(old[1]) + ENTRY_OVERHEAD

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(data):
            raise HpackError("truncated string")
        huffman = data[pos] & 0x80
        length, pos = _decode_integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HpackError("string runs past the end of the block")
        raw = data[pos:end]
        return (huffman_decode(raw) if huffman else raw), end

    def decode(self, data: bytes) -> list[Header]:
        """Decode a whole header block. Raises HpackError (connection error) or HeaderListTooLarge."""
        headers: list[Header] = []
        append = headers.append
        pos = 0
        end = len(data)
        list_size = 0
        may_resize = True
        static = STATIC_TABLE
        if self.table_size > self.max_allowed_table_size and (not end or data[0] & 0xE0 != 0x20):
            # Our SETTINGS_HEADER_TABLE_SIZE shrank below the table's size: the first block after the peer
            # acknowledged it must start with a size update that shrinks the table (RFC 7541 4.2; nghttp2
            # requires it too), or the peer could go on filling a table larger than we allow.
            raise HpackError("missing the table size update our smaller SETTINGS_HEADER_TABLE_SIZE requires")
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # indexed field
                index = byte & 0x7F
                if index in (0x7F, 0):
                    index, pos = _decode_integer(data, pos, 7)
                else:
                    pos += 1
                header = static[index - 1] if 0 < index <= STATIC_LEN else self._get(index)
                may_resize = False
            elif byte & 0x40:  # literal with incremental indexing
                index, pos = _decode_integer(data, pos, 6)
                if index:
                    name = self._get(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
                header = (name, value)
                self._add(header)
                may_resize = False
            elif byte & 0x20:  # dynamic table size update
                if not may_resize:
                    raise HpackError("dynamic table size update after the first field")
                size, pos = _decode_integer(data, pos, 5)
                self._resize(size)
                continue
            else:  # literal without indexing (0000) / never indexed (0001)
                index, pos = _decode_integer(data, pos, 4)
                if index:
                    name = self._get(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
                header = (name, value)
                may_resize = False
            list_size += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            append(header)
        if list_size > self.max_header_list_size:
            raise HeaderListTooLarge(list_size)
        return headers


# ------------------------------------------------------------------------------------------- encoder

# Values that change with every request: indexing them would evict useful entries.
_NEVER_INDEX_NAMES = frozenset({b"grpc-timeout", b"authorization", b"proxy-authorization", b"cookie",
                                b"set-cookie", b"content-length", b"x-request-id", b"traceparent",
                                b"x-envoy-expected-rq-timeout-ms", b"x-envoy-upstream-service-time",
                                b"x-envoy-attempt-count", b"date", b"grpc-message"})
_SENSITIVE_NAMES = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})

_STATIC_PAIRS: dict[Header, int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _i, _h in enumerate(STATIC_TABLE, start=1):
    _STATIC_PAIRS.setdefault(_h, _i)
    _STATIC_NAMES.setdefault(_h[0], _i)


class Encoder:
    """Encodes header lists for one direction of one connection (table size: the peer's setting, max 4096)."""

    __slots__ = ("_entries", "_name_seq", "_pair_seq", "_pending_min", "_pending_resize", "_seq", "_size",
                 "table_size")

    def __init__(self) -> None:
        self._entries: deque[tuple[Header, int, int]] = deque()  # (header, size, seq), oldest first
        self._pair_seq: dict[Header, int] = {}
        self._name_seq: dict[bytes, int] = {}
        self._seq = 0  # sequence number of the newest entry
        self._size = 0
        self.table_size = DEFAULT_TABLE_SIZE
        self._pending_resize: int | None = None  # size update owed at the start of the next block
        self._pending_min = DEFAULT_TABLE_SIZE  # smallest size since the last block

    def set_max_table_size(self, peer_setting: int) -> None:
        """Apply the peer's SETTINGS_HEADER_TABLE_SIZE (we never use more than the default 4096)."""
        new = min(peer_setting, DEFAULT_TABLE_SIZE)
        if new != self.table_size:
            if self._pending_resize is None or new < self._pending_min:
                self._pending_min = new
            self.table_size = new
            self._pending_resize = new
            self._evict(new)

    def _evict(self, limit: int) -> None:
        entries = self._entries
        while self._size > limit and entries:
            header, size, seq = entries.popleft()
            self._size -= size
            if self._pair_seq.get(header) == seq:
                del self._pair_seq[header]
            if self._name_seq.get(header[0]) == seq:
                del self._name_seq[header[0]]

    def encode(self, headers: list[Header] | tuple[Header, ...]) -> bytes:
        out = bytearray()
        if self._pending_resize is not None:
            # RFC 7541 4.2: after several changes, signal the smallest size first (the decoder may have
            # evicted down to it), then the final one.
            if self._pending_min < self._pending_resize:
                out += encode_integer(self._pending_min, 5, 0x20)
            out += encode_integer(self._pending_resize, 5, 0x20)
            self._pending_resize = None
        static_pairs = _STATIC_PAIRS
        pair_seq = self._pair_seq
        for header in headers:
            index = static_pairs.get(header)
            if index is not None:
                if index < 127:
                    out.append(0x80 | index)
                else:
                    out += encode_integer(index, 7, 0x80)
                continue
            seq = pair_seq.get(header)
            if seq is not None:
                index = STATIC_LEN + 1 + self._seq - seq
                if index < 127:
                    out.append(0x80 | index)
                else:
                    out += encode_integer(index, 7, 0x80)
                continue
            name, value = header
            size = len(name) + len(value) + ENTRY_OVERHEAD
            name_index = _STATIC_NAMES.get(name)
            if name_index is None:
                nseq = self._name_seq.get(name)
                if nseq is not None:
                    name_index = STATIC_LEN + 1 + self._seq - nseq
            if name in _NEVER_INDEX_NAMES or size > self.table_size // 2:
                flags = 0x10 if name in _SENSITIVE_NAMES else 0x00
                out += encode_integer(name_index or 0, 4, flags)
            else:
                out += encode_integer(name_index or 0, 6, 0x40)
                self._insert(header, size)
            if not name_index:
                out += encode_integer(len(name), 7, 0)
                out += name
            out += encode_integer(len(value), 7, 0)
            out += value
        return bytes(out)

    def _insert(self, header: Header, size: int) -> None:
        self._evict(self.table_size - size)
        self._seq += 1
        self._entries.append((header, size, self._seq))
        self._size += size
        self._pair_seq[header] = self._seq
        self._name_seq[header[0]] = self._seq
