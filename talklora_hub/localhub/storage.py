"""On-disk format of the hub: repos, commits and refs (file contents live in `objects.ObjectStore`;
the commit/tree data model is tree.py, the errors errors.py, the repo lock locks.py).

Layout under the root directory::

    objects/ab/cd/<sha256>              file contents, content-addressed (see objects.py)
    repos/<type>s/<namespace>/<name>/
        repo.json                       metadata: private flag, owner, creation date, space sdk
        refs.json                       {"branches": {name: commit id}, "tags": {name: commit id}}
        commits/<id>.json               immutable commit: parents, author, message, date and the
                                        full flat tree {path: [sha256, size, is_lfs, git oid]}
        lfs/<sha256>                    marker: this LFS object was uploaded *to this repo*
        .lock                           per-repo lock file (flock)
    tmp/                                temp files; emptied at server start

Why this shape: a commit is the single file ``commits/<id>.json`` plus one atomic replace of
``refs.json``. Everything a commit references (blobs, the commit file) is written completely and
fsynced *before* the ref moves, so a crash at any moment leaves the branch on its previous commit and
no partial file reachable. Commits are never rewritten, so every old commit id stays readable
(revision pinning) and can be cached forever. Storing a full tree per commit costs a little space
but makes reading any revision a single file read, which is what a model zoo mostly does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from .errors import (  # noqa: F401 - re-exported: the storage API raises them
    CommitConflict,
    EntryNotFound,
    InvalidCommit,
    RepoExists,
    RepoNotFound,
    RevisionNotFound,
)
from .faults import charge_disk, crash_point
from .locks import ExclusiveLock
from .objects import ObjectStore, atomic_write, fsync_dir
from .paths import check_file_path, check_name, check_namespace, check_ref_name, check_repo_type, check_revision
from .tree import (  # noqa: F401 - re-exported for the modules and tests that import them from here
    AddFile,
    Commit,
    DeleteFile,
    DeleteFolder,
    FileEntry,
    Operation,
    apply_operations,
    canonical_json,
    folder_exists,
    folder_oid,
    gitattributes_lfs_patterns,
    list_folder,
    matches_gitattributes,
    now_iso,
)

COMMIT_ID_RE = re.compile(r"^[0-9a-f]{40}$")
COMMIT_PREFIX_RE = re.compile(r"^[0-9a-f]{7,40}$")
DEFAULT_BRANCH = "main"

# Written as the first commit of every repo, as the Hub does: which files git-lfs should store.
DEFAULT_GITATTRIBUTES = (
    "\n".join(
        f"{pattern} filter=lfs diff=lfs merge=lfs -text"
        for pattern in (
            "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
            "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
            "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*",
            "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
        )
    )
    + "\n"
)


# ---------------------------------------------------------------------------- repos


def repo_not_found(repo_type: str, namespace: str, name: str) -> RepoNotFound:
    """The one error for "no such repo", also raised for a private repo the caller may not see: a
    different wording (or header) for either case would tell outsiders that the private repo exists."""
    return RepoNotFound(f"Repository not found: {check_repo_type(repo_type)} {namespace}/{name}")


class Repo:
    """One repository. Cheap to construct; reads its files on demand."""

    def __init__(self, storage: "HubStorage", repo_type: str, namespace: str, name: str, path: Path):
        self.storage = storage
        self.type = repo_type
        self.namespace = namespace
        self.name = name
        self.path = path

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -- metadata and refs

    def meta(self) -> dict:
        return json.loads((self.path / "repo.json").read_text())

    def update_meta(self, **changes) -> dict:
        with self.lock():
            meta = self.meta()
            meta.update(changes)
            atomic_write(self.path / "repo.json", canonical_json(meta), self.storage.tmp_dir)
            return meta

    @property
    def private(self) -> bool:
        return bool(self.meta().get("private"))

    def refs(self) -> dict:
        return json.loads((self.path / "refs.json").read_text())

    def _write_refs(self, refs: dict) -> None:
        # The commit point of every write: one atomic replace of a small file.
        atomic_write(self.path / "refs.json", canonical_json(refs), self.storage.tmp_dir)

    def lock(self) -> ExclusiveLock:
        return ExclusiveLock(self.path / ".lock")

    # -- commits

    def get_commit(self, commit_id: str) -> Commit:
        if not COMMIT_ID_RE.match(commit_id):
            raise RevisionNotFound(commit_id)
        return self.storage._load_commit(self.path / "commits" / f"{commit_id}.json")

    def has_commit(self, commit_id: str) -> bool:
        return bool(COMMIT_ID_RE.match(commit_id)) and (self.path / "commits" / f"{commit_id}.json").is_file()

    def resolve(self, revision: str | None) -> str:
        """Commit id for a branch, a tag, a full commit id or a unique commit id prefix (>= 7 chars)."""
        revision = check_revision(revision or DEFAULT_BRANCH)
        refs = self.refs()
        for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if revision.startswith(prefix) and revision[len(prefix):] in refs[kind]:
                return refs[kind][revision[len(prefix):]]
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        lowered = revision.lower()
        if COMMIT_ID_RE.match(lowered) and self.has_commit(lowered):
            return lowered
        if COMMIT_PREFIX_RE.match(lowered) and len(lowered) < 40:
            matches = [p.stem for p in (self.path / "commits").glob(f"{lowered}*.json")]
            if len(matches) == 1:
                return matches[0]
        raise RevisionNotFound(f"Invalid rev id: {revision!r}")

    def head(self, branch: str = DEFAULT_BRANCH) -> str:
        try:
            return self.refs()["branches"][branch]
        except KeyError:
            raise RevisionNotFound(f"Branch {branch!r} not found") from None

    def history(self, commit_id: str) -> Iterator[Commit]:
        """Commits reachable from `commit_id` along first parents, newest first."""
        current: str | None = commit_id
        while current:
            commit = self.get_commit(current)
            yield commit
            current = commit.parents[0] if commit.parents else None

    def last_commits(self, commit_id: str, paths: list[tuple[str, str]], max_depth: int = 10_000) -> dict[str, Commit]:
        """For each (kind, path), the newest commit that changed it (a file, or anything in a folder)."""
        wanted = {path: kind for kind, path in paths}
        found: dict[str, Commit] = {}
        for depth, commit in enumerate(self.history(commit_id)):
            if not wanted or depth >= max_depth:
                break
            parent_tree = self.get_commit(commit.parents[0]).tree if commit.parents else {}
            changed = {p for p in set(commit.tree) | set(parent_tree) if commit.tree.get(p) != parent_tree.get(p)}
            for path, kind in list(wanted.items()):
                if (kind == "file" and path in changed) or (
                    kind == "directory" and any(c.startswith(path + "/") for c in changed)
                ):
                    found[path] = commit
                    del wanted[path]
        return found

    def _write_commit(self, commit: Commit) -> None:
        atomic_write(self.path / "commits" / f"{commit.id}.json", canonical_json(commit.to_json()), self.storage.tmp_dir)

    def commit(
        self,
        branch: str,
        operations: list[Operation],
        *,
        author: str,
        title: str,
        message: str = "",
        parent_commit: str | None = None,
    ) -> Commit:
        """Apply `operations` on top of `branch` as one new commit.

        With `parent_commit`, the commit only applies if the branch still points there (else
        CommitConflict): a client that read revision X and pushes "X + my change" never silently
        overwrites a concurrent update. Without it, the change applies on whatever the head is
        when the repo lock is taken, so concurrent writers are serialised and none is lost."""
        check_revision(branch)
        if parent_commit is not None:
            check_revision(parent_commit)
        for op in operations:
            if isinstance(op, AddFile) and not self.storage.objects.exists(op.entry.sha256):
                raise InvalidCommit(f"Content of {op.path!r} is not stored on the server")
        with self.lock():
            refs = self.refs()
            if branch not in refs["branches"]:
                if branch in refs["tags"] or COMMIT_PREFIX_RE.match(branch):
                    raise InvalidCommit(f"Can only commit to a branch, {branch!r} is not one")
                raise RevisionNotFound(f"Branch {branch!r} not found")
            head = refs["branches"][branch]
            if parent_commit is not None and parent_commit.lower() != head:
                parent_full = self._resolve_quiet(parent_commit)
                if parent_full != head:
                    raise CommitConflict(
                        f"A commit has happened since {parent_commit}: the branch {branch!r} is now at {head}. "
                        "Pull the new head and retry."
                    )
            head_tree = self.get_commit(head).tree
            new_tree = apply_operations(head_tree, operations)
            commit = Commit.build([head], new_tree, author, title or "Update", message)
            self._write_commit(commit)
            crash_point("commit:before-ref-update")
            refs["branches"][branch] = commit.id
            self._write_refs(refs)
            return commit

    def _resolve_quiet(self, revision: str) -> str | None:
        try:
            return self.resolve(revision)
        except RevisionNotFound:
            return None

    # -- branches and tags

    def create_ref(self, kind: str, name: str, revision: str | None) -> str:
        check_ref_name(name)
        with self.lock():
            refs = self.refs()
            if name in refs[kind]:
                raise RepoExists(f"{'Branch' if kind == 'branches' else 'Tag'} {name!r} already exists")
            target = self.resolve(revision)
            refs[kind][name] = target
            self._write_refs(refs)
            return target

    def delete_ref(self, kind: str, name: str) -> None:
        check_ref_name(name)
        with self.lock():
            refs = self.refs()
            if name not in refs[kind]:
                raise RevisionNotFound(f"{name!r} not found")
            if kind == "branches" and name == DEFAULT_BRANCH:
                raise InvalidCommit("The main branch cannot be deleted")
            del refs[kind][name]
            self._write_refs(refs)

    # -- LFS possession grants

    def grant_lfs(self, sha256: str) -> None:
        """Record that this repo received (and verified) the LFS object: commits may now reference it.
        Content addressing is global, but the right to use an object is per repo, so knowing a hash
        is not enough to pull someone else's private file into your repo."""
        marker = self.path / "lfs" / sha256
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def has_lfs(self, sha256: str) -> bool:
        # The object store checks the name is a sha256 before the marker path is built from it.
        return self.storage.objects.exists(sha256) and (self.path / "lfs" / sha256).exists()


class HubStorage:
    """All repos and objects under one root directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.objects = ObjectStore(self.root)
        self.tmp_dir = self.objects.tmp_dir
        self.repos_dir = self.root / "repos"
        self.repos_dir.mkdir(exist_ok=True)
        self._commit_cache: OrderedDict[str, Commit] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _load_commit(self, path: Path) -> Commit:
        key = str(path)
        with self._cache_lock:
            if key in self._commit_cache:
                self._commit_cache.move_to_end(key)
                return self._commit_cache[key]
        try:
            commit = Commit.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise RevisionNotFound(path.stem) from None
        with self._cache_lock:  # commits are immutable, so caching them can never serve stale data
            self._commit_cache[key] = commit
            while len(self._commit_cache) > 512:
                self._commit_cache.popitem(last=False)
        return commit

    def repo_path(self, repo_type: str, namespace: str, name: str) -> Path:
        repo_type = check_repo_type(repo_type)
        return self.repos_dir / f"{repo_type}s" / check_namespace(namespace) / check_name(name)

    def get(self, repo_type: str, namespace: str, name: str) -> Repo:
        path = self.repo_path(repo_type, namespace, name)
        if not (path / "refs.json").is_file():
            raise repo_not_found(repo_type, namespace, name)
        return Repo(self, check_repo_type(repo_type), namespace, name, path)

    def list_repos(self, repo_type: str) -> Iterator[Repo]:
        base = self.repos_dir / f"{check_repo_type(repo_type)}s"
        if not base.is_dir():
            return
        for ns_dir in sorted(base.iterdir()):
            for repo_dir in sorted(ns_dir.iterdir()) if ns_dir.is_dir() else ():
                if (repo_dir / "refs.json").is_file():
                    yield Repo(self, check_repo_type(repo_type), ns_dir.name, repo_dir.name, repo_dir)

    def _global_lock(self) -> ExclusiveLock:
        return ExclusiveLock(self.root / "locks" / "repos.lock")

    def create(
        self, repo_type: str, namespace: str, name: str, *, owner: str, private: bool = False,
        sdk: str | None = None,
    ) -> Repo:
        """Create a repo with its initial commit (a default .gitattributes), atomically: the repo
        directory is assembled in tmp/ and renamed into place, so it never exists half-made."""
        repo_type = check_repo_type(repo_type)
        final = self.repo_path(repo_type, namespace, name)
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        sha = self.objects.put_bytes(gitattributes)
        initial = Commit.build([], {".gitattributes": FileEntry.regular(gitattributes, sha)}, owner,
                               "initial commit", "")
        staging = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="repo-"))
        try:
            meta = {"type": repo_type, "namespace": namespace, "name": name, "private": bool(private),
                    "owner": owner, "created_at": now_iso()}
            if sdk is not None:
                meta["sdk"] = sdk
            files = {"repo.json": canonical_json(meta), f"commits/{initial.id}.json": canonical_json(initial.to_json()),
                     "refs.json": canonical_json({"branches": {DEFAULT_BRANCH: initial.id}, "tags": {}})}
            (staging / "commits").mkdir()
            for relative, data in files.items():
                charge_disk(len(data))
                (staging / relative).write_bytes(data)
            with self._global_lock():
                if final.exists() or self._case_clash(final):
                    raise RepoExists(f"You already created this {repo_type} repo: {namespace}/{name}")
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, final)
                fsync_dir(final.parent)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return Repo(self, repo_type, namespace, name, final)

    @staticmethod
    def _case_clash(final: Path) -> bool:
        # Repo ids are case-insensitive on the Hub; refuse "User/Model" next to "user/model".
        if not final.parent.parent.is_dir():
            return False
        for ns_dir in final.parent.parent.iterdir():
            if ns_dir.name.lower() == final.parent.name.lower():
                for repo_dir in ns_dir.iterdir():
                    if repo_dir.name.lower() == final.name.lower():
                        return True
        return False

    def delete(self, repo_type: str, namespace: str, name: str) -> None:
        """Remove a repo: one rename makes it disappear, the actual deletion happens afterwards."""
        repo = self.get(repo_type, namespace, name)
        trash = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="trash-"))
        with self._global_lock(), repo.lock():
            os.rename(repo.path, trash / "repo")
        shutil.rmtree(trash, ignore_errors=True)

    def move(self, repo_type: str, from_id: tuple[str, str], to_id: tuple[str, str]) -> Repo:
        repo = self.get(repo_type, *from_id)
        target = self.repo_path(repo_type, *to_id)
        with self._global_lock(), repo.lock():
            if target.exists():
                raise RepoExists(f"{to_id[0]}/{to_id[1]} already exists")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(repo.path, target)
        moved = self.get(repo_type, *to_id)
        moved.update_meta(namespace=to_id[0], name=to_id[1])
        return moved

    def read_file(self, commit: Commit, path: str) -> bytes:
        path = check_file_path(path)
        if path not in commit.tree:
            raise EntryNotFound(path)
        return self.objects.read(commit.tree[path].sha256)
