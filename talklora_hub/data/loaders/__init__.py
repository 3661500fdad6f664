"""One loader per raw source: each reads the source's files exactly as fetched and returns records
(plain dicts with id, text, group and label or answer) for TaskSpec.build."""

from __future__ import annotations

from pathlib import Path


def find_data_dir(root: str | Path, inner: str) -> Path:
    """The folder holding a source's files: root/inner when the fetched layout is there, else root itself
    (so a loader can be pointed at either the source folder or the data folder directly)."""
    root = Path(root)
    candidate = root / inner
    if candidate.is_dir():
        return candidate
    if root.is_dir():
        return root
    raise FileNotFoundError(f"source folder {root} does not exist; run `talklora-hub data fetch` or pass the folder that holds the raw files.")
