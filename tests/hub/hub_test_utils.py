"""Raw-protocol helpers shared by the hub tests (for requests the high-level client would refuse
to send, or to stop an upload half-way)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx

LFS_HEADERS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}


def auth(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def object_path(hub, oid: str):
    return hub.root / "objects" / oid[:2] / oid[2:4] / oid


def commit_lfs(hub, repo_id: str, path: str, oid: str, size: int, token: str | None = None) -> httpx.Response:
    """POST a commit adding `path` as a reference to the LFS object `oid`."""
    lines = [{"key": "header", "value": {"summary": "add " + path}},
             {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}]
    return httpx.post(f"{hub.endpoint}/api/models/{repo_id}/commit/main",
                      content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
                      headers={**auth(token or hub.token), "content-type": "application/x-ndjson"})


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
