"""talklora_hub.zoo.reproduce / `talklora-hub zoo compare`: a retrained zoo against the shipped records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talklora_hub.cli import main as cli_main
from talklora_hub.evaluation.intervals import wilson_interval
from talklora_hub.zoo.reproduce import compare_zoos, markdown
from talklora_hub.zoo.shipped import EXPERT_META, RECORD, WEIGHTS


def write_entry(zoo: Path, name: str, hits: str, weights: bytes = b"w", cpu: str = "CPU A") -> None:
    folder = zoo / name
    folder.mkdir(parents=True)
    (folder / WEIGHTS).write_bytes(weights)
    (folder / EXPERT_META).write_text("{}")
    correct, n = hits.count("1"), len(hits)
    low, high = wilson_interval(correct, n)
    metric = {"accuracy": correct / n, "correct": correct, "n": n, "low": low, "high": high, "hits": hits}
    record = {"metrics": {"spam": metric}, "machine": {"cpu": cpu, "cores": 2, "gpu": None},
              "timing": {"train_seconds": 1.0}}
    (folder / RECORD).write_text(json.dumps(record))


SHIPPED_HITS = "1" * 80 + "0" * 20  # 0.80 on 100, interval about [0.71, 0.87]


def test_an_identical_retrain_reproduces_with_the_same_predictions_and_weights(tmp_path):
    write_entry(tmp_path / "zoo", "e", SHIPPED_HITS)
    write_entry(tmp_path / "new", "e", SHIPPED_HITS)
    (row,) = compare_zoos(tmp_path / "new", tmp_path / "zoo")
    assert row["within"] and row["same_hits"] and row["same_weights"]
    assert row["paired"]["difference"] == 0.0 and row["paired"]["low"] == row["paired"]["high"] == 0.0


def test_same_accuracy_from_other_predictions_is_inside_the_interval_but_not_the_same_hits(tmp_path):
    write_entry(tmp_path / "zoo", "e", SHIPPED_HITS)
    write_entry(tmp_path / "new", "e", "0" * 10 + "1" * 80 + "0" * 10, weights=b"other", cpu="CPU B")
    (row,) = compare_zoos(tmp_path / "new", tmp_path / "zoo")
    assert row["retrained"] == pytest.approx(0.80) and row["within"]
    assert not row["same_hits"] and not row["same_weights"]
    assert row["paired"]["difference"] == 0.0 and row["paired"]["low"] < 0 < row["paired"]["high"]
    assert "CPU A" in markdown([row]) and "CPU B" in markdown([row])


def test_a_retrain_outside_the_shipped_interval_fails_the_command(tmp_path, capsys):
    write_entry(tmp_path / "zoo", "e", SHIPPED_HITS)
    write_entry(tmp_path / "new", "e", "1" * 55 + "0" * 45)
    (row,) = compare_zoos(tmp_path / "new", tmp_path / "zoo")
    assert not row["within"] and row["paired"]["high"] < 0
    assert cli_main(["zoo", "compare", "--retrained", str(tmp_path / "new"), "--zoo-dir", str(tmp_path / "zoo")]) == 1
    assert "not reproduced (outside the shipped interval): e on spam" in capsys.readouterr().out


def test_only_entries_in_both_are_compared_and_a_folder_with_none_is_refused(tmp_path, capsys):
    write_entry(tmp_path / "zoo", "e", SHIPPED_HITS)
    write_entry(tmp_path / "zoo", "f", SHIPPED_HITS)
    write_entry(tmp_path / "new", "f", SHIPPED_HITS)
    assert [r["entry"] for r in compare_zoos(tmp_path / "new", tmp_path / "zoo")] == ["f"]
    assert cli_main(["zoo", "compare", "--retrained", str(tmp_path / "new"), "--zoo-dir", str(tmp_path / "zoo")]) == 0
    assert "reproduced: all 1 figures" in capsys.readouterr().out
    with pytest.raises(ValueError, match="`retrained` must hold entries that are shipped"):
        compare_zoos(tmp_path / "empty", tmp_path / "zoo")
