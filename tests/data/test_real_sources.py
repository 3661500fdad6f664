"""Sizes and invariants on the real fetched sources; skipped when the cache has not been filled."""

from __future__ import annotations

import pytest

from talklora_hub.data.sources import is_fetched
from talklora_hub.data.splits import SPLITS
from talklora_hub.data.tasks import get_task, load_task
from talklora_hub.data.text import normalize_text

# (task, lower bound, upper bound) on the total number of examples after cleaning and dedup.
EXPECTED = [("spam", 5700, 6046), ("fortune_topic", 1300, 1800), ("sotu_party", 3000, 3600),
            ("sotu_era", 4000, 4700), ("gsm8k", 1319, 1319), ("chatter_topic", 550, 700)]


@pytest.mark.parametrize("name, low, high", EXPECTED)
def test_real_task_sizes_and_disjoint_splits(name, low, high):
    spec = get_task(name)
    if not is_fetched(spec.source):
        pytest.skip(f"source {spec.source!r} not fetched (run `talklora-hub data fetch`)")
    dd = load_task(name)
    total = sum(len(dd[s]) for s in SPLITS)
    assert low <= total <= high
    assert all(len(dd[s]) > 0 for s in SPLITS)
    train = {normalize_text(t) for t in dd["train"]["text"]}
    held_out = {normalize_text(t) for s in ("validation", "test") for t in dd[s]["text"]}
    assert not train & held_out
    if spec.kind == "classification":
        assert set(dd["train"]["label"]) == set(range(len(spec.label_names)))
