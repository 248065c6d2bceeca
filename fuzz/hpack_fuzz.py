"""HPACK (:mod:`pyproxy.http2.hpack`), checked against the ``hpack`` package as the reference.

Mode byte (low 2 bits):

- 0, decode: header blocks decoded in turn by one of our decoders and one reference decoder (shared dynamic
  table state across blocks, a table size limit chosen by the input). Ours raises only ``HpackError`` or
  ``HeaderListTooLarge``; while both accept, they must decode the same fields; a block the reference refuses
  must not be accepted by ours (after a refusal the table states may differ, so the comparison stops).
- 1, Huffman: our decoder and the reference accept the same strings and decode them the same way; any
  string survives encode + decode.
- 2/3, encoder: header lists from the input, with SETTINGS_HEADER_TABLE_SIZE changes between them, go
  through our encoder; our decoder and the reference must both give back exactly the list.
"""

from __future__ import annotations

import hpack as ref
from hpack.huffman_table import decode_huffman as ref_huffman_decode

from fuzz._input import Input
from pyproxy.http2.hpack import Decoder, Encoder, HeaderListTooLarge, HpackError, huffman_decode, huffman_encode

MAX_BLOCKS = 16
_REF_ERRORS = (ref.HPACKError,)
_TABLE_SIZES = (0, 1, 32, 100, 4096, 4097, 65536, 2**32 - 1)
_LIST_SIZES = (0, 100, 1 << 10, 60 * 1024, 1 << 20)


def _reference_decoder(table_size: int) -> ref.Decoder:
    d = ref.Decoder(max_header_list_size=1 << 30)
    d.max_allowed_table_size = table_size
    return d


def _decode(inp: Input) -> None:
    table_size = _TABLE_SIZES[inp.choice(len(_TABLE_SIZES))]
    list_limit = _LIST_SIZES[inp.choice(len(_LIST_SIZES))]
    ours = Decoder(list_limit)
    ours.max_allowed_table_size = table_size
    theirs = _reference_decoder(table_size)
    comparing = True
    for _ in range(MAX_BLOCKS):
        if not inp.remaining:
            return
        block = inp.blob(2)
        too_large = False
        try:
            got = ours.decode(block)
        except HpackError:
            comparing = False  # the reference may accept what we refuse (we bound integers, for one)
            continue
        except HeaderListTooLarge:
            too_large = True
            got = []
        if not comparing:
            continue
        try:
            expected = [(bytes(n), bytes(v)) for n, v in theirs.decode(block, raw=True)]
        except _REF_ERRORS as e:
            raise AssertionError(f"we accepted a block the reference refuses ({e!r}): {block.hex()}") from None
        size = sum(len(n) + len(v) + 32 for n, v in expected)
        if too_large:
            assert size > list_limit, f"header list of {size} bytes reported too large (limit {list_limit})"
        else:
            assert got == expected, f"decoded {got!r}, the reference {expected!r}"
            assert size <= list_limit, f"header list of {size} bytes accepted (limit {list_limit})"


def _huffman(inp: Input) -> None:
    data = inp.rest()
    try:
        got: bytes | None = huffman_decode(data)
    except HpackError:
        got = None
    try:
        expected: bytes | None = bytes(ref_huffman_decode(data))
    except ref.HPACKDecodingError:
        expected = None
    assert got == expected, f"Huffman {data.hex()}: ours {got!r}, reference {expected!r}"
    assert huffman_decode(huffman_encode(data)) == data, "Huffman round trip"


def _encode(inp: Input) -> None:
    encoder = Encoder()
    setting = 4096
    ours = Decoder(1 << 30)
    theirs = _reference_decoder(setting)
    for _ in range(MAX_BLOCKS):
        if not inp.remaining:
            return
        flags = inp.byte()
        if flags & 1:  # the peer changes SETTINGS_HEADER_TABLE_SIZE (once or twice) before this block
            for _ in range(1 + (flags >> 1 & 1)):
                setting = _TABLE_SIZES[inp.choice(len(_TABLE_SIZES))]
                encoder.set_max_table_size(setting)
        ours.max_allowed_table_size = theirs.max_allowed_table_size = setting
        headers = []
        for _ in range(flags >> 2 & 15):
            kind = inp.byte()
            if kind & 3 == 0:  # a field of the static table, or its name with another value
                name, value = ref.table.HeaderTable.STATIC_TABLE[kind % 61]
                headers.append((name, value if kind & 4 else inp.blob()))
            elif kind & 3 == 1 and headers:  # repeat a field of this list (indexed references)
                headers.append(headers[kind % len(headers)])
            else:
                headers.append((inp.blob(), inp.blob(2 if kind & 4 else 1)))
        block = encoder.encode(headers)
        assert ours.decode(block) == headers, "our decoder disagrees with our encoder"
        assert [(bytes(n), bytes(v)) for n, v in theirs.decode(block, raw=True)] == headers, (
            "the reference decoder disagrees with our encoder")


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte() & 3
    if mode == 0:
        _decode(inp)
    elif mode == 1:
        _huffman(inp)
    else:
        _encode(inp)
