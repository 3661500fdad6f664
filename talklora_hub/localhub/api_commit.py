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
from .web import HubHTTPError, load_repo, repo_type_from_plural
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

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses larger regular (non-LFS) files


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


@router.post("/api/{plural}/{namespace}/{name}/preupload/{revision:path}")
async def preupload(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    _reject_pull_requests(request)
    try:
        payload = await request.json()
        files = payload["files"]
        assert isinstance(files, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise HubHTTPError(400, "Body must be {'files': [{'path', 'size', 'sample'}]}") from None
    commit = repo.get_commit(repo.resolve(revision))
    lfs_patterns = gitattributes_lfs_patterns((_text_of(repo, commit, ".gitattributes") or "").encode())
    gitignore = payload.get("gitIgnore")
    if gitignore is None:
        gitignore = _text_of(repo, commit, ".gitignore") or ""
    ignore_patterns = str(gitignore).splitlines()
    answers = []
    for item in files:
        path = check_file_path(str(item.get("path", "")))
        size = int(item.get("size", 0))
        try:
            sample = base64.b64decode(item.get("sample", "") or "")
        except (binascii.Error, ValueError):
            sample = b""
        # Large, LFS-tracked or binary files go to LFS/Xet storage, like on the Hub.
        large = size >= LFS_SIZE_THRESHOLD or matches_gitattributes(path, lfs_patterns) or b"\0" in sample
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

    def feed(self, item: dict) -> None:
        if not isinstance(item, dict) or "key" not in item or not isinstance(item.get("value"), dict):
            raise InvalidCommit("Each line must be {'key': ..., 'value': {...}}")
        key, value = item["key"], item["value"]
        if key == "header":
            self.header = value
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

    def _add_regular(self, value: dict) -> None:
        path = check_file_path(str(value.get("path", "")))
        content = value.get("content", "")
        if value.get("encoding", "utf-8") == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidCommit(f"Invalid base64 content for {path!r}") from None
        else:
            data = str(content).encode("utf-8")
        sha256 = self.repo.storage.objects.put_bytes(data)
        self.operations.append(AddFile(path, FileEntry.regular(data, sha256)))

    def _add_lfs(self, value: dict) -> None:
        path = check_file_path(str(value.get("path", "")))
        oid = str(value.get("oid", "")).lower()
        if value.get("algo", "sha256") != "sha256" or not SHA256_RE.match(oid):
            raise InvalidCommit(f"LFS file {path!r} needs a sha256 oid")
        if not self.repo.has_lfs(oid):
            raise InvalidCommit(f"LFS object {oid} for {path!r} was never uploaded to this repo: upload it first")
        size = self.repo.storage.objects.size(oid)
        if value.get("size") is not None and int(value["size"]) != size:
            raise InvalidCommit(f"LFS object {oid} for {path!r} is {size} bytes, not {value['size']}")
        self.operations.append(AddFile(path, FileEntry.large(oid, size)))

    def feed_legacy_json(self, payload: dict) -> None:
        """Older clients post one JSON object instead of NDJSON lines."""
        self.header = {k: payload.get(k) for k in ("summary", "description", "parentCommit") if k in payload}
        for value in payload.get("files", []):
            self._add_regular(value)
        for value in payload.get("lfsFiles", []):
            self._add_lfs(value)
        for value in payload.get("deletedFiles", []):
            self.feed({"key": "deletedFile", "value": value})
        for value in payload.get("deletedFolders", []):
            self.feed({"key": "deletedFolder", "value": value})


async def _ndjson_items(request: Request):
    buffer = b""
    async for chunk in request.stream():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def _parse_line(line: bytes) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        raise InvalidCommit("Invalid JSON line in commit payload") from None


@router.post("/api/{plural}/{namespace}/{name}/commit/{revision:path}")
async def create_commit(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, principal = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    _reject_pull_requests(request)
    parser = _CommitParser(repo)
    if request.headers.get("content-type", "").startswith("application/json"):
        payload = _parse_line(await request.body())
        await run_in_threadpool(parser.feed_legacy_json, payload)
    else:
        async for line in _ndjson_items(request):
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

