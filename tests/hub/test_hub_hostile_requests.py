"""Requests a well-behaved client never sends: probing for private repos, oversized bodies and
decompression bombs, malformed JSON and control characters. Each must get a clean 4xx (never a 500
or a dropped connection), reveal nothing, and cost the server no more memory than the limits allow."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import httpx
import lz4.frame
import pytest

from hub_test_utils import auth, chunk_header, ndjson, peak_rss_bytes, post_commit, raw_exchange, xet_cas, xet_shard

from talklora_hub.localhub.xet import COMPRESSION_LZ4, ChunkRecord, XetFormatError, decode_chunk

MiB = 1024 * 1024


# ---------------------------------------------------------------------------- private repos


def _probes(repo: str) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) touching a repo through every kind of route."""
    commit = ndjson([{"key": "header", "value": {"summary": "x"}},
                      {"key": "file", "value": {"path": "x.txt", "content": "x"}}])
    return [
        ("GET", f"/api/models/{repo}", {}),
        ("GET", f"/api/models/{repo}/revision/main", {}),
        ("GET", f"/api/models/{repo}/tree/main", {}),
        ("POST", f"/api/models/{repo}/paths-info/main", {"data": {"paths": ["secret.txt"]}}),
        ("GET", f"/api/models/{repo}/refs", {}),
        ("GET", f"/api/models/{repo}/commits/main", {}),
        ("GET", f"/{repo}/resolve/main/secret.txt", {}),
        ("HEAD", f"/{repo}/resolve/main/secret.txt", {}),
        ("POST", f"/api/models/{repo}/preupload/main", {"json": {"files": [{"path": "a", "size": 1}]}}),
        ("POST", f"/api/models/{repo}/commit/main",
         {"content": commit, "headers": {"content-type": "application/x-ndjson"}}),
        ("POST", f"/{repo}.git/info/lfs/objects/batch",
         {"json": {"operation": "download", "objects": [{"oid": "0" * 64, "size": 1}]}}),
        ("GET", f"/api/models/{repo}/xet-write-token/main", {}),
        ("POST", f"/api/models/{repo}/branch/dev", {}),
        ("GET", f"/api/models/{repo}/auth-check", {}),
        ("PUT", f"/api/models/{repo}/settings", {"json": {"private": False}}),
    ]


def _answers(hub, token: str | None, repo: str) -> list[tuple]:
    answers = []
    for method, path, kwargs in _probes(repo):
        kwargs = dict(kwargs)
        headers = {**kwargs.pop("headers", {}), **(auth(token) if token else {})}
        response = httpx.request(method, hub.endpoint + path, headers=headers, **kwargs)
        kept = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
        answers.append((method, path, response.status_code, kept, response.content))
    return answers


def test_private_repo_404_is_byte_identical_to_a_missing_repo(hub, repo_name):
    """The same requests, before and after the private repo is deleted, get the same bytes back."""
    owner = hub.create_user("carol")
    repo = f"carol/{repo_name}"
    owner_api = hub.api(owner)
    owner_api.create_repo(repo, private=True)
    owner_api.upload_file(path_or_fileobj=b"secret", path_in_repo="secret.txt", repo_id=repo)
    outsider = hub.create_user("dave")
    while_private = {who: _answers(hub, token, repo) for who, token in (("anonymous", None), ("dave", outsider))}
    owner_api.delete_repo(repo)
    for who, token in (("anonymous", None), ("dave", outsider)):
        once_missing = _answers(hub, token, repo)
        for before, after in zip(while_private[who], once_missing):
            assert before == after, f"{who}: {before[:2]} differs for a private and a missing repo"
    statuses = {answer[2] for answer in while_private["dave"]}
    assert statuses == {404}, statuses


# ---------------------------------------------------------------------------- size limits


def _head(method: str, path: str, headers: dict) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines)


@pytest.mark.parametrize("path", [
    "/api/repos/create",
    "/api/repos/move",
    "/api/validate-yaml",
    "/api/models/{repo}/preupload/main",
    "/api/models/{repo}/paths-info/main",
    "/api/models/{repo}/branch/dev",
    "/api/models/{repo}/commit/main",
    "/{repo}.git/info/lfs/objects/batch",
    "/{repo}.git/info/lfs/objects/verify",
])
def test_oversized_json_body_is_refused_before_it_is_read(hub, api, repo_id, path):
    """A 64 MiB Content-Length gets 413 at once: the server does not wait for (or buffer) the body."""
    api.create_repo(repo_id)
    head = _head("POST", path.format(repo=repo_id), {
        **auth(hub.token), "Content-Type": "application/json", "Content-Length": str(64 * MiB)})
    status, headers, body = raw_exchange(hub, head, b'{"name": "' + b"x" * 1000, timeout=10)
    assert status == 413, body
    assert "larger than the limit of" in json.loads(body)["error"]


def test_oversized_chunked_body_is_refused_once_past_the_limit(hub):
    head = _head("POST", "/api/repos/create", {
        **auth(hub.token), "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    piece = b"x" * 65536
    chunked = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(17))  # 1.06 MiB
    status, _headers, body = raw_exchange(hub, head, chunked, timeout=10)
    assert status == 413
    assert json.loads(body)["error"] == "The request body is larger than the limit of 1.0 MiB"


def test_large_regular_file_inline_in_a_commit_is_refused(hub, api, repo_id):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    content = base64.b64encode(b"\x01" * (11 * MiB)).decode()
    answer = post_commit(hub, repo_id, [{"key": "header", "value": {"summary": "big"}},
                                        {"key": "file", "value": {"path": "big.bin", "content": content,
                                                                  "encoding": "base64"}}], timeout=60)
    assert answer.status_code == 413
    assert "regular (non-LFS) files must be smaller than 10.0 MiB" in answer.json()["error"]
    assert api.model_info(repo_id).sha == head


def test_commit_line_beyond_the_limit_is_refused_while_streaming(hub, api, repo_id):
    """An 18 MiB file inline: refused once its line passes 16 MiB, without waiting for the rest."""
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    content = base64.b64encode(b"\x01" * (18 * MiB)).decode()
    body = ndjson([{"key": "header", "value": {"summary": "big"}},
                    {"key": "file", "value": {"path": "big.bin", "content": content, "encoding": "base64"}}])
    request = _head("POST", f"/api/models/{repo_id}/commit/main", {
        **auth(hub.token), "Content-Type": "application/x-ndjson", "Content-Length": str(len(body))})
    status, _headers, answer = raw_exchange(hub, request, body[:17 * MiB], timeout=20)
    assert status == 413
    assert "16.0 MiB" in json.loads(answer)["error"] and "10.0 MiB" in json.loads(answer)["error"]
    assert api.model_info(repo_id).sha == head


def _lz4_bomb(inflated: int) -> bytes:
    """An LZ4 frame of `inflated` zero bytes, compressed ~250-fold, built without holding it."""
    compressor = lz4.frame.LZ4FrameCompressor()
    parts, block = [compressor.begin()], bytes(4 * MiB)
    parts += [compressor.compress(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + compressor.flush()


def test_xet_chunk_decompression_is_bounded_by_its_header():
    import tracemalloc

    bomb = _lz4_bomb(512 * MiB)
    assert len(bomb) < 2.2 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(XetFormatError, match="inflates to more than the 65536 bytes its header declares"):
            decode_chunk(ChunkRecord(0, len(bomb), COMPRESSION_LZ4, 65536), bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB  # 512 MiB before the fix


def test_xet_decompression_bomb_upload_is_refused_cheaply(fresh_hub):
    hub, api = fresh_hub, fresh_hub.api()
    repo_id = f"{hub.user}/bomb"
    api.create_repo(repo_id)
    cas, cas_auth = xet_cas(hub, repo_id)
    bomb = _lz4_bomb(512 * MiB)
    xorb = chunk_header(len(bomb), COMPRESSION_LZ4, 65536) + bomb
    xorb_hash = hashlib.sha256(xorb).hexdigest()
    pid = hub.pid
    before = peak_rss_bytes(pid)
    assert httpx.post(f"{cas}/v1/xorbs/default/{xorb_hash}", content=xorb, headers=cas_auth).status_code == 200
    shard = xet_shard(xorb_hash, [(len(bomb), 65536)], hashlib.sha256(bytes(65536)).hexdigest())
    answer = httpx.post(f"{cas}/v1/shards", content=shard, headers=cas_auth, timeout=60)
    assert answer.status_code == 400
    assert "inflates to more than the 65536 bytes its header declares" in answer.json()["error"]
    assert peak_rss_bytes(pid) - before < 128 * MiB


# ---------------------------------------------------------------------------- malformed requests


@pytest.mark.parametrize("body", ["[1, 2]", '"paths"', "null", "5", '{"paths": 5}', '{"paths": [1]}',
                                  '{"paths": {"a": 1}}', "{not json"])
def test_paths_info_with_a_json_body_that_is_not_the_expected_object(hub, api, repo_id, body):
    api.create_repo(repo_id)
    answer = httpx.post(f"{hub.endpoint}/api/models/{repo_id}/paths-info/main", content=body,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert "JSON" in answer.json()["error"] or "'paths' must be a list" in answer.json()["error"]


@pytest.mark.parametrize("body", [
    "[]", '"x"', "5", "null", '{"files": 5}', '{"files": [5]}', '{"summary": 5}', '{"parentCommit": 5}',
    '{"files": [{"path": "a.txt", "content": 5, "encoding": "base64"}]}',
    '{"lfsFiles": [{"path": "a.bin", "oid": "' + "0" * 64 + '", "size": "big"}]}',
    '{"deletedFiles": [7]}',
])
def test_legacy_json_commit_that_is_not_the_expected_object(hub, api, repo_id, body):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    answer = httpx.post(f"{hub.endpoint}/api/models/{repo_id}/commit/main", content=body,
                        headers={**auth(hub.token), "content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert api.model_info(repo_id).sha == head


@pytest.mark.parametrize("lines", [
    [{"key": "header", "value": {"summary": "x", "parentCommit": ["main"]}}],
    [{"key": "header", "value": {"summary": {"a": 1}}}],
    [{"key": "header", "value": {}}, {"key": "file", "value": {"path": "a", "content": "\ud800"}}],
    [{"key": "header", "value": {}}, {"key": "lfsFile", "value": {"path": "a", "oid": "0" * 64, "size": "1"}}],
])
def test_ndjson_commit_with_malformed_values(hub, api, repo_id, lines):
    api.create_repo(repo_id)
    answer = post_commit(hub, repo_id, lines)
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("body", ['{"files": [5]}', '{"files": [{"path": "a", "size": "big"}]}',
                                  '{"files": [{"path": "a", "size": -1}]}', '{"files": {"a": 1}}', "[]"])
def test_preupload_with_malformed_files(hub, api, repo_id, body):
    api.create_repo(repo_id)
    answer = httpx.post(f"{hub.endpoint}/api/models/{repo_id}/preupload/main", content=body,
                        headers={**auth(hub.token), "content-type": "application/json"})
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("template", [
    "GET /api/models/{repo}/revision/a%00-{tail}",
    "GET /api/models/{repo}/tree/a%00b/folder",
    "GET /api/models/{repo}/commits/%01",
    "HEAD /{repo}/resolve/main%7f/file.txt",
    "POST /api/models/{repo}/tag/%00",
    "POST /api/models/{repo}/commit/ma%00in",
    # A newline ends the path match of the routes: these get 404 (no route) or 400 (empty name).
    "POST /api/models/{repo}/paths-info/%0d%0aX-Injected:%20yes",
    "GET /{repo}/resolve/a%0d%0aX-Injected:%20yes/file.txt",
    "DELETE /api/models/{repo}/branch/%0a",
])
def test_control_characters_get_a_clean_answer(hub, api, repo_id, template):
    """A NUL or CR/LF in a revision used to reach an error header, and the server then dropped the
    connection without answering."""
    api.create_repo(repo_id)
    method, path = template.format(repo=repo_id, tail="x" * 50).split(" ", 1)
    headers = {**auth(hub.token), "content-type": "application/json"}
    payload = b'{"tag": "v1"}'
    request = _head(method, path, {**headers, "Content-Length": str(len(payload))})
    status, answer_headers, body = raw_exchange(hub, request, payload, timeout=10)
    assert "x-injected" not in answer_headers
    if "%0a" in path.lower():
        assert status in (400, 404), body
        return
    assert status == 400, body
    message = answer_headers["x-error-message"]
    assert message.isprintable() and message.isascii() and "control characters are not allowed" in message
    if method != "HEAD":
        assert "control characters are not allowed" in json.loads(body)["error"]


def test_oversized_query_numbers_are_ignored(hub, api, repo_id):
    api.create_repo(repo_id)
    for query in ("limit=" + "9" * 5000, "p=" + "9" * 5000, "limit=%C2%B2", "cursor=" + "9" * 5000):
        for route in ("commits/main", "tree/main"):
            started = time.monotonic()
            answer = httpx.get(f"{hub.endpoint}/api/models/{repo_id}/{route}?{query}")
            assert answer.status_code == 200, (route, query, answer.text)
            assert time.monotonic() - started < 5
