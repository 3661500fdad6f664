"""Small text helpers shared by the loaders: normalization for deduplication, cleanup, truncation."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_OVERSTRIKE = re.compile(r".\x08")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")


def normalize_text(text: str) -> str:
    """Key for deduplication: NFKC, case-folded, every run of punctuation or space made one space.

    Two texts that differ only in case, spacing or punctuation are the same example for a model
    trained on them, so they must not land in both train and test.
    """
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def strip_overstrike(text: str) -> str:
    """Remove typewriter overstrikes ("_\\bA" for an underlined A) found in old fortune files."""
    return _OVERSTRIKE.sub("", text)


def tidy_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs, strip line ends and keep at most one blank line in a row."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def truncate_chars(text: str, max_chars: int) -> str:
    """Cut text to at most max_chars at a word boundary, marking the cut with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(None, 1)[0] if " " in text[:max_chars] else text[:max_chars]
    return cut.rstrip() + " ..."
