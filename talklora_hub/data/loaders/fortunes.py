"""Debian fortune cookie files: one file per topic, entries separated by lines holding a single "%".

Overstrikes are removed, whitespace tidied, and entries longer than `max_chars` dropped rather than
cut (a cut joke loses its punch line and its attribution, which is often what names the topic).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..text import normalize_text, strip_overstrike, tidy_whitespace
from . import find_data_dir

INNER = "usr/share/games/fortunes"
MAX_CHARS = 1000


def read_fortune_file(path: str | Path) -> list[str]:
    """Entries of one fortune file, cleaned, in file order."""
    raw = Path(path).read_bytes().decode("utf-8", errors="replace")
    entries, current = [], []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))  # the last entry may lack its closing %
    return [e for e in (tidy_whitespace(strip_overstrike(x)) for x in entries) if e]


def load_fortunes(root: str | Path, topics: tuple[str, ...], max_chars: int = MAX_CHARS) -> list[dict]:
    """Records {id, group, text, label=topic} for the named topic files under root."""
    data = find_data_dir(root, INNER)
    records = []
    for topic in topics:
        path = data / topic
        if not path.is_file():
            raise FileNotFoundError(f"fortune topic file {path} is missing; the source in {root} is incomplete (run `talklora-hub data fetch --force fortunes`).")
        for entry in read_fortune_file(path):
            if len(entry) > max_chars:
                continue
            # Content-addressed ids stay the same when the Debian package reorders or adds entries.
            key = hashlib.sha1(normalize_text(entry).encode("utf-8")).hexdigest()[:12]
            records.append({"id": f"{topic}:{key}", "group": f"fortune:{key}", "text": entry, "label": topic})
    return records
