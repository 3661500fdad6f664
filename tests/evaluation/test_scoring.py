"""Scoring's one home (talklora_hub.evaluation.scoring): the accuracy, its interval and the per-example hits come
from one function, and the old import path the benchmarks use still names the same code."""

import pytest

from talklora_hub.evaluation.intervals import wilson_interval
from talklora_hub.evaluation import scoring as home  # not `import test_rows`: pytest would collect it
from talklora_hub.evaluation.scoring import accuracy_and_hits


def test_accuracy_and_hits_agree_example_by_example():
    accuracy, hits = accuracy_and_hits([1, 0, 2, 2], [1, 1, 2, 0])
    assert hits == [True, False, True, False]
    assert (accuracy.value, accuracy.correct, accuracy.n) == (0.5, 2, 4)
    assert (accuracy.low, accuracy.high) == pytest.approx(wilson_interval(2, 4))
    with pytest.raises(ValueError, match="`predictions` must have one entry per reference"):
        accuracy_and_hits([1], [1, 0])
