"""A full disk: the server answers with a status that names the cause and that the real clients do
not retry for minutes (507 Insufficient Storage; 413 on the Xet CAS routes, since hf_xet retries
every 5xx), and leaves no trace of the failed upload. The disk is simulated with
TALKLORA_HUB_DISK_FREE (faults.py): writes past the budget fail with ENOSPC, as on a full disk."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap

import httpx
import pytest

from hub_test_utils import lfs_batch, object_path, post_commit

from talklora_hub.localhub import LocalHub
from talklora_hub.localhub.faults import DISK_FREE_ENV_VAR

# Uploads go through a child process with a deadline: before the fix, hf_xet retried a full disk
# for 150 s and more, which must fail this test rather than hang the suite.
XET_UPLOAD = textwrap.dedent("""
    import sys, time
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    start = time.monotonic()
    try:
        HfApi().upload_file(path_or_fileobj=sys.argv[1], path_in_repo="model.safetensors", repo_id=sys.argv[2])
        print("UPLOADED")
    except HfHubHTTPError as error:
        print("HTTP", error.response.status_code, str(error).replace("\\n", " "))
    except Exception as error:  # what hf_xet raises
        print("ERROR", type(error).__name__, str(error).replace("\\n", " "))
    print("SECONDS", round(time.monotonic() - start, 1))
""")


@pytest.fixture
def small_disk_hub(tmp_path, request):
    with LocalHub(tmp_path / "hub", server_env={DISK_FREE_ENV_VAR: str(request.param)}) as running:
        yield running


def _upload_in_child(hub, tmp_path, repo_id: str, size: int) -> tuple[str, float]:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(size))
    script = tmp_path / "upload.py"
    script.write_text(XET_UPLOAD)
    result = subprocess.run([sys.executable, str(script), str(weights), repo_id], env={**os.environ, **hub.env()},
                            capture_output=True, text=True, timeout=90)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("SECONDS"), result.stdout + result.stderr[-2000:]
    return lines[-2], float(lines[-1].split()[1])


def _leftovers(hub) -> list:
    return sorted(p.name for p in (hub.root / "tmp").iterdir())


@pytest.mark.parametrize("small_disk_hub", [256 * 1024], indirect=True)
def test_full_disk_is_reported_as_507_and_changes_nothing(small_disk_hub, tmp_path):
    hub, api = small_disk_hub, small_disk_hub.api()
    repo_id = f"{hub.user}/full"
    api.create_repo(repo_id)
    head = api.upload_file(path_or_fileobj=b"fits", path_in_repo="small.txt", repo_id=repo_id).oid

    # The real client (Xet upload path): preupload sees the file cannot fit and says so at once.
    outcome, seconds = _upload_in_child(hub, tmp_path, repo_id, 1024 * 1024)
    assert outcome.startswith("HTTP 507"), outcome
    assert re.search(r"disk is too full: only [\d.]+ KiB free, and these files take 1\.0 MiB", outcome), outcome
    assert seconds < 30

    # git-lfs upload of the content itself: the write fails half-way.
    content = os.urandom(1024 * 1024)
    oid = hashlib.sha256(content).hexdigest()
    href = lfs_batch(hub, repo_id, oid, len(content))["actions"]["upload"]["href"]
    answer = httpx.put(href, content=content)
    assert answer.status_code == 507 and answer.headers["x-error-code"] == "InsufficientStorage"
    assert "disk is full" in answer.json()["error"] and "No space left on device" in answer.json()["error"]
    assert not object_path(hub, oid).exists()

    # A commit carrying a regular file inline.
    lines = [{"key": "header", "value": {"summary": "big text"}},
             {"key": "file", "value": {"path": "big.txt", "content": "x" * 300_000, "encoding": "utf-8"}}]
    answer = post_commit(hub, repo_id, lines)
    assert answer.status_code == 507 and "disk is full" in answer.json()["error"]

    assert api.model_info(repo_id).sha == head   # head stays put, the hub keeps serving reads
    assert api.list_repo_files(repo_id) == [".gitattributes", "small.txt"]
    assert _leftovers(hub) == []                 # no partial temp file
    assert hub.running


@pytest.mark.parametrize("small_disk_hub", [1536 * 1024], indirect=True)
def test_disk_filling_up_during_a_xet_upload_fails_fast(small_disk_hub, tmp_path):
    """The file passes preupload's check, its xorb is stored, then rebuilding it fills the disk:
    hf_xet must get an answer it does not retry (it retries every 5xx, for minutes)."""
    hub, api = small_disk_hub, small_disk_hub.api()
    repo_id = f"{hub.user}/filling"
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    outcome, seconds = _upload_in_child(hub, tmp_path, repo_id, 1024 * 1024)
    assert outcome.startswith("ERROR") and "413" in outcome, outcome
    assert seconds < 30
    assert api.model_info(repo_id).sha == head
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    assert _leftovers(hub) == []
    assert not [p for p in (hub.root / "objects").rglob("*") if p.is_file() and p.stat().st_size == 1024 * 1024]
