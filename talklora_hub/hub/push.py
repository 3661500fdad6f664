"""Uploading a folder as one commit: the repo is created if needed, files no longer in the folder are
deleted in the same commit, unchanged content makes no commit at all, transient HTTP errors are retried,
and the commit names its parent so a concurrent writer's update is never silently overwritten.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, TypeVar

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

T = TypeVar("T")
KEEP_REMOTE = {".gitattributes"}


@dataclass
class PushResult:
    repo_id: str
    repo_type: str
    commit: str
    changed: bool
    url: str


def _status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """5xx, 429 and connection-level failures are worth retrying; other 4xx are not."""
    status = _status(error)
    if status is not None:
        return status >= 500 or status == 429
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectionError", "ConnectError", "ReadTimeout", "TimeoutException", "RemoteProtocolError",
                         "ReadError", "WriteError", "Timeout"})


def with_retries(call: Callable[[], T], attempts: int = 4, delay: float = 0.5) -> T:
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # noqa: BLE001  re-raised unless transient
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(delay * 2 ** attempt)
    raise AssertionError("unreachable")


def git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str) -> Dict[str, object]:
    entries = api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True)
    return {e.path: e for e in entries if getattr(e, "blob_id", None) is not None or hasattr(e, "lfs")}


def _same_content(local: Path, remote) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs:
        sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        return sha == sha256_of(local)
    return getattr(remote, "blob_id", None) == git_blob_sha1(local)


def push_folder(folder: Path, repo_id: str, repo_type: str = "model", commit_message: str = "Upload with talklora_hub",
                private: bool = False, api: Optional[HfApi] = None) -> PushResult:
    """Makes the repo's main branch hold exactly the folder's files, in one commit (or none if equal)."""
    api = api or HfApi()
    folder = Path(folder)
    repo_url = with_retries(lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
    head = with_retries(lambda: api.repo_info(repo_id, repo_type=repo_type)).sha
    local = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    remote = _remote_files(api, repo_id, repo_type, head) if head else {}
    stale = sorted(set(remote) - set(local) - KEEP_REMOTE)
    changed = [path for path, file in local.items() if path not in remote or not _same_content(file, remote[path])]
    url = str(getattr(repo_url, "url", repo_url))
    if not changed and not stale:
        return PushResult(repo_id, repo_type, head, False, url)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local[path])) for path in changed]
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    info = with_retries(lambda: api.create_commit(repo_id, operations, commit_message=commit_message,
                                                  repo_type=repo_type, parent_commit=head))
    return PushResult(repo_id, repo_type, info.oid, True, url)
