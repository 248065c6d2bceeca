"""h2spec ``hpack`` section (RFC 7541): invalid indices, table size updates, Huffman padding.

Each case appends (or prepends) a hand-made HPACK representation to a valid gRPC request header block; the
byte strings are h2spec's. RFC 9113 4.3: "A decoding error in a field block MUST be treated as a connection
error of type COMPRESSION_ERROR."
"""

from __future__ import annotations

import pytest

from tests.protocol.deviations import H2_HPACK_PROTOCOL_ERROR, NGINX_HPACK_LAX
from tests.protocol.grpc_shapes import request_headers
from tests.protocol.h2peer import ErrorCode, H2Peer, Setting, hpack_integer


@pytest.mark.parametrize(
    "representation",
    [
        pytest.param(b"\xc6", id="2_3_3_1_indexed_field_with_invalid_index_70"),
        pytest.param(b"\x7f\x07\x00", id="2_3_3_2_literal_field_with_invalid_name_index_70"),
        pytest.param(b"\x21", id="4_2_1_table_size_update_at_end_of_block", marks=NGINX_HPACK_LAX),
        pytest.param(
            b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff",
            id="5_2_1_huffman_padding_over_7_bits",
            marks=NGINX_HPACK_LAX,
        ),
        pytest.param(b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90", id="5_2_2_huffman_padded_by_zero"),
        pytest.param(b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f", id="5_2_3_huffman_contains_eos"),
        pytest.param(b"\x80", id="6_1_1_indexed_field_with_index_0"),
    ],
)
@H2_HPACK_PROTOCOL_ERROR
def test_hpack_decoding_error(peer: H2Peer, representation: bytes) -> None:
    """RFC 7541 2.3.3: "Indices strictly greater than the sum of the lengths of both tables MUST be treated
    as a decoding error." 4.2: "This dynamic table size update MUST occur at the beginning of the first
    field block following the change to the dynamic table size." 5.2: "A padding strictly longer than 7
    bits MUST be treated as a decoding error. A padding not corresponding to the most significant bits of
    the code for the EOS symbol MUST be treated as a decoding error. A Huffman-encoded string literal
    containing the EOS symbol MUST be treated as a decoding error." 6.1: "The index value of 0 is not used.
    It MUST be treated as a decoding error if found in an indexed header field representation."
    (h2spec hpack/2.3.3/1-2, 4.2/1, 5.2/1-3, 6.1/1)"""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority)) + representation
    peer.send_headers(1, block, end_stream=True)
    peer.expect_connection_error(ErrorCode.COMPRESSION_ERROR)


@H2_HPACK_PROTOCOL_ERROR
def test_hpack_6_3_1_table_size_update_above_settings_limit(peer: H2Peer) -> None:
    """RFC 7541 6.3: "The new maximum size MUST be lower than or equal to the limit determined by the
    protocol using HPACK. A value that exceeds this limit MUST be treated as a decoding error. In HTTP/2,
    this limit is the last value of the SETTINGS_HEADER_TABLE_SIZE parameter received from the decoder and
    acknowledged by the encoder." (h2spec hpack/6.3/1)"""
    peer.handshake()
    limit = peer.server_settings.get(Setting.HEADER_TABLE_SIZE, 4096)
    block = hpack_integer(limit + 1, 5, 0x20) + peer.encode_headers(request_headers(peer.authority))
    peer.send_headers(1, block, end_stream=True)
    peer.expect_connection_error(ErrorCode.COMPRESSION_ERROR)
