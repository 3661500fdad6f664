"""Unit tests of the Xet formats and the LZ4 decoder used to read xorbs."""

from __future__ import annotations

import os

import pytest

from talklora_hub.hub.lz4 import LZ4Error, decompress_frame
from talklora_hub.hub.xet import _bg4_regroup, hash_to_hex, hex_to_hash


def _frame(block: bytes) -> bytes:
    # magic, FLG (version 01, independent blocks), BD, header checksum (not checked), block, end mark
    return bytes.fromhex("04224d18") + bytes([0x60, 0x40, 0x00]) + len(block).to_bytes(4, "little") + block + bytes(4)


def test_lz4_literals_and_overlapping_match():
    block = bytes([0x35]) + b"abc" + bytes([3, 0]) + bytes([0x20]) + b"xy"  # "abc", copy 9 from 3 back, "xy"
    assert decompress_frame(_frame(block)) == b"abcabcabcabcxy"


def test_lz4_uncompressed_block_and_errors():
    raw = os.urandom(100)
    frame = bytes.fromhex("04224d18") + bytes([0x60, 0x40, 0x00]) + (len(raw) | 1 << 31).to_bytes(4, "little") + raw + bytes(4)
    assert decompress_frame(frame) == raw
    with pytest.raises(LZ4Error):
        decompress_frame(b"not lz4 at all")
    with pytest.raises(LZ4Error):  # match offset pointing before the start of the output
        decompress_frame(_frame(bytes([0x10]) + b"a" + bytes([9, 0])))


def test_xet_hash_string_form():
    raw = bytes(range(32))  # each 8-byte word is read as a little-endian u64
    assert hash_to_hex(raw) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hex_to_hash(hash_to_hex(raw)) == raw


@pytest.mark.parametrize("size", [0, 1, 4, 7, 1001])
def test_byte_grouping_inverse(size):
    data = os.urandom(size)
    grouped = b"".join(data[lane::4] for lane in range(4))
    assert _bg4_regroup(grouped) == data
