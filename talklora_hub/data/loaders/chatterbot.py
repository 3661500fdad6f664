"""ChatterBot corpus: YAML files per topic, {"categories": [...], "conversations": [[turn, turn, ...], ...]}.

Each conversation becomes one example "User: ...\\nBot: ..." labelled with its file's topic. Many
conversations share the same opening question with different replies, so the group is the
normalized opening turn: all replies to one question share a split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..text import normalize_text
from . import find_data_dir

INNER = "chatterbot_corpus/data/english"


def load_chatterbot(root: str | Path, topics: tuple[str, ...]) -> list[dict]:
    """Records {id, group, text, label=topic} for the conversations of the named topic files."""
    import yaml

    data = find_data_dir(root, INNER)
    records = []
    for topic in topics:
        path = data / f"{topic}.yml"
        if not path.is_file():
            raise FileNotFoundError(f"chatterbot topic file {path} is missing; run `talklora-hub data fetch chatterbot-corpus`.")
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle) or {}
        for index, turns in enumerate(content.get("conversations") or []):
            turns = [str(t).strip() for t in (turns or []) if str(t).strip()]
            if len(turns) < 2:
                continue
            speakers = ("User", "Bot")
            text = "\n".join(f"{speakers[i % 2]}: {t}" for i, t in enumerate(turns))
            opening = hashlib.sha1(normalize_text(turns[0]).encode("utf-8")).hexdigest()[:12]
            records.append({"id": f"{topic}:{index:04d}", "group": f"chatter:{opening}", "text": text, "label": topic})
    return records
