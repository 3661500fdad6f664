"""Crash safety and concurrency: interrupted uploads, a server killed mid-upload or mid-commit, a
client killed between uploading content and committing, and racing writers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from hub_test_utils import commit_lfs, lfs_batch, object_path, start_partial_put, wait_for


def _temp_blobs(hub):
    return list((hub.root / "tmp").glob("blob-*"))


def test_dropped_upload_connection_stores_nothing(hub, api, repo_id):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    content = os.urandom(4 * 1024 * 1024)
    oid = hashlib.sha256(content).hexdigest()
    href = lfs_batch(hub, repo_id, oid, len(content))["actions"]["upload"]["href"]
    sock = start_partial_put(href, content, len(content) // 2)
    wait_for(lambda: _temp_blobs(hub))   # the server is writing the partial upload to a temp file
    sock.close()                         # ... and the client dies
    wait_for(lambda: not _temp_blobs(hub))
    assert not object_path(hub, oid).exists()
    assert commit_lfs(hub, repo_id, "w.bin", oid, len(content)).status_code == 400
    assert api.model_info(repo_id).sha == head


def test_server_killed_mid_upload_keeps_previous_revision(fresh_hub, tmp_path):
    hub, api = fresh_hub, fresh_hub.api()
    repo_id = f"{hub.user}/crash"
    api.create_repo(repo_id)
    head = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id).oid
    content = os.urandom(4 * 1024 * 1024)
    oid = hashlib.sha256(content).hexdigest()
    href = lfs_batch(hub, repo_id, oid, len(content))["actions"]["upload"]["href"]
    sock = start_partial_put(href, content, len(content) // 2)
    wait_for(lambda: _temp_blobs(hub))
    hub.kill()                           # power cut: the half-written temp file stays behind
    sock.close()
    assert _temp_blobs(hub)
    hub.start()
    assert not _temp_blobs(hub)          # cleaned at start-up, it was never visible anyway
    assert not object_path(hub, oid).exists()
    assert api.model_info(repo_id).sha == head
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt"]
    api.upload_file(path_or_fileobj=content, path_in_repo="w.safetensors", repo_id=repo_id)
    assert api.get_paths_info(repo_id, ["w.safetensors"])[0].lfs.sha256 == oid


def test_server_crash_before_ref_update_is_invisible(fresh_hub):
    """The commit file is written but the branch pointer never moves: the commit does not exist."""
    hub, api = fresh_hub, fresh_hub.api()
    repo_id = f"{hub.user}/atomic"
    api.create_repo(repo_id)
    head = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id).oid
    hub.restart(TALKLORA_HUB_CRASH_AT="commit:before-ref-update")
    with pytest.raises(Exception):
        api.create_commit(repo_id, commit_message="doomed", operations=[
            CommitOperationAdd("a.txt", b"v2"), CommitOperationAdd("b.txt", b"new")])
    hub.restart()  # waits for the crashed process to be gone, then starts a normal server
    assert api.model_info(repo_id).sha == head
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt"]
    assert open(api.hf_hub_download(repo_id, "a.txt", cache_dir=hub.root.parent / "cache"), "rb").read() == b"v1"
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["Upload a.txt with huggingface_hub", "initial commit"]
    new = api.upload_file(path_or_fileobj=b"v3", path_in_repo="a.txt", repo_id=repo_id).oid
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [new, head]


CLIENT_DIES_BEFORE_COMMIT = textwrap.dedent("""
    import os, signal, sys
    import huggingface_hub._commit_api as commit_api
    import huggingface_hub._upload_pipeline as pipeline

    def die(*args, **kwargs):  # the content is uploaded; the process dies before committing
        os.kill(os.getpid(), signal.SIGKILL)

    commit_api._send_commit = die
    pipeline._send_commit = die
    from huggingface_hub import HfApi
    HfApi().upload_file(path_or_fileobj=sys.argv[1], path_in_repo="model.safetensors", repo_id=sys.argv[2])
""")


def test_client_killed_between_upload_and_commit(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(1024 * 1024))
    script = tmp_path / "client.py"
    script.write_text(CLIENT_DIES_BEFORE_COMMIT)
    env = {**os.environ, **hub.env()}
    result = subprocess.run([sys.executable, str(script), str(weights), repo_id], env=env, capture_output=True,
                            timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert api.model_info(repo_id).sha == head
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    # The content did reach the repo's storage, so a retried commit needs no re-upload.
    oid = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert commit_lfs(hub, repo_id, "model.safetensors", oid, weights.stat().st_size).status_code == 200


def test_racing_writers_with_parent_commit(hub, api, repo_id):
    """Optimistic concurrency: of N commits based on the same parent exactly one wins, the others
    get 412 and win after rebasing on the new head; no update is lost."""
    api.create_repo(repo_id)
    parent = api.model_info(repo_id).sha
    barrier = threading.Barrier(6)

    def writer(index: int) -> int:
        client = HfApi(endpoint=hub.endpoint, token=hub.token)
        based_on, conflicts = parent, 0
        barrier.wait()
        while True:
            try:
                client.create_commit(repo_id, commit_message=f"writer {index}", parent_commit=based_on,
                                     operations=[CommitOperationAdd(f"w{index}.txt", str(index).encode())])
                return conflicts
            except HfHubHTTPError as error:
                assert error.response.status_code == 412
                conflicts += 1
                based_on = client.model_info(repo_id).sha

    with ThreadPoolExecutor(6) as pool:
        conflicts = list(pool.map(writer, range(6)))
    assert conflicts.count(0) == 1  # the first round had a single winner, everyone else rebased
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes"] + [f"w{i}.txt" for i in range(6)])
    assert len(api.list_repo_commits(repo_id)) == 7


def test_writers_without_parent_are_serialised(hub, api, repo_id):
    api.create_repo(repo_id)

    def writer(index: int) -> str:
        return HfApi(endpoint=hub.endpoint, token=hub.token).upload_file(
            path_or_fileobj=f"content {index}".encode(), path_in_repo=f"f{index}.txt", repo_id=repo_id).oid

    with ThreadPoolExecutor(8) as pool:
        oids = list(pool.map(writer, range(8)))
    assert len(set(oids)) == 8
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes"] + [f"f{i}.txt" for i in range(8)])
    history = api.list_repo_commits(repo_id)
    assert len(history) == 9 and set(oids) == {c.commit_id for c in history[:8]}


def test_stale_parent_commit_is_refused_with_clear_message(api, repo_id):
    api.create_repo(repo_id)
    stale = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as error:
        api.upload_file(path_or_fileobj=b"2", path_in_repo="two.txt", repo_id=repo_id, parent_commit=stale)
    assert error.value.response.status_code == 412
    assert "A commit has happened since" in str(error.value)
    assert "two.txt" not in api.list_repo_files(repo_id)
