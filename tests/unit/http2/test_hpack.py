"""HPACK (RFC 7541): Appendix C vectors, round trips with the ``hpack`` reference, malformed blocks, limits."""

from __future__ import annotations

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproxy.http2 import hpack as ours
from pyproxy.http2.hpack import (
    Decoder,
    Encoder,
    Header,
    HeaderListTooLarge,
    HpackError,
    encode_integer,
    huffman_decode,
    huffman_encode,
)

# ------------------------------------------------------------------------------------------- helpers


def h(text: str) -> bytes:
    """RFC-style hex dump (spaces and newlines ignored) -> bytes."""
    return bytes.fromhex("".join(text.split()))


def table(decoder: Decoder) -> list[Header]:
    """The dynamic table, newest first, read through the decoder's public behaviour (indexed fields 62...)."""
    entries: list[Header] = []
    while True:
        try:
            entries += decoder.decode(encode_integer(62 + len(entries), 7, 0x80))
        except HpackError:
            return entries


def table_size(entries: list[Header]) -> int:
    return sum(len(n) + len(v) + 32 for n, v in entries)


def reference_decoder(max_allowed: int = 4096) -> hpack.Decoder:
    d = hpack.Decoder(max_header_list_size=1 << 30)
    d.max_allowed_table_size = max_allowed
    return d


def reference_decode(d: hpack.Decoder, block: bytes) -> list[Header]:
    return [(bytes(n), bytes(v)) for n, v in d.decode(block, raw=True)]


# ------------------------------------------------------------------------------------------- Appendix C

C2 = [  # C.2.1 - C.2.4: (block, headers, table after)
    (h("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
     [(b"custom-key", b"custom-header")], [(b"custom-key", b"custom-header")]),
    (h("040c 2f73 616d 706c 652f 7061 7468"), [(b":path", b"/sample/path")], []),
    (h("1008 7061 7373 776f 7264 0673 6563 7265 74"), [(b"password", b"secret")], []),
    (h("82"), [(b":method", b"GET")], []),
]

AUTH = (b":authority", b"www.example.com")
NO_CACHE = (b"cache-control", b"no-cache")
CUSTOM = (b"custom-key", b"custom-value")
REQ1 = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), AUTH]
REQ2 = [*REQ1, NO_CACHE]
REQ3 = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"), AUTH, CUSTOM]
REQUESTS = [  # (headers, table after, size after)
    (REQ1, [AUTH], 57),
    (REQ2, [NO_CACHE, AUTH], 110),
    (REQ3, [CUSTOM, NO_CACHE, AUTH], 164),
]
C3 = [  # C.3: requests without Huffman
    h("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
    h("8286 84be 5808 6e6f 2d63 6163 6865"),
    h("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
]
C4 = [  # C.4: the same requests with Huffman
    h("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
    h("8286 84be 5886 a8eb 1064 9cbf"),
    h("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
]

DATE1 = (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT")
DATE2 = (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")
LOC = (b"location", b"https://www.example.com")
PRIVATE = (b"cache-control", b"private")
COOKIE = (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
GZIP = (b"content-encoding", b"gzip")
RESPONSES = [  # C.5/C.6 with a 256-octet table: evictions on every response
    ([(b":status", b"302"), PRIVATE, DATE1, LOC], [LOC, DATE1, PRIVATE, (b":status", b"302")], 222),
    ([(b":status", b"307"), PRIVATE, DATE1, LOC], [(b":status", b"307"), LOC, DATE1, PRIVATE], 222),
    ([(b":status", b"200"), PRIVATE, DATE2, LOC, GZIP, COOKIE], [COOKIE, GZIP, DATE2], 215),
]
C5 = [
    h("""4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
         3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"""),
    h("4803 3330 37c1 c0bf"),
    h("""88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
         7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
         6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31"""),
]
C6 = [
    h("""4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
         1718 63c7 8f0b 97c8 e9ae 82ae 43d3"""),
    h("4883 640e ffc1 c0bf"),
    h("""88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
         e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07"""),
]


@pytest.mark.parametrize(("block", "headers", "after"), C2, ids=["C.2.1", "C.2.2", "C.2.3", "C.2.4"])
def test_appendix_c2_single_representations(block: bytes, headers: list[Header], after: list[Header]) -> None:
    d = Decoder()
    assert d.decode(block) == headers
    assert table(d) == after


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3-plain", "C.4-huffman"])
def test_appendix_c3_c4_requests_share_one_table(blocks: list[bytes]) -> None:
    d = Decoder()
    for block, (headers, after, size) in zip(blocks, REQUESTS, strict=True):
        assert d.decode(block) == headers
        assert table(d) == after
        assert table_size(after) == size


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5-plain", "C.6-huffman"])
def test_appendix_c5_c6_responses_with_evictions(blocks: list[bytes]) -> None:
    d = Decoder()
    d.max_allowed_table_size = d.table_size = 256  # the examples' SETTINGS_HEADER_TABLE_SIZE
    for block, (headers, after, size) in zip(blocks, RESPONSES, strict=True):
        assert d.decode(block) == headers
        assert table(d) == after
        assert table_size(after) == size


@pytest.mark.parametrize("blocks", [C3, C4, C5, C6], ids=["C.3", "C.4", "C.5", "C.6"])
def test_appendix_vectors_agree_with_the_reference_decoder(blocks: list[bytes]) -> None:
    """Guards the vectors above: the ``hpack`` reference decodes them to the same lists."""
    ref = reference_decoder()
    mine = Decoder()
    if blocks in (C5, C6):
        ref.header_table_size = 256
        mine.max_allowed_table_size = mine.table_size = 256
    for block in blocks:
        assert mine.decode(block) == reference_decode(ref, block)


def test_our_encoder_produces_appendix_c3_style_indexing() -> None:
    """Our encoder (no Huffman) reuses the dynamic table like the C.3 sequence: the 2nd and 3rd requests
    reference the :authority entry the first one added."""
    enc = Encoder()
    first = enc.encode(REQ1)
    assert first == C3[0]
    second = enc.encode(REQ2)
    assert second.startswith(h("8286 84be"))
    d = Decoder()
    assert d.decode(first) == REQ1
    assert d.decode(second) == REQ2
    assert d.decode(enc.encode(REQ3)) == REQ3


# ------------------------------------------------------------------------------------------- Huffman


@given(st.binary(max_size=200))
def test_huffman_round_trip_and_reference_encoding(data: bytes) -> None:
    encoded = huffman_encode(data)
    assert encoded == HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert huffman_decode(encoded) == data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff\xff", id="eos-symbol"),
        pytest.param(b"\x1f\xff", id="padding-longer-than-7-bits"),  # 'a' (00011) + 11 one-bits
        pytest.param(b"\x18", id="padding-not-eos-prefix"),  # 'a' (00011) + 000
        pytest.param(b"\xff", id="only-padding-8-bits"),
        pytest.param(b"\xfe", id="incomplete-code-not-ones"),
    ],
)
def test_huffman_decoding_errors(data: bytes) -> None:
    with pytest.raises(HpackError):
        huffman_decode(data)
    with pytest.raises(HpackError):  # same inside a header block
        Decoder().decode(b"\x00\x01a" + bytes([0x80 | len(data)]) + data)


def test_huffman_cache_does_not_keep_large_strings() -> None:
    """Decoded Huffman strings are cached for reuse; a peer sending many large distinct values must not be
    able to fill memory with them (the cache used to keep up to 4096 entries of any size)."""
    ours._huffman_cache.clear()
    for i in range(64):
        value = huffman_encode(b"%05d" % i + b"v" * 4000)
        assert huffman_decode(value) == b"%05d" % i + b"v" * 4000
    cached = sum(len(k) + len(v) for k, v in ours._huffman_cache.items())
    assert cached < 64 * 1024
    assert huffman_decode(huffman_encode(b"/payment.PaymentService/Charge")) in ours._huffman_cache.values()


# ------------------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\x80", id="indexed-0"),
        pytest.param(b"\xbe", id="indexed-62-empty-table"),
        pytest.param(b"\xff\x80\x01", id="indexed-huge"),
        pytest.param(b"\x7e\x01a", id="literal-name-index-62-empty-table"),
        pytest.param(b"\x0f\x30\x01a", id="literal-without-indexing-name-index-63"),
        pytest.param(b"\x1f\x30\x01a", id="never-indexed-name-index-63"),
        pytest.param(b"\xff", id="truncated-integer"),
        pytest.param(b"\xff\x80", id="truncated-integer-continuation"),
        pytest.param(b"\x40\x0acustom", id="truncated-name"),
        pytest.param(b"\x40\x03abc\x05ab", id="truncated-value"),
        pytest.param(b"\x40", id="literal-without-name-length"),
        pytest.param(b"\x40\x03abc", id="literal-without-value"),
        pytest.param(b"\x40\x7f", id="truncated-string-length"),
        pytest.param(b"\x00\x7f\xff\xff\xff\xff\xff\x01abc", id="string-length-overflow"),
        pytest.param(b"\xff" + b"\xff" * 10 + b"\x01", id="integer-overflow"),
        pytest.param(b"\x82\x3f\xe1\x1f", id="size-update-after-a-field"),
        pytest.param(b"\x82\x20\x82", id="size-update-between-fields"),
        pytest.param(b"\x3f\xe2\x1f", id="size-update-above-maximum"),
        pytest.param(b"\x3f\xff\xff\xff\xff\x0f", id="size-update-huge"),
    ],
)
def test_malformed_blocks_raise_hpack_error(block: bytes) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)


def test_size_update_limit_follows_our_setting() -> None:
    d = Decoder()
    d.max_allowed_table_size = 100
    with pytest.raises(HpackError):
        d.decode(b"\x3f\x46")  # 101
    d = Decoder()
    d.max_allowed_table_size = 100
    assert d.decode(b"\x3f\x45\x82") == [(b":method", b"GET")]  # 100 is fine
    assert d.table_size == 100


def test_size_updates_at_the_start_of_a_block() -> None:
    """RFC 7541 4.2: two updates (the minimum, then the final size) may start a block."""
    d = Decoder()
    d.decode(b"\x40\x01a\x01b")
    assert table(d) == [(b"a", b"b")]
    assert d.decode(b"\x20\x3f\xe1\x1f\x82") == [(b":method", b"GET")]  # 0 evicts everything, then 4096
    assert table(d) == []
    assert d.table_size == 4096


def test_size_update_evicts_entries_and_later_inserts_respect_it() -> None:
    d = Decoder()
    d.decode(b"\x40\x01a\x01b" + b"\x40\x01c\x01d")  # two entries of 34 octets
    assert table(d) == [(b"c", b"d"), (b"a", b"b")]
    d.decode(b"\x3f\x23")  # 66: the oldest goes
    assert table(d) == [(b"c", b"d")]
    d.decode(b"\x40\x01e\x01f")
    assert table(d) == [(b"e", b"f")]


def test_entry_larger_than_the_table_empties_it() -> None:
    """RFC 7541 4.4: adding an entry larger than the maximum size empties the table (not an error)."""
    d = Decoder()
    d.decode(b"\x40\x01a\x01b")
    big = b"x" * 5000
    assert d.decode(b"\x40\x01k" + encode_integer(len(big), 7, 0) + big) == [(b"k", big)]
    assert table(d) == []


def test_header_list_too_large_keeps_the_decoder_in_sync() -> None:
    d = Decoder(max_header_list_size=100)
    block = b"\x40\x04name" + encode_integer(200, 7, 0) + b"v" * 200  # indexed into the dynamic table
    with pytest.raises(HeaderListTooLarge):
        d.decode(block)
    # The entry was still added: the next block's reference to it (index 62) decodes.
    with pytest.raises(HeaderListTooLarge):
        d.decode(b"\xbe")
    d.max_header_list_size = 1000
    assert d.decode(b"\xbe\x82") == [(b"name", b"v" * 200), (b":method", b"GET")]


def test_header_list_size_counts_name_value_and_32() -> None:
    d = Decoder(max_header_list_size=32 + 7 + 3)  # ":method" + "GET" + 32
    assert d.decode(b"\x82") == [(b":method", b"GET")]
    with pytest.raises(HeaderListTooLarge):
        d.decode(b"\x82\x82")


# ------------------------------------------------------------------------------------------- encoder


def test_encoder_signals_the_smallest_size_then_the_final_one() -> None:
    """RFC 7541 4.2: when the maximum changes more than once between blocks, the smallest value is signalled
    before the final one, so a decoder that shrank its table in between agrees on the evictions."""
    enc = Encoder()
    enc.encode([(b"x-a", b"1")])
    enc.set_max_table_size(0)
    enc.set_max_table_size(4096)
    block = enc.encode([(b":method", b"GET")])
    assert block == b"\x20\x3f\xe1\x1f\x82"
    enc.set_max_table_size(100)
    enc.set_max_table_size(2000)
    enc.set_max_table_size(50)
    assert enc.encode([]) == b"\x3f\x13"  # only the final 50 (it is also the smallest)


def test_encoder_sensitive_and_per_request_fields_are_not_indexed() -> None:
    enc = Encoder()
    fields = [(b"authorization", b"Bearer x"), (b"grpc-timeout", b"5S"), (b"x-custom", b"1")]
    block = enc.encode(fields)
    d = reference_decoder()
    decoded = list(d.decode(block, raw=True))
    assert [(bytes(n), bytes(v)) for n, v in decoded] == fields
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)
    assert [(bytes(n), bytes(v)) for n, v in d.header_table.dynamic_entries] == [(b"x-custom", b"1")]


def test_encoder_skips_indexing_values_larger_than_half_the_table() -> None:
    enc = Encoder()
    enc.set_max_table_size(200)
    big = (b"x-big", b"v" * 100)
    d = Decoder()
    d.max_allowed_table_size = 200
    d.decode(enc.encode([big]))
    assert table(d) == []


def test_encoder_index_beyond_126_uses_multi_byte_integers() -> None:
    enc = Encoder()
    fields = [(b"x-%d" % i, b"v") for i in range(80)]  # 80 entries of 36-37 octets: indices up to 141
    d = Decoder()
    assert d.decode(enc.encode(fields)) == fields
    block = enc.encode(fields[:3])  # all indexed now, the oldest beyond 127
    assert len(block) == 6
    assert d.decode(block) == fields[:3]


# ------------------------------------------------------------------------------------------- round trips

names = st.one_of(
    st.sampled_from([b":method", b":path", b":authority", b"content-type", b"te", b"grpc-status", b"user-agent",
                     b"authorization", b"grpc-timeout", b"cookie", b"x-request-id", b"accept-encoding"]),
    st.binary(min_size=1, max_size=20),
)
values = st.one_of(st.sampled_from([b"", b"GET", b"POST", b"/", b"0", b"application/grpc", b"trailers"]),
                   st.binary(max_size=300))
header_lists = st.lists(st.tuples(names, values), max_size=12)
# A round: (table size change or None, header lists encoded one after the other).
rounds = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 8192)),
                            st.lists(header_lists, min_size=1, max_size=4)), min_size=1, max_size=6)
slow = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@slow
@given(rounds)
def test_round_trip_our_encoder_to_our_decoder(plan: list[tuple[int | None, list[list[Header]]]]) -> None:
    enc = Encoder()
    dec = Decoder(max_header_list_size=1 << 30)
    for size, lists in plan:
        if size is not None:  # the decoder side advertises SETTINGS_HEADER_TABLE_SIZE = size
            dec.max_allowed_table_size = size
            enc.set_max_table_size(size)
        for headers in lists:
            assert dec.decode(enc.encode(headers)) == headers
            assert dec.table_size <= dec.max_allowed_table_size


@slow
@given(rounds)
def test_round_trip_our_encoder_to_reference_decoder(plan: list[tuple[int | None, list[list[Header]]]]) -> None:
    enc = Encoder()
    ref = reference_decoder()
    for size, lists in plan:
        if size is not None:
            ref.max_allowed_table_size = size
            enc.set_max_table_size(size)
        for headers in lists:
            assert reference_decode(ref, enc.encode(headers)) == headers


@slow
@given(rounds, st.booleans())
def test_round_trip_reference_encoder_to_our_decoder(plan: list[tuple[int | None, list[list[Header]]]],
                                                     huffman: bool) -> None:
    ref = hpack.Encoder()
    dec = Decoder(max_header_list_size=1 << 30)
    for size, lists in plan:
        if size is not None:
            dec.max_allowed_table_size = size
            ref.header_table_size = size
        for headers in lists:
            assert dec.decode(bytes(ref.encode(headers, huffman=huffman))) == headers


@slow
@given(st.lists(header_lists, min_size=2, max_size=5), st.integers(10, 400))
def test_oversized_lists_in_a_sequence_keep_decoders_in_sync(lists: list[list[Header]], limit: int) -> None:
    """Whatever the lists, a decoder with a small list limit either returns the list or raises
    HeaderListTooLarge, and never diverges: a later list under the limit still decodes exactly."""
    enc = hpack.Encoder()
    dec = Decoder(max_header_list_size=limit)
    for headers in lists:
        size = sum(len(n) + len(v) + 32 for n, v in headers)
        block = bytes(enc.encode(headers))
        if size > limit:
            with pytest.raises(HeaderListTooLarge):
                dec.decode(block)
        else:
            assert dec.decode(block) == headers


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_blocks_raise_only_hpack_errors(block: bytes) -> None:
    try:
        Decoder(max_header_list_size=1 << 20).decode(block)
    except HpackError:
        pass
