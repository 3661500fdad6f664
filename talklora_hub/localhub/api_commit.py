"""Write routes of the commit protocol: ``preupload`` (which files go to LFS/Xet storage, which are
unchanged) and ``commit`` (the NDJSON list of operations that becomes one atomic commit).

A commit request is processed line by line as it arrives: small files are decoded and stored as
blobs immediately (content-addressed, so an aborted request leaves only unreferenced blobs), LFS
references are checked against the objects this repo actually received, and only when the whole
body has been read does `Repo.commit` swap the branch pointer. A client that disconnects halfway
therefore changes nothing visible."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .api_read import commit_url
from .bodies import (
    MAX_COMMIT_LINE,
    MAX_LEGACY_COMMIT_BODY,
    MAX_LISTING_BODY,
    MAX_REGULAR_FILE_SIZE,
    format_size,
    is_json_int,
    read_body,
    read_json_object,
    read_lines,
)
from .web import INSUFFICIENT_STORAGE, HubHTTPError, disk_full_message, load_repo, repo_type_from_plural
from .objects import SHA256_RE
from .paths import check_file_path
from .storage import (
    AddFile,
    Commit,
    DeleteFile,
    DeleteFolder,
    FileEntry,
    InvalidCommit,
    Operation,
    Repo,
    gitattributes_lfs_patterns,
    matches_gitattributes,
)

router = APIRouter()

_LINE_HINT = (f" (regular files must be smaller than {format_size(MAX_REGULAR_FILE_SIZE)}; "
              "larger ones go through LFS/Xet)")


def _reject_pull_requests(request: Request) -> None:
    if request.query_params.get("create_pr") in ("1", "true", "True"):
        raise HubHTTPError(400, "Pull requests are not supported by this hub; push to a branch instead")


def _gitignore_match(path: str, patterns: list[str]) -> bool:
    """A small subset of .gitignore semantics: '#' comments, '!' negation, trailing '/' for
    folders, patterns without '/' matching any path component, others anchored at the root."""
    ignored = False
    parts = path.split("/")
    for raw in patterns:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        folder_only = pattern.endswith("/")
        pattern = pattern.strip("/")
        if "/" in pattern:
            candidates = ["/".join(parts[: i + 1]) for i in range(len(parts) - (1 if folder_only else 0))]
        else:
            candidates = parts[:-1] if folder_only else parts
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negate
    return ignored


def _text_of(repo: Repo, commit: Commit, path: str) -> str | None:
    entry = commit.tree.get(path)
    if entry is None or entry.size > 1_000_000:
        return None
    return repo.storage.objects.read(entry.sha256).decode("utf-8", "replace")


_PREUPLOAD_SHAPE = "{'files': [{'path': str, 'size': int, 'sample': base64}]}"


def _preupload_files(payload: dict) -> list[tuple[str, int, bytes]]:
    """(path, size, sample) of each file a preupload request announces (400 if malformed)."""
    files = payload.get("files")
    if not isinstance(files, list) or not all(isinstance(item, dict) for item in files):
        raise HubHTTPError(400, f"The body must be {_PREUPLOAD_SHAPE}")
    announced = []
    for item in files:
        path = check_file_path(str(item.get("path", "")))
        size = item.get("size", 0)
        if not is_json_int(size) or size < 0:
            raise HubHTTPError(400, f"Invalid size {size!r} for {path!r}: must be a non-negative integer")
        sample = item.get("sample") or ""
        try:
            sample = base64.b64decode(sample) if isinstance(sample, str) else b""
        except (binascii.Error, ValueError):
            sample = b""
        announced.append((path, size, sample))
    return announced


def _check_free_space(repo: Repo, commit: Commit, announced: list[tuple[str, int, bytes]]) -> None:
    """Refuse (507) a commit whose files cannot fit on the disk, before the client sends a byte.
    This is where a huggingface_hub user hears of a full disk: its Xet uploads come later, through a
    client that only reports status codes (see web.CAS_DISK_FULL_STATUS). A file whose path already
    holds a file of the same size is not counted: it is most likely unchanged and the client will
    skip it (re-uploading a big folder with one small change must not be refused)."""
    needed = sum(size for path, size, _sample in announced
                 if path not in commit.tree or commit.tree[path].size != size)
    free = repo.storage.objects.free_bytes()
    if needed > free:
        raise HubHTTPError(INSUFFICIENT_STORAGE, disk_full_message(
            f"its disk is too full: only {format_size(free)} free, and these files take {format_size(needed)}"),
            "InsufficientStorage")


@router.post("/api/{plural}/{namespace}/{name}/preupload/{revision:path}")
async def preupload(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    _reject_pull_requests(request)
    payload = await read_json_object(request, MAX_LISTING_BODY, shape=_PREUPLOAD_SHAPE)
    announced = _preupload_files(payload)
    commit = repo.get_commit(repo.resolve(revision))
    _check_free_space(repo, commit, announced)
    lfs_patterns = gitattributes_lfs_patterns((_text_of(repo, commit, ".gitattributes") or "").encode())
    gitignore = payload.get("gitIgnore")
    if gitignore is None:
        gitignore = _text_of(repo, commit, ".gitignore") or ""
    ignore_patterns = str(gitignore).splitlines()
    answers = []
    for path, size, sample in announced:
        # Large, LFS-tracked or binary files go to LFS/Xet storage, like on the Hub.
        large = size >= MAX_REGULAR_FILE_SIZE or matches_gitattributes(path, lfs_patterns) or b"\0" in sample
        answer = {"path": path, "uploadMode": "lfs" if large else "regular",
                  "shouldIgnore": _gitignore_match(path, ignore_patterns)}
        existing = commit.tree.get(path)
        # The oid lets the client skip files whose content did not change: sha256 for LFS uploads,
        # the git blob id for regular ones (only known here when the stored file is regular too).
        if existing is not None and large:
            answer["oid"] = existing.sha256
        elif existing is not None and not existing.lfs:
            answer["oid"] = existing.git_oid
        answers.append(answer)
    return {"files": answers, "commitOid": commit.id}


class _CommitParser:
    """Turns commit payload items into storage operations, storing inline file contents as it goes."""

    def __init__(self, repo: Repo):
        self.repo = repo
        self.header: dict | None = None
        self.operations: list[Operation] = []

    def feed(self, item) -> None:
        if not isinstance(item, dict) or "key" not in item or not isinstance(item.get("value"), dict):
            raise InvalidCommit("Each line must be {'key': ..., 'value': {...}}")
        key, value = item["key"], item["value"]
        if key == "header":
            self.header = _checked_header(value)
        elif key == "file":
            self._add_regular(value)
        elif key == "lfsFile":
            self._add_lfs(value)
        elif key == "deletedFile":
            self.operations.append(DeleteFile(check_file_path(str(value.get("path", "")))))
        elif key == "deletedFolder":
            self.operations.append(DeleteFolder(check_file_path(str(value.get("path", "")), allow_empty=True)))
        else:
            raise InvalidCommit(f"Unknown commit operation {key!r}")

    def _add_regular(self, value) -> None:
        if not isinstance(value, dict):
            raise InvalidCommit("Each file must be an object {'path', 'content', 'encoding'}")
        path = check_file_path(str(value.get("path", "")))
        content = value.get("content", "")
        if not isinstance(content, str):
            raise InvalidCommit(f"The content of {path!r} must be a string")
        if value.get("encoding", "utf-8") == "base64":
            _check_regular_size(path, len(content) // 4 * 3 - 2)  # before decoding: refuse cheaply
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidCommit(f"Invalid base64 content for {path!r}") from None
        else:
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but not text
                raise InvalidCommit(f"The content of {path!r} is not valid Unicode text") from None
        _check_regular_size(path, len(data))
        sha256 = self.repo.storage.objects.put_bytes(data)
        self.operations.append(AddFile(path, FileEntry.regular(data, sha256)))

    def _add_lfs(self, value) -> None:
        if not isinstance(value, dict):
            raise InvalidCommit("Each LFS file must be an object {'path', 'algo', 'oid', 'size'}")
        path = check_file_path(str(value.get("path", "")))
        oid = str(value.get("oid", "")).lower()
        if value.get("algo", "sha256") != "sha256" or not SHA256_RE.match(oid):
            raise InvalidCommit(f"LFS file {path!r} needs a sha256 oid")
        if not self.repo.has_lfs(oid):
            raise InvalidCommit(f"LFS object {oid} for {path!r} was never uploaded to this repo: upload it first")
        size = self.repo.storage.objects.size(oid)
        declared = value.get("size")
        if declared is not None and (not is_json_int(declared) or declared != size):
            raise InvalidCommit(f"LFS object {oid} for {path!r} is {size} bytes, not {declared!r}")
        self.operations.append(AddFile(path, FileEntry.large(oid, size)))

    def feed_legacy_json(self, payload) -> None:
        """Older clients post one JSON object instead of NDJSON lines."""
        if not isinstance(payload, dict):
            raise InvalidCommit("A JSON commit body must be an object {'summary', 'files', 'lfsFiles', "
                                "'deletedFiles', 'deletedFolders'}")
        self.header = _checked_header({k: payload[k] for k in ("summary", "description", "parentCommit")
                                       if k in payload})
        lists = {key: payload.get(key, []) for key in ("files", "lfsFiles", "deletedFiles", "deletedFolders")}
        for key, values in lists.items():
            if not isinstance(values, list):
                raise InvalidCommit(f"{key!r} must be a list")
        for value in lists["files"]:
            self._add_regular(value)
        for value in lists["lfsFiles"]:
            self._add_lfs(value)
        for value in lists["deletedFiles"]:
            self.feed({"key": "deletedFile", "value": value})
        for value in lists["deletedFolders"]:
            self.feed({"key": "deletedFolder", "value": value})


def _checked_header(header: dict) -> dict:
    """The commit header, its fields checked: summary/description strings, parentCommit a revision."""
    for key in ("summary", "description"):
        if header.get(key) is not None and not isinstance(header[key], str):
            raise InvalidCommit(f"The commit {key} must be a string")
    parent = header.get("parentCommit")
    if parent is not None and not isinstance(parent, str):
        raise InvalidCommit("parentCommit must be a commit id (a string)")
    return header


def _check_regular_size(path: str, size: int) -> None:
    if size >= MAX_REGULAR_FILE_SIZE:
        raise HubHTTPError(413, f"{path!r} is {format_size(size)}: regular (non-LFS) files must be smaller than "
                                f"{format_size(MAX_REGULAR_FILE_SIZE)}. Upload it as an LFS file instead "
                                "(preupload answers uploadMode 'lfs' for it).")


def _parse_line(line: bytes):
    try:
        return json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        raise InvalidCommit("Invalid JSON line in commit payload") from None


@router.post("/api/{plural}/{namespace}/{name}/commit/{revision:path}")
async def create_commit(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, principal = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    _reject_pull_requests(request)
    parser = _CommitParser(repo)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await read_body(request, MAX_LEGACY_COMMIT_BODY, "A JSON commit body", _LINE_HINT)
        await run_in_threadpool(parser.feed_legacy_json, _parse_line(body))
    else:
        async for line in read_lines(request, MAX_COMMIT_LINE, _LINE_HINT):
            await run_in_threadpool(parser.feed, _parse_line(line))
    if parser.header is None:
        raise InvalidCommit("The commit payload must start with a header line")
    title = str(parser.header.get("summary") or "").strip() or "Update files"
    commit = await run_in_threadpool(
        repo.commit,
        revision,
        parser.operations,
        author=principal.user,
        title=title,
        message=str(parser.header.get("description") or ""),
        parent_commit=parser.header.get("parentCommit"),
    )
    return {
        "success": True,
        "commitOid": commit.id,
        "commitUrl": commit_url(request, repo, commit.id),
        "commitMessage": title,
        "hookOutput": "",
        "pullRequestUrl": None,
    }

