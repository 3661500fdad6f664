"""Confidence intervals for accuracies measured on a finite test split.

An accuracy on n examples is a binomial proportion: the Wilson score interval is its standard 95%
interval (it stays inside [0, 1] and behaves at 0 and 1, unlike the normal approximation). Two
classifiers scored on the same examples are compared by a paired bootstrap of the per-example
differences, which accounts for their correlation (both right or both wrong on easy examples).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Dict, Sequence, Tuple

from ..data.metrics import Z95, wilson_interval  # noqa: F401  (one home for the interval)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its 95% Wilson interval: value = correct / n, low <= value <= high."""

    value: float
    low: float
    high: float
    correct: int
    n: int

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def accuracy_with_interval(predictions: Sequence[int], references: Sequence[int]) -> Accuracy:
    """Accuracy of predictions against references, with its 95% Wilson interval."""
    if len(predictions) != len(references):
        raise ValueError(f"`predictions` must have one entry per reference, got {len(predictions)} for "
                         f"{len(references)}. Fix: predict exactly the scored examples.")
    correct = sum(int(p) == int(r) for p, r in zip(predictions, references))
    low, high = wilson_interval(correct, len(references))
    return Accuracy(correct / len(references), low, high, correct, len(references))


def paired_difference(hits_a: Sequence[bool], hits_b: Sequence[bool], resamples: int = 2000,
                      seed: int = 0) -> Dict[str, float]:
    """Accuracy of A minus accuracy of B on the same examples, with a 95% paired-bootstrap interval
    and the two-sided bootstrap p-value of "no difference" (the share of resamples on the other side of 0,
    doubled). hits_*: one bool per example, True where that classifier was right."""
    if len(hits_a) != len(hits_b) or not hits_a:
        raise ValueError(f"`hits_a` and `hits_b` must score the same non-empty examples, got {len(hits_a)} and "
                         f"{len(hits_b)}. Fix: score both classifiers on one split.")
    diffs = [int(a) - int(b) for a, b in zip(hits_a, hits_b)]
    n = len(diffs)
    observed = sum(diffs) / n
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]
    beyond = sum(m <= 0 for m in means) if observed > 0 else sum(m >= 0 for m in means)
    p_value = min(1.0, 2 * beyond / resamples) if observed != 0 else 1.0
    return {"difference": observed, "low": low, "high": high, "p_value": p_value, "n": n}
