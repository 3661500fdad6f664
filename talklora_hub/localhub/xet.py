"""Binary formats of the Xet storage protocol, as far as a receiving server needs them: shards
(which files the client uploaded and how to rebuild them from chunk ranges of xorbs) and xorbs
(sequences of compressed chunks). Written from the public Xet protocol specification.

The hub turns every file announced in a shard back into plain bytes (`reconstruct_file`) and checks
it against the sha256 the client declared; the result is stored as an ordinary content-addressed
object. Xorb hashes (keyed BLAKE3 Merkle hashes) are *not* recomputed - that would need a BLAKE3
implementation - so nothing is trusted from a xorb until the sha256 of the rebuilt file matches.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable

import lz4.frame

HASH_SIZE = 32
ENTRY_SIZE = 48
SHARD_HEADER_TAG = bytes.fromhex("48465265706f4d65746144617461005569674" "56a7b815783a5bdd95ccdd14aa9")
SHARD_VERSION = 2
FLAG_WITH_VERIFICATION = 1 << 31
FLAG_WITH_METADATA_EXT = 1 << 30
BOOKEND = b"\xff" * HASH_SIZE

CHUNK_HEADER_SIZE = 8
MAX_XORB_SIZE = 64 * 1024 * 1024 + 1024 * 1024  # 64 MiB per spec, a little slack for headers
MAX_CHUNK_SIZE = 1 << 24  # the size fields are 3 bytes
COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_BG4_LZ4 = 0, 1, 2


class XetFormatError(ValueError):
    """A shard or xorb does not follow the format (the server answers 400)."""


def hash_to_hex(raw: bytes) -> str:
    """Xet's string form of a 32-byte hash: four little-endian u64 words, each as 16 hex digits."""
    if len(raw) != HASH_SIZE:
        raise XetFormatError("hash must be 32 bytes")
    return "".join(f"{word:016x}" for word in struct.unpack("<4Q", raw))


def hex_to_hash(text: str) -> bytes:
    if len(text) != 64:
        raise XetFormatError("hash must be 64 hex digits")
    try:
        return struct.pack("<4Q", *(int(text[i:i + 16], 16) for i in range(0, 64, 16)))
    except ValueError:
        raise XetFormatError("hash must be 64 hex digits") from None


def is_hash_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


# ---------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class FileSegment:
    """Bytes of a file taken from chunks [chunk_start, chunk_end) of one xorb."""

    xorb: str
    chunk_start: int
    chunk_end: int
    unpacked_bytes: int


@dataclass(frozen=True)
class ShardFile:
    file_hash: str
    segments: tuple[FileSegment, ...]
    sha256: str | None  # declared by the client in the metadata extension

    @property
    def size(self) -> int:
        return sum(segment.unpacked_bytes for segment in self.segments)


@dataclass(frozen=True)
class ShardXorb:
    xorb: str
    num_chunks: int
    unpacked_bytes: int


def parse_shard(data: bytes) -> tuple[list[ShardFile], list[ShardXorb]]:
    """Parse the file-info and CAS-info sections of a shard (the footer, optional on upload, is ignored)."""
    if len(data) < ENTRY_SIZE or data[:HASH_SIZE] != SHARD_HEADER_TAG:
        raise XetFormatError("not a Xet shard (bad header tag)")
    version = struct.unpack_from("<Q", data, 32)[0]
    if version != SHARD_VERSION:
        raise XetFormatError(f"unsupported shard version {version}")
    pos = ENTRY_SIZE

    def take() -> memoryview:
        nonlocal pos
        if pos + ENTRY_SIZE > len(data):
            raise XetFormatError("truncated shard")
        entry = memoryview(data)[pos:pos + ENTRY_SIZE]
        pos += ENTRY_SIZE
        return entry

    files: list[ShardFile] = []
    while True:
        header = take()
        if bytes(header[:HASH_SIZE]) == BOOKEND:
            break
        flags, num_entries = struct.unpack_from("<II", header, 32)
        segments = []
        for _ in range(num_entries):
            entry = take()
            _flags, unpacked, start, end = struct.unpack_from("<IIII", entry, 32)
            if end <= start:
                raise XetFormatError("empty or inverted chunk range in shard")
            segments.append(FileSegment(hash_to_hex(bytes(entry[:HASH_SIZE])), start, end, unpacked))
        if flags & FLAG_WITH_VERIFICATION:
            for _ in range(num_entries):
                take()  # range verification hashes: BLAKE3-based, not checked (see module docstring)
        sha256 = None
        if flags & FLAG_WITH_METADATA_EXT:
            sha256 = hash_to_hex(bytes(take()[:HASH_SIZE]))
        files.append(ShardFile(hash_to_hex(bytes(header[:HASH_SIZE])), tuple(segments), sha256))

    xorbs: list[ShardXorb] = []
    while True:
        header = take()
        if bytes(header[:HASH_SIZE]) == BOOKEND:
            break
        _flags, num_entries, num_bytes, _on_disk = struct.unpack_from("<IIII", header, 32)
        for _ in range(num_entries):
            take()
        xorbs.append(ShardXorb(hash_to_hex(bytes(header[:HASH_SIZE])), num_entries, num_bytes))
    return files, xorbs


# ---------------------------------------------------------------------------- xorbs


@dataclass(frozen=True)
class ChunkRecord:
    offset: int  # of the chunk header inside the serialized xorb
    compressed_size: int
    scheme: int
    uncompressed_size: int


def _parse_chunk_header(header: bytes, offset: int) -> ChunkRecord:
    version = header[0]
    compressed = int.from_bytes(header[1:4], "little")
    scheme = header[4]
    uncompressed = int.from_bytes(header[5:8], "little")
    if version != 0:
        raise XetFormatError(f"unsupported xorb chunk version {version} at offset {offset}")
    if scheme not in (COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_BG4_LZ4):
        raise XetFormatError(f"unknown chunk compression scheme {scheme} at offset {offset}")
    if scheme == COMPRESSION_NONE and compressed != uncompressed:
        raise XetFormatError(f"uncompressed chunk with mismatched sizes at offset {offset}")
    return ChunkRecord(offset, compressed, scheme, uncompressed)


def scan_xorb(handle: BinaryIO, total_size: int) -> list[ChunkRecord]:
    """Walk the chunk headers of a serialized xorb (sent without footer) and check they tile it exactly."""
    records = []
    offset = 0
    while offset < total_size:
        handle.seek(offset)
        header = handle.read(CHUNK_HEADER_SIZE)
        if len(header) != CHUNK_HEADER_SIZE:
            raise XetFormatError("truncated chunk header")
        record = _parse_chunk_header(header, offset)
        offset += CHUNK_HEADER_SIZE + record.compressed_size
        if offset > total_size:
            raise XetFormatError("chunk runs past the end of the xorb")
        records.append(record)
    if not records:
        raise XetFormatError("empty xorb")
    return records


def _bg4_regroup(data: bytes) -> bytes:
    """Undo byte grouping: the input holds all 1st bytes of each 4-byte group, then all 2nd bytes..."""
    n = len(data)
    out = bytearray(n)
    start = 0
    for lane in range(4):
        count = n // 4 + (1 if lane < n % 4 else 0)
        out[lane::4] = data[start:start + count]
        start += count
    return bytes(out)


def _lz4_decompress(record: ChunkRecord, payload: bytes) -> bytes:
    """Decompress one LZ4 frame, producing at most one byte more than the header declares. A tiny
    chunk can inflate ~250-fold (2 MiB to 512 MiB), so the size is checked while decompressing,
    never after: a decompression bomb costs the server no more memory than an honest chunk."""
    decompressor = lz4.frame.LZ4FrameDecompressor()
    data = decompressor.decompress(bytes(payload), max_length=record.uncompressed_size + 1)
    if len(data) > record.uncompressed_size:
        raise XetFormatError(f"chunk at offset {record.offset} inflates to more than the "
                             f"{record.uncompressed_size} bytes its header declares")
    if not decompressor.eof:
        raise XetFormatError(f"corrupt chunk at offset {record.offset}: truncated LZ4 frame")
    return data


def decode_chunk(record: ChunkRecord, payload: bytes) -> bytes:
    try:
        if record.scheme == COMPRESSION_NONE:
            data = payload
        elif record.scheme == COMPRESSION_LZ4:
            data = _lz4_decompress(record, payload)
        else:
            data = _bg4_regroup(_lz4_decompress(record, payload))
    except RuntimeError as error:  # what the lz4 package raises for a corrupt frame
        raise XetFormatError(f"corrupt chunk at offset {record.offset}: {error}") from None
    if len(data) != record.uncompressed_size:
        raise XetFormatError(f"chunk at offset {record.offset} decodes to {len(data)} bytes, "
                             f"header says {record.uncompressed_size}")
    return data


def reconstruct_file(
    shard_file: ShardFile,
    open_xorb: Callable[[str], tuple[BinaryIO, list[ChunkRecord]]],
    write: Callable[[bytes], None],
) -> int:
    """Rebuild a file from its segments, passing its bytes in order to `write`; returns its size.
    `open_xorb(hash)` gives an open xorb file and its chunk records (raises KeyError if unknown)."""
    total = 0
    for segment in shard_file.segments:
        handle, records = open_xorb(segment.xorb)
        if segment.chunk_end > len(records):
            raise XetFormatError(f"chunk range {segment.chunk_start}-{segment.chunk_end} outside xorb {segment.xorb}")
        produced = 0
        for record in records[segment.chunk_start:segment.chunk_end]:
            handle.seek(record.offset + CHUNK_HEADER_SIZE)
            data = decode_chunk(record, handle.read(record.compressed_size))
            write(data)
            produced += len(data)
        if produced != segment.unpacked_bytes:
            raise XetFormatError(f"segment of xorb {segment.xorb} is {produced} bytes, shard says "
                                 f"{segment.unpacked_bytes}")
        total += produced
    return total
