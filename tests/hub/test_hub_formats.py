"""Unit tests of the Xet formats and the LZ4 decoder used to read xorbs."""

from __future__ import annotations

import os

import pytest

import lz4.frame

from talklora_hub.localhub.xet import (COMPRESSION_BG4_LZ4, COMPRESSION_LZ4, ChunkRecord, XetFormatError, _bg4_regroup,
                                  decode_chunk, hash_to_hex, hex_to_hash)


def test_lz4_chunks_decode_and_corrupt_ones_are_refused():
    raw = os.urandom(64) * 20  # repetitive, so LZ4 really compresses it
    frame = lz4.frame.compress(raw)
    assert len(frame) < len(raw)
    assert decode_chunk(ChunkRecord(0, len(frame), COMPRESSION_LZ4, len(raw)), frame) == raw
    grouped = b"".join(raw[lane::4] for lane in range(4))
    assert decode_chunk(ChunkRecord(0, 0, COMPRESSION_BG4_LZ4, len(raw)), lz4.frame.compress(grouped)) == raw
    with pytest.raises(XetFormatError, match="corrupt chunk"):
        decode_chunk(ChunkRecord(0, 14, COMPRESSION_LZ4, 14), b"not lz4 at all")
    with pytest.raises(XetFormatError, match="decodes to"):  # a frame whose size disagrees with its header
        decode_chunk(ChunkRecord(0, len(frame), COMPRESSION_LZ4, len(raw) + 1), frame)


def test_xet_hash_string_form():
    raw = bytes(range(32))  # each 8-byte word is read as a little-endian u64
    assert hash_to_hex(raw) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hex_to_hash(hash_to_hex(raw)) == raw


@pytest.mark.parametrize("size", [0, 1, 4, 7, 1001])
def test_byte_grouping_inverse(size):
    data = os.urandom(size)
    grouped = b"".join(data[lane::4] for lane in range(4))
    assert _bg4_regroup(grouped) == data
