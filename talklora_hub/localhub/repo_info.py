"""JSON shapes describing repos and their files, as the Hub API returns them (ModelInfo /
DatasetInfo / SpaceInfo, tree entries, commits). Kept apart from the routes so listing, info and
tree endpoints all describe things the same way."""

from __future__ import annotations

import yaml

from .storage import Commit, FileEntry, Repo, folder_oid

README = "README.md"


def file_json(path: str, entry: FileEntry) -> dict:
    data = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def folder_json(path: str, tree: dict[str, FileEntry]) -> dict:
    return {"type": "directory", "oid": folder_oid(tree, path), "size": 0, "path": path}


def last_commit_json(commit: Commit) -> dict:
    return {"id": commit.id, "title": commit.title, "date": commit.date}


def commit_json(commit: Commit) -> dict:
    return {
        "id": commit.id,
        "title": commit.title,
        "message": commit.message,
        "authors": [{"user": commit.author, "avatar": None}],
        "date": commit.date,
        "parents": list(commit.parents),
    }


def card_data(repo: Repo, commit: Commit) -> dict | None:
    """The YAML metadata block of the README at `commit`, if any and valid."""
    entry = commit.tree.get(README)
    if entry is None or entry.size > 1_000_000:
        return None
    try:
        text = repo.storage.objects.read(entry.sha256).decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
        data = yaml.safe_load("\n".join(lines[1:end]))
    except (StopIteration, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def repo_summary(repo: Repo, meta: dict, commit: Commit | None = None) -> dict:
    """Fields common to listings and info pages."""
    commit = commit or repo.get_commit(repo.head())
    data = {
        "_id": f"{repo.type}:{repo.id}",
        "id": repo.id,
        "author": repo.namespace,
        "sha": commit.id,
        "lastModified": commit.date,
        "createdAt": meta.get("created_at"),
        "private": bool(meta.get("private")),
        "gated": meta.get("gated", False) or False,
        "disabled": False,
        "likes": 0,
        "tags": [],
    }
    if repo.type == "model":
        data["modelId"] = repo.id
        data["downloads"] = 0
    elif repo.type == "dataset":
        data["downloads"] = 0
    else:
        data["sdk"] = meta.get("sdk")
        data["subdomain"] = f"{repo.namespace}-{repo.name}".lower()
    return data


def repo_info_json(repo: Repo, commit: Commit) -> dict:
    meta = repo.meta()
    data = repo_summary(repo, meta, commit)
    card = card_data(repo, commit)
    if card is not None:
        data["cardData"] = card
        tags = card.get("tags")
        if isinstance(tags, list):
            data["tags"] = [str(tag) for tag in tags]
        for key in ("library_name", "pipeline_tag"):
            if repo.type == "model" and isinstance(card.get(key), str):
                data[key] = card[key]
    data["siblings"] = [
        {
            "rfilename": path,
            "size": entry.size,
            "blobId": entry.git_oid,
            **({"lfs": {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}}
               if entry.lfs else {}),
        }
        for path, entry in sorted(commit.tree.items())
    ]
    data["usedStorage"] = sum(entry.size for entry in commit.tree.values())
    return data
