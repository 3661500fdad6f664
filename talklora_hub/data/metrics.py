"""Task metrics: accuracy for classification, exact match of the final number (GSM8K) or of the text."""

from __future__ import annotations

import math

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


# ---- uncertainty and the majority baseline (read by the model cards) -----------------------------
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval (low, high) of the proportion correct / n (its one home: evaluation.intervals
    and the cards both read it)."""
    if n <= 0:
        raise ValueError(f"`n` must be a positive number of scored examples, got {n!r}. Fix: score at least one example.")
    if not 0 <= correct <= n:
        raise ValueError(f"`correct` must be in [0, n={n}], got {correct!r}. Fix: count the hits among the n examples.")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def majority_baseline(train_counts: Sequence[int], eval_counts: Sequence[int]) -> dict | None:
    """Always answering the training split's most frequent label (ties: the first label): {"label" (index),
    "accuracy", "correct", "n", "low", "high"} on the evaluated examples; None when none was evaluated."""
    n = sum(eval_counts)
    if n <= 0 or not train_counts or len(train_counts) != len(eval_counts):
        return None
    label = max(range(len(train_counts)), key=lambda i: (train_counts[i], -i))
    correct = int(eval_counts[label])
    low, high = wilson_interval(correct, n)
    return {"label": label, "accuracy": correct / n, "correct": correct, "n": n, "low": low, "high": high}
