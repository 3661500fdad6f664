"""LZ4 decompression (frame and block formats), needed to read Xet xorb chunks.

The Xet client compresses chunks with the LZ4 *frame* format. Pure Python so the hub has no
native dependency; if the optional ``lz4`` package is installed it is used instead (faster).
Only decompression is implemented: the server never produces LZ4 data."""

from __future__ import annotations

FRAME_MAGIC = 0x184D2204
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50

try:  # optional accelerator
    import lz4.frame as _lz4_frame  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    _lz4_frame = None


class LZ4Error(ValueError):
    pass


def decompress_block(src: bytes | memoryview, out: bytearray, max_output: int) -> None:
    """Decode one LZ4 block, appending to `out`. Matches may reach back into data already in `out`
    (that is how linked frame blocks work), so `out` is the whole frame's output so far."""
    src = memoryview(src)
    n = len(src)
    i = 0
    limit = len(out) + max_output
    while i < n:
        token = src[i]
        i += 1
        literal_length = token >> 4
        if literal_length == 15:
            while True:
                if i >= n:
                    raise LZ4Error("truncated literal length")
                byte = src[i]
                i += 1
                literal_length += byte
                if byte != 255:
                    break
        if i + literal_length > n:
            raise LZ4Error("literals run past the end of the block")
        out += src[i:i + literal_length]
        i += literal_length
        if i >= n:
            break  # the last sequence of a block has literals only
        if i + 2 > n:
            raise LZ4Error("truncated match offset")
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise LZ4Error("invalid match offset")
        match_length = token & 15
        if match_length == 15:
            while True:
                if i >= n:
                    raise LZ4Error("truncated match length")
                byte = src[i]
                i += 1
                match_length += byte
                if byte != 255:
                    break
        match_length += 4
        start = len(out) - offset
        if offset >= match_length:
            out += out[start:start + match_length]
        else:  # overlapping copy: the match repeats the last `offset` bytes
            pattern = bytes(out[start:])
            repeats, rest = divmod(match_length, offset)
            out += pattern * repeats + pattern[:rest]
        if len(out) > limit:
            raise LZ4Error("decompressed data larger than announced")


def decompress_frame(data: bytes, max_output: int = 1 << 24) -> bytes:
    """Decode a complete LZ4 frame (checksums are not verified: callers check a sha256 of the result)."""
    if _lz4_frame is not None:
        return _lz4_frame.decompress(bytes(data))
    view = memoryview(data)
    out = bytearray()
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise LZ4Error("truncated frame header")
        magic = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            skip = int.from_bytes(view[pos:pos + 4], "little")
            pos += 4 + skip
            continue
        if magic != FRAME_MAGIC:
            raise LZ4Error("not an LZ4 frame")
        flags = view[pos]
        if flags >> 6 != 1:
            raise LZ4Error("unsupported LZ4 frame version")
        block_checksum = bool(flags & 0x10)
        content_size = bool(flags & 0x08)
        content_checksum = bool(flags & 0x04)
        dict_id = bool(flags & 0x01)
        pos += 2  # FLG, BD
        if content_size:
            pos += 8
        if dict_id:
            raise LZ4Error("LZ4 dictionaries are not supported")
        pos += 1  # header checksum
        while True:
            if pos + 4 > len(view):
                raise LZ4Error("truncated block size")
            size_field = int.from_bytes(view[pos:pos + 4], "little")
            pos += 4
            if size_field == 0:
                break  # end mark
            uncompressed = bool(size_field & 0x80000000)
            size = size_field & 0x7FFFFFFF
            block = view[pos:pos + size]
            if len(block) != size:
                raise LZ4Error("truncated block")
            pos += size
            if uncompressed:
                out += block
            else:
                decompress_block(block, out, max_output - len(out))
            if block_checksum:
                pos += 4
            if len(out) > max_output:
                raise LZ4Error("decompressed data larger than allowed")
        if content_checksum:
            pos += 4
    return bytes(out)
