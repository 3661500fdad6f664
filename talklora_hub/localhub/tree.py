"""The data model of a repo's history, free of any disk access: file entries, commits (each with its
full flat tree), folder views of a tree, .gitattributes matching and the commit operations that turn
one tree into the next. storage.py persists these; the routes describe them (repo_info.py)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from .errors import EntryNotFound, InvalidCommit
from .objects import git_blob_oid, lfs_pointer


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical_json(data) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class FileEntry:
    """One file of a tree. `git_oid` is the blob id git would report: sha1 of the content for regular
    files, sha1 of the LFS pointer for LFS files (that is what the Hub returns as a file's 'oid')."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    def to_json(self) -> list:
        return [self.sha256, self.size, self.lfs, self.git_oid]

    @classmethod
    def from_json(cls, data: list) -> "FileEntry":
        return cls(sha256=data[0], size=int(data[1]), lfs=bool(data[2]), git_oid=data[3])

    @classmethod
    def regular(cls, data: bytes, sha256: str) -> "FileEntry":
        return cls(sha256=sha256, size=len(data), lfs=False, git_oid=git_blob_oid(data))

    @classmethod
    def large(cls, sha256: str, size: int) -> "FileEntry":
        return cls(sha256=sha256, size=size, lfs=True, git_oid=git_blob_oid(lfs_pointer(sha256, size)))

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    id: str
    parents: tuple[str, ...]
    tree: dict[str, FileEntry]
    author: str
    title: str
    message: str
    date: str

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "parents": list(self.parents),
            "author": self.author,
            "title": self.title,
            "message": self.message,
            "date": self.date,
            "tree": {path: entry.to_json() for path, entry in sorted(self.tree.items())},
        }

    @classmethod
    def from_json(cls, data: dict) -> "Commit":
        return cls(
            id=data["id"],
            parents=tuple(data["parents"]),
            tree={path: FileEntry.from_json(value) for path, value in data["tree"].items()},
            author=data["author"],
            title=data["title"],
            message=data["message"],
            date=data["date"],
        )

    @classmethod
    def build(cls, parents, tree, author, title, message) -> "Commit":
        date = now_iso()
        tree_hash = hashlib.sha1(canonical_json({p: e.to_json() for p, e in sorted(tree.items())})).hexdigest()
        body = {"tree": tree_hash, "parents": list(parents), "author": author, "title": title,
                "message": message, "date": date}
        commit_id = hashlib.sha1(canonical_json(body)).hexdigest()
        return cls(commit_id, tuple(parents), dict(tree), author, title, message, date)


# ---------------------------------------------------------------------------- tree helpers


def folder_exists(tree: dict[str, FileEntry], folder: str) -> bool:
    prefix = folder + "/"
    return any(path.startswith(prefix) for path in tree)


def folder_oid(tree: dict[str, FileEntry], folder: str) -> str:
    """A stable id for a folder's content (stands in for git's tree id)."""
    prefix = folder + "/" if folder else ""
    digest = hashlib.sha1()
    for path in sorted(p for p in tree if p.startswith(prefix)):
        digest.update(f"{path[len(prefix):]}\0{tree[path].git_oid}\n".encode())
    return digest.hexdigest()


def list_folder(tree: dict[str, FileEntry], folder: str, recursive: bool) -> list[tuple[str, str]]:
    """Entries under `folder` as sorted (kind, path) pairs, kind being 'file' or 'directory'.
    Raises EntryNotFound if `folder` is neither the root nor an existing folder."""
    if folder and not folder_exists(tree, folder):
        raise EntryNotFound(f"Folder {folder!r} not found")
    prefix = folder + "/" if folder else ""
    files: set[str] = set()
    dirs: set[str] = set()
    for path in tree:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        parts = rest.split("/")
        if recursive:
            files.add(path)
            for depth in range(1, len(parts)):
                dirs.add(prefix + "/".join(parts[:depth]))
        elif len(parts) == 1:
            files.add(path)
        else:
            dirs.add(prefix + parts[0])
    entries = [("directory", d) for d in dirs] + [("file", f) for f in files]
    # Folders before files at each level, like the Hub; deterministic order makes paging stable.
    return sorted(entries, key=lambda item: (item[1].split("/")[:-1], item[0] != "directory", item[1]))


def gitattributes_lfs_patterns(content: bytes) -> list[str]:
    patterns = []
    for line in content.decode("utf-8", "replace").splitlines():
        parts = line.strip().split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches_gitattributes(path: str, patterns: Iterable[str]) -> bool:
    base = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(path, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(base, pattern.rstrip("/")):
            return True
    return False


# ---------------------------------------------------------------------------- commit operations


@dataclass(frozen=True)
class AddFile:
    path: str
    entry: FileEntry


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


Operation = AddFile | DeleteFile | DeleteFolder


def apply_operations(tree: dict[str, FileEntry], operations: Iterable[Operation]) -> dict[str, FileEntry]:
    """The tree after `operations`, in order. Raises EntryNotFound for deleting what does not exist
    and InvalidCommit when a path would be both a file and a folder."""
    new_tree = dict(tree)
    for op in operations:
        if isinstance(op, AddFile):
            new_tree[op.path] = op.entry
        elif isinstance(op, DeleteFile):
            if op.path not in new_tree:
                raise EntryNotFound(f"Cannot delete {op.path!r}: file not found")
            del new_tree[op.path]
        elif isinstance(op, DeleteFolder):
            folder = op.path.rstrip("/")
            doomed = [p for p in new_tree if folder == "" or p.startswith(folder + "/")]
            if not doomed:
                raise EntryNotFound(f"Cannot delete folder {folder!r}: not found")
            for path in doomed:
                del new_tree[path]
        else:  # pragma: no cover - programming error
            raise TypeError(op)
    folders = {path.rsplit("/", 1)[0] for path in new_tree if "/" in path}
    all_folders = set()
    for folder in folders:
        parts = folder.split("/")
        all_folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    clash = sorted(all_folders & set(new_tree))
    if clash:
        raise InvalidCommit(f"{clash[0]!r} would be both a file and a folder")
    return new_tree

