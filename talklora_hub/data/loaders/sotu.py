"""State of the Union addresses: one JSON file per speech, {"year", "name", "party", "text"}.

The speeches come without paragraph breaks, so a "paragraph" here is a run of consecutive sentences
of at least `min_words` words (about a printed paragraph). Every paragraph's group is the speech
year, so all paragraphs of a year's speeches share a split and no speech straddles train and test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import find_data_dir

MIN_WORDS = 80
# Titles and initials whose period does not end a sentence.
_ABBREVIATIONS = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Gen|Jr|Sr|No|Gov|Sen|Rep|Hon|Lt|Col|Capt|vs|etc|U\.S|D\.C)|\b[A-Z])\.$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a speech, split after . ! ? followed by a capital, not after titles or initials."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start:match.start()]
        if _ABBREVIATIONS.search(candidate.rstrip("\"')]")):
            continue
        pieces.append(text[start:match.end()].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def paragraphs(text: str, min_words: int = MIN_WORDS) -> list[str]:
    """Group sentences into chunks of at least min_words words; a short tail joins the chunk before it."""
    chunks, current, words = [], [], 0
    for sentence in split_sentences(" ".join(text.split())):
        current.append(sentence)
        words += len(sentence.split())
        if words >= min_words:
            chunks.append(" ".join(current))
            current, words = [], 0
    if current:
        if chunks and words < min_words // 2:
            chunks[-1] += " " + " ".join(current)
        else:
            chunks.append(" ".join(current))
    return chunks


def read_speeches(root: str | Path) -> list[dict]:
    """Every speech as {"key", "year", "name", "party", "text"}, sorted by file name."""
    data = find_data_dir(root, "data")
    speeches = []
    for path in sorted(data.glob("*.json")):
        with open(path, encoding="utf-8") as handle:
            item = json.load(handle)
        speeches.append({"key": path.stem, "year": int(item["year"]), "name": item["name"], "party": item["party"], "text": item["text"]})
    if not speeches:
        raise FileNotFoundError(f"no State of the Union *.json files in {data}; run `talklora-hub data fetch sotu`.")
    return speeches


def load_sotu_paragraphs(root: str | Path, label_of, min_words: int = MIN_WORDS) -> list[dict]:
    """Records {id, group, text, label} for the paragraphs of every speech that label_of(speech) labels.

    label_of returns a label name, or None to leave the speech out.
    """
    records = []
    for speech in read_speeches(root):
        label = label_of(speech)
        if label is None:
            continue
        for index, chunk in enumerate(paragraphs(speech["text"], min_words)):
            records.append({
                "id": f"{speech['key']}:{index:03d}",
                "group": f"sotu:{speech['year']}",
                "text": chunk,
                "label": label,
            })
    return records


def party_label(min_year: int):
    """label_of for Democratic vs Republican speeches from min_year on."""
    def label_of(speech: dict) -> str | None:
        if speech["year"] >= min_year and speech["party"] in ("Democratic", "Republican"):
            return speech["party"]
        return None
    return label_of


def era_label(eras: tuple[tuple[str, int, int], ...]):
    """label_of mapping a speech year to the era (name, first_year, last_year) containing it."""
    def label_of(speech: dict) -> str | None:
        for name, first, last in eras:
            if first <= speech["year"] <= last:
                return name
        return None
    return label_of
