"""Metrics and answer parsing."""

from __future__ import annotations

import pytest

from talklora_hub.data.metrics import accuracy, extract_final_number, final_number_exact_match, normalize_number, text_exact_match
from talklora_hub.data.tasks import get_task


@pytest.mark.parametrize("text, number", [
    ("He has 2 + 1 = 3 apples.\n#### 3", "3"),
    ("#### 1,234", "1234"),
    ("so the answer is $18.00.", "18"),
    ("It costs 2.50 dollars", "2.5"),
    ("first 5 then -7", "-7"),
    ("#### 42 apples, not 7", "42"),
    ("no number here", None),
])
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_normalize_number():
    assert normalize_number("1,000") == "1000" and normalize_number("$5.") == "5" and normalize_number("abc") is None


def test_final_number_exact_match():
    assert final_number_exact_match(["... #### 18", "it is 17", "nothing"], ["18", "18", "3"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="predictions"):
        final_number_exact_match(["1"], ["1", "2"])


def test_accuracy_and_text_match():
    assert accuracy([1, 0, -1], [1, 1, 0]) == pytest.approx(1 / 3)
    assert accuracy([], []) == 0.0
    assert text_exact_match(["Paris!", "rome"], ["paris", "Madrid"]) == 0.5


def test_classification_parsing_and_metric():
    spec = get_task("spam")  # verbalizers no / yes
    assert spec.parse_prediction(" yes, clearly") == 1
    assert spec.parse_prediction("No.") == 0
    assert spec.parse_prediction("I think the answer is yes") == 1
    assert spec.parse_prediction("maybe") == -1
    assert spec.compute_metrics([" yes", "no", 1, "banana"], [1, "ham", 1, 0]) == {"accuracy": 0.75, "n": 4}


def test_generation_metric():
    spec = get_task("gsm8k")
    assert spec.compute_metrics(["step\n#### 5", "#### 6"], ["5", "7"]) == {"exact_match_final_number": 0.5, "n": 2}
