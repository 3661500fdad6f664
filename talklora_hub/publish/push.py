"""Uploading a folder as one commit: the repo is created if needed, files no longer in the folder are
deleted in the same commit, unchanged content makes no commit at all, transient HTTP errors are retried,
and the commit names its parent so a concurrent writer's update is never silently overwritten.

The upload itself is `HfApi.upload_folder`; this module adds what it does not promise: an exact
"nothing changed" answer before anything is uploaded, and one create_commit instead for folders that
huggingface_hub's streamed upload could split into several commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoFile, constants
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, is_package_available
from huggingface_hub.utils.sha import git_hash, sha_fileobj

T = TypeVar("T")
# upload_folder never deletes it (the Hub needs it to route large files to LFS), so neither does a push.
KEEP_REMOTE = {".gitattributes"}

# With hf_xet installed, huggingface_hub 2.4's upload_folder streams a folder in batches (one commit
# each, 250 files or 100 MiB of regular-file content per batch) and retries a failed commit of more
# than 20 files as several smaller commits. Within these bounds it makes exactly one commit; beyond
# them push_folder sends the same change as one create_commit.
MAX_FILES_TO_COMMIT = 20
MAX_FILES_IN_FOLDER = 200
MAX_REGULAR_BYTES = 100 * 1024 * 1024
REGULAR_FILE_LIMIT = 10 * 1024 * 1024  # larger files always go to LFS/Xet storage, not into the commit


@dataclass
class PushResult:
    """Where a folder went: `commit` is the repo's head after the push, `changed` whether a commit was made."""

    repo_id: str
    repo_type: str
    commit: str
    changed: bool
    url: str


def http_status(error: BaseException) -> Optional[int]:
    """The HTTP status of a failed request (huggingface_hub errors carry the response), else None."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """5xx, 429 and connection-level failures are worth retrying; other 4xx are not."""
    status = http_status(error)
    if status is not None:
        return status >= 500 or status == 429
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectionError", "ConnectError", "ReadTimeout", "TimeoutException", "RemoteProtocolError",
                         "ReadError", "WriteError", "Timeout"})


def with_retries(call: Callable[[], T], attempts: int = 4, delay: float = 0.5) -> T:
    """`call()`, retried with exponential backoff while it fails with a transient error."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # noqa: BLE001  re-raised unless transient
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(delay * 2 ** attempt)
    raise AssertionError("unreachable")


def local_files(folder: Path) -> Dict[str, Path]:
    """{path in repo: file} for what upload_folder uploads from `folder` (it skips .git and its own cache)."""
    found = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return {path: found[path] for path in filter_repo_objects(list(found), ignore_patterns=DEFAULT_IGNORE_PATTERNS)}


def _remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str) -> Dict[str, RepoFile]:
    entries = api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True)
    return {entry.path: entry for entry in entries if isinstance(entry, RepoFile)}


def _same_content(local: Path, remote: RepoFile) -> bool:
    """Compares the way the Hub identifies content: sha256 for LFS files, the git blob id otherwise."""
    if local.stat().st_size != remote.size:  # settles most changes without reading the file
        return False
    if remote.lfs is not None:
        with open(local, "rb") as handle:
            return sha_fileobj(handle).hex() == remote.lfs.sha256
    return remote.blob_id == git_hash(local.read_bytes())


def files_to_commit(local: Dict[str, Path], remote: Dict[str, RepoFile]) -> List[str]:
    """Paths of the local files that are new or differ from the remote ones."""
    return [path for path, file in local.items() if path not in remote or not _same_content(file, remote[path])]


def _may_split(local: Dict[str, Path], changed: List[str]) -> bool:
    """Whether upload_folder could send this change as several commits (the bounds above, with hf_xet)."""
    if constants.HF_HUB_DISABLE_XET or not is_package_available("hf_xet"):
        return False  # without hf_xet, upload_folder sends everything as a single create_commit
    regular = sum(size for size in (file.stat().st_size for file in local.values()) if size < REGULAR_FILE_LIMIT)
    return len(changed) > MAX_FILES_TO_COMMIT or len(local) > MAX_FILES_IN_FOLDER or regular > MAX_REGULAR_BYTES


def _create_one_commit(api: HfApi, repo_id: str, repo_type: str, local: Dict[str, Path], changed: List[str],
                       removed: List[str], commit_message: str, head: Optional[str]):
    """The same change as upload_folder's, as ONE create_commit: for folders that upload_folder's streamed
    upload could split into several commits (a half-published model is worse than a slower upload)."""
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local[path])) for path in changed]
    operations += [CommitOperationDelete(path_in_repo=path) for path in removed]
    return with_retries(lambda: api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=operations,
                                                  commit_message=commit_message, parent_commit=head))


def push_folder(folder: Path, repo_id: str, repo_type: str = "model", commit_message: str = "Upload with talklora_hub",
                private: bool = False, api: Optional[HfApi] = None) -> PushResult:
    """Makes the repo's main branch hold exactly the folder's files, in one commit (or none if equal)."""
    api = api or HfApi()
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` must be an existing directory, got {str(folder)!r}. Fix: save the model first.")
    repo_url = with_retries(lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
    url = str(getattr(repo_url, "url", repo_url))
    head = with_retries(lambda: api.repo_info(repo_id, repo_type=repo_type)).sha
    local = local_files(folder)
    remote = _remote_files(api, repo_id, repo_type, head) if head else {}
    changed = files_to_commit(local, remote)
    removed = sorted(set(remote) - set(local) - KEEP_REMOTE)
    # Checked here rather than left to upload_folder: its own no-op answer cannot tell "equal" from "a
    # concurrent writer's commit", and this way an unchanged folder uploads nothing at all.
    if not changed and not removed:
        return PushResult(repo_id, repo_type, head, False, url)
    if _may_split(local, changed):
        info = _create_one_commit(api, repo_id, repo_type, local, changed, removed, commit_message, head)
        return PushResult(repo_id, repo_type, info.oid, True, url)
    info = with_retries(lambda: api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type,
                                                  commit_message=commit_message, delete_patterns="*",
                                                  parent_commit=head))
    return PushResult(repo_id, repo_type, info.oid, info.oid != head, url)
