"""Task metrics: accuracy for classification, exact match of the final number (GSM8K) or of the text."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .text import normalize_text

# A number as people write it in answers: optional sign, thousands commas, decimals.
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_GSM8K_MARK = "####"


def normalize_number(text: str) -> str | None:
    """Canonical form of a number string ("1,000.50" -> "1000.5", "$18" -> "18"), None if not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value)


def extract_final_number(text: str) -> str | None:
    """The answer a GSM8K-style completion commits to, normalized.

    The number after the last "####" when the model wrote one (the training targets end that way),
    else the last number in the text; None when there is no number at all.
    """
    if _GSM8K_MARK in text:
        tail = text.rsplit(_GSM8K_MARK, 1)[1]
        found = _NUMBER.findall(tail)
        if found:
            return normalize_number(found[0])
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of predictions equal to their reference; a prediction of -1 (unparsable) is wrong."""
    _check_lengths(predictions, references)
    if not references:
        return 0.0
    return sum(int(p) == int(r) for p, r in zip(predictions, references)) / len(references)


def final_number_exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of completions whose final number equals the reference answer's number."""
    _check_lengths(predictions, references)
    if not references:
        return 0.0
    hits = 0
    for prediction, reference in zip(predictions, references):
        expected = normalize_number(reference)
        if expected is None:
            expected = extract_final_number(reference)
        hits += expected is not None and extract_final_number(prediction) == expected
    return hits / len(references)


def text_exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after normalize_text (case, spacing, punctuation)."""
    _check_lengths(predictions, references)
    if not references:
        return 0.0
    return sum(normalize_text(p) == normalize_text(r) for p, r in zip(predictions, references)) / len(references)


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions: must have one entry per reference; got {len(predictions)} predictions for "
            f"{len(references)} references. Pass predictions for exactly the examples scored."
        )
