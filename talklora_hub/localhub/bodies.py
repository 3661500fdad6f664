"""Request bodies read with a bound. A client decides how much it sends, so nothing is buffered
whole: a declared Content-Length over the limit is refused before a byte of the body is read, and a
body sent without one (chunked) is refused as soon as it passes the limit. Either way the answer is
413 naming the limit, and the server never holds more than the limit in memory.

The limits are generous for what the Hub's clients really send (huggingface_hub batches preupload
requests by 256 files; a commit line holds at most one regular file, and those are < 10 MiB)."""

from __future__ import annotations

import json
from typing import AsyncIterator

from fastapi import Request

from .web import HubHTTPError

MiB = 1024 * 1024
MAX_JSON_BODY = 1 * MiB          # repo creation, settings, branches, tags, LFS verify...
MAX_LISTING_BODY = 16 * MiB      # preupload, paths-info, LFS batch, README validation: many files
MAX_REGULAR_FILE_SIZE = 10 * MiB  # the Hub refuses larger regular (non-LFS) files
MAX_COMMIT_LINE = 16 * MiB       # one NDJSON commit line: a regular file in base64 is < 13.4 MiB
MAX_LEGACY_COMMIT_BODY = 32 * MiB  # a whole commit sent as one JSON object (older clients)


def format_size(size: int) -> str:
    if size >= MiB:
        return f"{size / MiB:.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


def too_large(what: str, limit: int, hint: str = "") -> HubHTTPError:
    return HubHTTPError(413, f"{what} is larger than the limit of {format_size(limit)}{hint}")


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        raise HubHTTPError(400, f"Invalid Content-Length header {declared[:40]!r}") from None


async def read_body(request: Request, limit: int, what: str = "The request body", hint: str = "") -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise too_large(what, limit, hint)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(what, limit, hint)
        chunks.append(chunk)
    return b"".join(chunks)


def is_json_int(value) -> bool:
    """True for a JSON integer: Python's bool is an int, JSON's true/false are not."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_json(body: bytes, what: str = "The request body"):
    try:
        return json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        raise HubHTTPError(400, f"{what} must be valid JSON") from None


async def read_json_object(request: Request, limit: int = MAX_JSON_BODY, *, shape: str = "a JSON object") -> dict:
    """The body parsed as a JSON object (400 naming the expected `shape` for anything else)."""
    data = parse_json(await read_body(request, limit))
    if not isinstance(data, dict):
        raise HubHTTPError(400, f"The request body must be {shape}, got a JSON {type(data).__name__}")
    return data


async def read_lines(request: Request, limit: int = MAX_COMMIT_LINE, hint: str = "") -> AsyncIterator[bytes]:
    """The non-blank lines of an NDJSON body as they arrive, none longer than `limit` bytes."""
    buffer = bytearray()
    async for chunk in request.stream():
        start = len(buffer)
        buffer += chunk
        # Look for newlines in the new bytes only: rescanning the whole buffer on every chunk would
        # make a long line cost quadratic time.
        cut = 0
        newline = buffer.find(b"\n", start)
        while newline != -1:
            if newline - cut > limit:
                raise too_large("A line of the commit payload", limit, hint)
            line = bytes(buffer[cut:newline])
            if line.strip():
                yield line
            cut = newline + 1
            newline = buffer.find(b"\n", cut)
        del buffer[:cut]
        if len(buffer) > limit:
            raise too_large("A line of the commit payload", limit, hint)
    tail = bytes(buffer)
    if tail.strip():
        yield tail
