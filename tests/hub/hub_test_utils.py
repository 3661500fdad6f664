"""Raw-protocol helpers shared by the hub tests (for requests the high-level client would refuse
to send, or to stop an upload half-way)."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from talklora_hub.localhub.xet import SHARD_HEADER_TAG, hex_to_hash

LFS_HEADERS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}


def auth(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def object_path(hub, oid: str):
    return hub.root / "objects" / oid[:2] / oid[2:4] / oid


def ndjson(lines: list) -> bytes:
    """A commit payload as huggingface_hub sends it: one JSON value per line."""
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def post_commit(hub, repo_id: str, lines: list, token: str | None = None, **kwargs) -> httpx.Response:
    """POST the NDJSON commit `lines` to the main branch of a model repo."""
    return httpx.post(f"{hub.endpoint}/api/models/{repo_id}/commit/main", content=ndjson(lines),
                      headers={**auth(token or hub.token), "content-type": "application/x-ndjson"}, **kwargs)


def commit_lfs(hub, repo_id: str, path: str, oid: str, size: int, token: str | None = None) -> httpx.Response:
    """POST a commit adding `path` as a reference to the LFS object `oid`."""
    return post_commit(hub, repo_id, [{"key": "header", "value": {"summary": "add " + path}},
                                      {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid,
                                                                   "size": size}}], token)


def lfs_batch(hub, repo_id: str, oid: str, size: int, token: str | None = None) -> dict:
    """The LFS batch answer for one object to upload to a model repo."""
    response = httpx.post(f"{hub.endpoint}/{repo_id}.git/info/lfs/objects/batch",
                          headers={**LFS_HEADERS, **auth(token or hub.token)},
                          json={"operation": "upload", "transfers": ["basic"],
                                "objects": [{"oid": oid, "size": size}], "hash_algo": "sha256"})
    assert response.status_code == 200, response.text
    return response.json()["objects"][0]


def start_partial_put(href: str, content: bytes, sent: int) -> socket.socket:
    """Open a PUT announcing all of `content` but send only its first `sent` bytes; the caller
    then closes the socket (client dies) or kills the server."""
    url = urlsplit(href)
    sock = socket.create_connection((url.hostname, url.port))
    head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(content)}\r\n\r\n"
    sock.sendall(head.encode() + content[:sent])
    return sock


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def raw_exchange(hub, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send a request head (request line and headers, without the blank line) and `body` as given,
    possibly less than its Content-Length announces, then read the answer: (status, headers, body).
    For requests an HTTP library would not send, or not let us stop sending half-way."""
    sock = socket.create_connection(("127.0.0.1", int(hub.endpoint.rsplit(":", 1)[1])), timeout=timeout)
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            received = sock.recv(65536)
            if not received:
                raise ConnectionError(f"connection closed without a complete answer: {data!r}")
            data += received
        head_bytes, rest = data.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = 0 if head.startswith("HEAD ") else int(headers.get("content-length", "0"))
        while len(rest) < length:
            received = sock.recv(65536)
            if not received:
                break
            rest += received
        return int(lines[0].split()[1]), headers, rest
    finally:
        sock.close()


def peak_rss_bytes(pid: int) -> int:
    """The peak resident memory of a process so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def xet_cas(hub, repo_id: str) -> tuple[str, dict]:
    """(casUrl, auth headers) of a Xet write token for a model repo."""
    answer = httpx.get(f"{hub.endpoint}/api/models/{repo_id}/xet-write-token/main", headers=auth(hub.token))
    assert answer.status_code == 200, answer.text
    return answer.json()["casUrl"], auth(answer.json()["accessToken"])


def xorb_of(chunks: list[bytes]) -> bytes:
    """A serialized xorb of uncompressed chunks."""
    return b"".join(chunk_header(len(c), 0, len(c)) + c for c in chunks)


def chunk_header(compressed_size: int, scheme: int, uncompressed_size: int) -> bytes:
    return (bytes([0]) + compressed_size.to_bytes(3, "little") + bytes([scheme])
            + uncompressed_size.to_bytes(3, "little"))


def xet_shard(xorb_hash: str, chunk_sizes: list[tuple[int, int]], declared_sha256: str) -> bytes:
    """A shard announcing one file made of all chunks of one xorb (layout from the Xet spec);
    `chunk_sizes` holds (serialized size without header, uncompressed size) per chunk."""
    bookend = b"\xff" * 32 + b"\0" * 16
    total = sum(unpacked for _size, unpacked in chunk_sizes)
    out = SHARD_HEADER_TAG + struct.pack("<QQ", 2, 0)
    out += os.urandom(32) + struct.pack("<II", 1 << 30, 1) + b"\0" * 8           # file: metadata ext flag
    out += hex_to_hash(xorb_hash) + struct.pack("<IIII", 0, total, 0, len(chunk_sizes))
    out += hex_to_hash(declared_sha256) + b"\0" * 16
    out += bookend
    out += hex_to_hash(xorb_hash) + struct.pack("<IIII", 0, len(chunk_sizes), total, 0)
    offset = 0
    for size, unpacked in chunk_sizes:
        out += os.urandom(32) + struct.pack("<II", offset, unpacked) + b"\0" * 8
        offset += 8 + size
    return out + bookend
