"""Where talklora_hub keeps what it fetches and derives: one cache folder and its manifest.

The folder is, in order of precedence, the `cache_dir` argument, the TALKLORA_HUB_CACHE environment
variable, then ~/.cache/talklora_hub. Everything below it is laid out by this module so that the
fetcher, the base-model bootstrap and the task loaders agree on paths without passing them around.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ENV_VAR = "TALKLORA_HUB_CACHE"
DEFAULT_CACHE = Path("~/.cache/talklora_hub")
MANIFEST_NAME = "manifest.json"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, else $TALKLORA_HUB_CACHE, else ~/.cache/talklora_hub."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(ENV_VAR) or DEFAULT_CACHE
    return Path(chosen).expanduser().resolve()


def downloads_dir(cache_dir=None) -> Path:
    """Archives exactly as the registries served them (kept so a re-unpack needs no network)."""
    return cache_root(cache_dir) / "downloads"


def source_dir(name: str, cache_dir=None) -> Path:
    """The unpacked tree of one raw source, e.g. sources/spam-assassin."""
    return cache_root(cache_dir) / "sources" / name


def models_dir(cache_dir=None) -> Path:
    """Bootstrapped base models, one ordinary transformers folder each."""
    return cache_root(cache_dir) / "models"


def tasks_dir(cache_dir=None) -> Path:
    """Processed task DatasetDicts saved with save_to_disk, keyed by a fingerprint."""
    return cache_root(cache_dir) / "tasks"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large wheels do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(cache_dir=None) -> dict:
    """The manifest ({"sources": {name: entry}}), or an empty one when nothing was fetched yet."""
    path = cache_root(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return {"sources": {}}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    data.setdefault("sources", {})
    return data


def write_manifest(manifest: dict, cache_dir=None) -> Path:
    """Write the manifest atomically (temp file + rename) so an interrupted run never leaves half a file."""
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path
