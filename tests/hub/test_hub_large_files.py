"""Large-file storage: both upload protocols of huggingface_hub (Xet, its default, and classic
git-lfs), sha256 verification of uploaded content, and refusal of commits referencing content the
repo never received."""

from __future__ import annotations

import hashlib
import io
import os

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download

from hub_test_utils import auth, commit_lfs, lfs_batch, object_path, xet_cas, xet_shard, xorb_of


def test_xet_upload_of_large_file(hub, api, repo_id, tmp_path):
    """The default client path (hf_xet installed, nothing disabled), with a file > 10 MB."""
    content = os.urandom(11 * 1024 * 1024) + b"tail" * 1000
    (tmp_path / "big.data").write_bytes(content)
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=str(tmp_path / "big.data"), path_in_repo="big.data", repo_id=repo_id)
    info = api.get_paths_info(repo_id, ["big.data"])[0]
    assert info.lfs.sha256 == hashlib.sha256(content).hexdigest() and info.size == len(content)
    local = hf_hub_download(repo_id, "big.data", endpoint=hub.endpoint, token=hub.token, cache_dir=tmp_path / "c")
    assert open(local, "rb").read() == content


def _xorb_count(hub) -> int:
    return sum(1 for path in (hub.root / "xet" / "xorbs").rglob("*") if path.is_file())


@pytest.mark.filterwarnings("ignore:Use 'content=<...>'")  # emitted by the client's own LFS PUT
def test_classic_lfs_upload_path(hub, api, repo_id, tmp_path):
    """With Xet disabled (and for file objects, which Xet cannot stream) the client uses git-lfs."""
    api.create_repo(repo_id)
    xorbs_before = _xorb_count(hub)
    weights = os.urandom(300_000)
    with hub.activate(xet=False):
        api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=repo_id)
    buffered = os.urandom(200_000)
    api.upload_file(path_or_fileobj=io.BytesIO(buffered), path_in_repo="extra.bin", repo_id=repo_id)
    for name, content in (("model.safetensors", weights), ("extra.bin", buffered)):
        info = api.get_paths_info(repo_id, [name])[0]
        assert info.lfs.sha256 == hashlib.sha256(content).hexdigest()
        local = hf_hub_download(repo_id, name, endpoint=hub.endpoint, token=hub.token, cache_dir=tmp_path / "c")
        assert open(local, "rb").read() == content
    assert _xorb_count(hub) == xorbs_before  # nothing went through Xet


def test_lfs_put_is_verified_against_oid(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    good = os.urandom(8192)
    oid, size = hashlib.sha256(good).hexdigest(), len(good)
    action = lfs_batch(hub, repo_id, oid, size)
    href = action["actions"]["upload"]["href"]

    corrupted = bytearray(good)
    corrupted[100] ^= 0xFF
    assert httpx.put(href, content=bytes(corrupted)).status_code == 400     # wrong content
    assert httpx.put(href, content=good[:-1]).status_code == 400            # truncated
    assert httpx.put(href, content=good + b"x").status_code == 400          # too long
    assert httpx.put(href.replace("?t=", "?t=x"), content=good).status_code == 403  # forged ticket
    assert not object_path(hub, oid).exists()
    refused = commit_lfs(hub, repo_id, "w.bin", oid, size)
    assert refused.status_code == 400 and "never uploaded" in refused.json()["error"]

    assert httpx.put(href, content=good).status_code == 200
    verify = action["actions"]["verify"]
    assert httpx.post(verify["href"], json={"oid": oid, "size": size}, headers=auth(hub.token)).status_code == 200
    assert "actions" not in lfs_batch(hub, repo_id, oid, size)  # already stored: nothing to upload
    assert commit_lfs(hub, repo_id, "w.bin", oid, size).status_code == 200
    assert commit_lfs(hub, repo_id, "w2.bin", oid, size + 1).status_code == 400  # size mismatch
    local = hf_hub_download(repo_id, "w.bin", endpoint=hub.endpoint, token=hub.token, cache_dir=tmp_path / "c")
    assert open(local, "rb").read() == good
    assert not list((hub.root / "tmp").glob("blob-*"))  # refused uploads left no temp files


def test_lfs_objects_are_not_shared_by_knowing_the_hash(hub, api, repo_id):
    """Identical content is stored once, but another repo must upload it to use it."""
    api.create_repo(repo_id, private=True)
    secret = os.urandom(4096)
    api.upload_file(path_or_fileobj=secret, path_in_repo="secret.bin", repo_id=repo_id)
    oid = hashlib.sha256(secret).hexdigest()
    thief_token = hub.create_user("thief")
    HfApi(endpoint=hub.endpoint, token=thief_token).create_repo("thief/loot", exist_ok=True)
    response = commit_lfs(hub, "thief/loot", "stolen.bin", oid, len(secret), token=thief_token)
    assert response.status_code == 400
    assert "actions" in lfs_batch(hub, "thief/loot", oid, len(secret), token=thief_token)  # must send the bytes


def _shard(xorb_hash: str, chunks: list[bytes], declared_sha256: str) -> bytes:
    return xet_shard(xorb_hash, [(len(c), len(c)) for c in chunks], declared_sha256)


def test_xet_shard_content_is_verified(hub, api, repo_id):
    api.create_repo(repo_id)
    cas, cas_auth = xet_cas(hub, repo_id)
    chunks = [os.urandom(1000), os.urandom(500)]
    content = b"".join(chunks)
    xorb_hash = hashlib.sha256(b"xorb" + content).hexdigest()
    assert httpx.post(f"{cas}/v1/xorbs/default/{xorb_hash}", content=xorb_of(chunks)).status_code == 401
    assert httpx.post(f"{cas}/v1/xorbs/default/{xorb_hash}", content=b"\x07garbage", headers=cas_auth).status_code == 400
    assert httpx.post(f"{cas}/v1/xorbs/default/{xorb_hash}", content=xorb_of(chunks), headers=cas_auth).status_code == 200

    lie = hashlib.sha256(b"something else").hexdigest()
    response = httpx.post(f"{cas}/v1/shards", content=_shard(xorb_hash, chunks, lie), headers=cas_auth)
    assert response.status_code == 400
    assert not object_path(hub, lie).exists()
    assert commit_lfs(hub, repo_id, "f.bin", lie, len(content)).status_code == 400

    missing = _shard("ab" * 32, chunks, hashlib.sha256(content).hexdigest())
    assert httpx.post(f"{cas}/v1/shards", content=missing, headers=cas_auth).status_code == 400

    truth = hashlib.sha256(content).hexdigest()
    assert httpx.post(f"{cas}/v1/shards", content=_shard(xorb_hash, chunks, truth), headers=cas_auth).status_code == 200
    assert commit_lfs(hub, repo_id, "f.bin", truth, len(content)).status_code == 200
    assert httpx.get(f"{hub.endpoint}/{repo_id}/resolve/main/f.bin").content == content
