"""Wilson intervals and paired bootstrap differences: checked against closed-form values and behaviour."""

import math

import pytest

from talklora_hub.evaluation.intervals import accuracy_with_interval, paired_difference, wilson_interval


def test_wilson_interval_matches_the_closed_form_value():
    # 80 of 100: the textbook Wilson 95% interval is [0.7111, 0.8666].
    low, high = wilson_interval(80, 100)
    assert math.isclose(low, 0.7111, abs_tol=5e-4) and math.isclose(high, 0.8666, abs_tol=5e-4)


def test_wilson_interval_stays_inside_zero_one_and_narrows_with_n():
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(20, 20)[0] < 1.0  # a perfect score on 20 examples is not certainty
    wide, narrow = wilson_interval(30, 60), wilson_interval(300, 600)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2


@pytest.mark.parametrize("correct,n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(correct, n):
    with pytest.raises(ValueError, match="Fix:"):
        wilson_interval(correct, n)


def test_accuracy_with_interval_counts_hits():
    acc = accuracy_with_interval([1, 0, 1, 1], [1, 1, 1, 0])
    assert (acc.correct, acc.n, acc.value) == (2, 4, 0.5)
    assert acc.low < 0.5 < acc.high
    with pytest.raises(ValueError, match="one entry per reference"):
        accuracy_with_interval([1], [1, 0])


def test_paired_difference_sees_a_real_gap_and_no_gap():
    a = [True] * 90 + [False] * 10
    b = [True] * 60 + [False] * 40
    gap = paired_difference(a, b)
    assert math.isclose(gap["difference"], 0.3)
    assert 0 < gap["low"] < 0.3 < gap["high"] and gap["p_value"] < 0.01
    same = paired_difference(a, list(a))
    assert same["difference"] == 0 and same["p_value"] == 1.0
    # Disagreements that cancel out: no significant difference.
    noisy_a = [True, False] * 50
    noisy_b = [False, True] * 50
    assert paired_difference(noisy_a, noisy_b)["p_value"] > 0.5
