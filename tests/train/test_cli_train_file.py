"""`talklora-hub train --train-file data.csv ...` as a user runs it: the run folder, its metrics, the classifier's
label names and the model card; and the data errors, reported before any model is loaded."""

from __future__ import annotations

import csv
import json
import random

import pytest

from talklora_hub.cli import main
from talklora_hub.train import TrainConfig

from .helpers import COOL, FILLER, SEA, WARM

POOLS = {"warm": WARM, "cool": COOL, "sea": SEA}


def write_topics(path, n=66, seed=0):
    """A CSV `sentence,topic` of n distinct rows over three topics, in words the tiny tokenizer knows."""
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n:
        topic = list(POOLS)[len(rows) % 3]
        words = [rng.choice(POOLS[topic]) for _ in range(3)] + [rng.choice(FILLER), str(rng.randrange(20))]
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append((text, topic))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("sentence", "topic"), *rows])
    return str(path)


@pytest.fixture
def captured_cards(monkeypatch):
    """--push without a Hub: the publisher's last step (the upload) keeps the README it would push."""
    from talklora_hub.publish import publisher

    cards = {}

    def keep(folder, repo_id, *args, **kwargs):
        cards[repo_id] = (folder / "README.md").read_text()
        return f"pushed {repo_id}"

    monkeypatch.setattr(publisher, "_finish", keep)
    return cards


def test_train_file_end_to_end_on_an_encoder(tiny_bert, tmp_path, capsys, captured_cards):
    data = write_topics(tmp_path / "topics.csv")
    code = main(["train", "--base", tiny_bert, "--train-file", data, "--text-column", "sentence", "--label-column", "topic",
                 "--method", "lora", "--r", "4", "--max-steps", "2", "--batch-size", "4", "--max-length", "16",
                 "--lr", "1e-3", "--output", str(tmp_path / "run"), "--no-progress", "--push", "me/topics"])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["headline"]) == {"topics"} and printed["pushed"] == "pushed me/topics"

    saved = json.loads((tmp_path / "run" / "train_result.json").read_text())
    metrics = saved["metrics"]["topics"]
    assert 0 <= metrics["accuracy"] <= 1 and metrics["n"] == saved["data"]["eval"]["topics"] > 0
    assert saved["config"]["train_file"] == data and saved["config"]["tasks"] == ["topics"] and saved["steps"] == 2
    details = saved["data"]["task_details"]["topics"]
    assert details["label_names"] == ["cool", "sea", "warm"] and sum(details["eval_label_counts"]) == metrics["n"]

    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "cool", "1": "sea", "2": "warm"}
    assert config["label2id"] == {"cool": 0, "sea": 1, "warm": 2}

    card = captured_cards["me/topics"]
    meta, text = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "base_model" not in meta and "pipeline_tag: text-classification" in meta
    assert str(tmp_path) not in card and "a local folder `tiny-bert" in text
    assert "| learning rate | 0.001 |" in text and "| batch size | 4 |" in text and "| sequence length (tokens) | 16 |" in text
    assert "| steps | 2 |" in text and "`topics.csv` (column `sentence` -> `topic`)" in text
    assert "Classify the text as {choices}." in text and "| warm | warm |" in text
    row = next(line for line in text.splitlines() if line.startswith("| topics | test | accuracy |"))
    assert row.split("|")[6].strip() == str(metrics["n"]) and "(always `" in row and row.count("[") == 2
    assert "| n |" not in text and "type: n" not in meta
    assert "AutoModelForSequenceClassification.from_pretrained" in text


def test_data_errors_come_before_any_model_is_loaded(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    missing_base = str(tmp_path / "no-model-here")  # loading it would fail with another error
    assert main(["train", "--base", missing_base, "--train-file", str(tmp_path / "empty.csv")]) == 2
    assert "talklora-hub train: `--train-file` must not be empty" in capsys.readouterr().err
    data = write_topics(tmp_path / "t.csv")
    assert main(["train", "--base", missing_base, "--train-file", data, "--text-column", "text"]) == 2
    err = capsys.readouterr().err
    assert "`--text-column` must name a column of t.csv" in err and "['sentence', 'topic']" in err


def test_task_option_is_optional_with_own_data_and_required_without(tmp_path):
    with pytest.raises(SystemExit, match="--task is required \\(or your own data"):
        main(["train", "--base", "b"])
    data = write_topics(tmp_path / "t.csv")
    cfg = TrainConfig(base="b", tasks="spam", train_file=data, text_column="sentence", label_column="topic",
                      own_task_name="mine")
    assert cfg.task_names == ["spam", "mine"] and cfg.to_dict()["tasks"] == ["spam", "mine"]
    assert cfg.own_data.task_name == "mine"


def test_own_data_fields_leave_older_fingerprints_alone(tmp_path):
    import dataclasses
    import hashlib

    from talklora_hub.train.config import _NOT_FINGERPRINTED, OWN_DATA_FIELDS

    cfg = TrainConfig(base="b", tasks="spam", method="lora")
    old = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_FINGERPRINTED and k not in OWN_DATA_FIELDS}
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    data = write_topics(tmp_path / "t.csv")
    own = TrainConfig(base="b", train_file=data, text_column="sentence", label_column="topic")
    assert own.fingerprint() != dataclasses.replace(own, own_task_name="other").fingerprint()
    assert dataclasses.replace(own, lr=1e-3).task_names == ["t"]  # re-reading replaces the task, never duplicates it


def test_own_data_run_on_a_causal_lm_resumes_from_its_checkpoint(tiny_llama, tmp_path, capsys):
    data = write_topics(tmp_path / "topics.csv")
    argv = ["train", "--base", tiny_llama, "--train-file", data, "--text-column", "sentence", "--label-column", "topic",
            "--method", "talklora", "--r", "4", "--num-experts", "2", "--max-steps", "2", "--batch-size", "4",
            "--max-length", "32", "--max-eval-examples", "6", "--output", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--stop-after", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["stopped_early"] is True
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert saved["steps"] == 2 and saved["head"] == "causal" and 0 < saved["metrics"]["topics"]["n"] <= 6
