"""What a model card says about a model trained on your own data: base_model a Hub id or absent (never a local
path), n beside the metric (not a metric), 95% Wilson intervals, the majority-class baseline, the Training table,
the prompt template and labels. Built from result dicts (read into CardFacts), so no training or Hub is needed."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from talklora_hub.data.metrics import wilson_interval
from talklora_hub.publish.card_facts import CardFacts
from talklora_hub.publish.cards import (base_label, card_data, evaluation_rows, hub_base_id, render_card, task_rows,
                                        training_rows)
from talklora_hub.publish.train_facts import facts_from_train_result


def train_result(tmp_path, **config):
    """A talklora_hub.train result dict as train_result.json holds it (only the keys the cards read)."""
    base = tmp_path / "models" / "my-minilm"
    base.mkdir(parents=True, exist_ok=True)
    return {
        "metrics": {"tickets": {"accuracy": 0.75, "n": 40, "routing": {"overall": {}}}},
        "config": {"base": str(base), "tasks": ["tickets"], "lr": 1e-3, "batch_size": 16, "grad_accum": 1,
                   "max_length": 128, "lr_scheduler": "linear", "warmup_ratio": 0.03, "weight_decay": 0.0, "seed": 0,
                   "train_file": str(tmp_path / "data" / "tickets.csv"), "text_column": "sentence",
                   "label_column": "topic", "output": str(tmp_path / "run"), **config},
        "data": {"tasks": ["tickets"], "train": {"tickets": 320}, "eval": {"tickets": 40}, "eval_split": "test",
                 "task_details": {"tickets": {
                     "kind": "classification", "metric": "accuracy", "template": "Classify the text as {choices}.\n\n{text}\n\nAnswer:",
                     "label_names": ["billing", "bug", "other"], "verbalizers": ["billing", "bug", "other"],
                     "train_label_counts": [180, 100, 40], "eval_label_counts": [22, 12, 6]}}},
        "timing": {"train_seconds": 60.0, "tokens_per_second": 500.0, "num_processes": 1, "mixed_precision": "no"},
        "steps": 150, "head": "classification", "base": str(base), "output_dir": str(tmp_path / "run"),
        "result_path": str(tmp_path / "run" / "train_result.json"),
    }


def test_n_is_the_sample_size_beside_the_metric_with_a_wilson_interval_and_the_majority_baseline(tmp_path):
    (row,) = evaluation_rows(facts_from_train_result(train_result(tmp_path)))
    assert (row["metric"], row["value"], row["count"], row["split"]) == ("accuracy", 0.75, 40, "test")
    assert (row["low"], row["high"]) == pytest.approx(wilson_interval(30, 40))
    majority = row["majority"]
    assert majority["label_name"] == "billing" and majority["accuracy"] == pytest.approx(22 / 40)
    assert (majority["low"], majority["high"]) == pytest.approx(wilson_interval(22, 40))


def test_base_model_is_a_hub_id_or_absent(tmp_path):
    result = facts_from_train_result(train_result(tmp_path))
    local = result.result["base"]
    assert hub_base_id(local, result) is None and base_label(local, result) == "a local folder `my-minilm`"
    recorded = facts_from_train_result(train_result(tmp_path, base_repo_id="me/my-minilm"))
    assert hub_base_id(local, recorded) == "me/my-minilm" and base_label(local, recorded) == "`me/my-minilm`"
    assert hub_base_id("sentence-transformers/all-MiniLM-L6-v2", None) == "sentence-transformers/all-MiniLM-L6-v2"
    bootstrapped = facts_from_train_result(train_result(tmp_path, base="all-minilm-l6-v2"))
    assert hub_base_id("/root/.cache/talklora_hub/models/all-minilm-l6-v2", bootstrapped) == \
        "sentence-transformers/all-MiniLM-L6-v2"
    data = card_data("model", "seqcls", "talklora", local, result, "me/tickets")
    assert data.base_model is None and data.base_model_relation is None
    assert card_data("model", "seqcls", "talklora", local, recorded, "me/tickets").base_model == "me/my-minilm"


def test_training_table_has_the_recipe_and_no_local_paths(tmp_path):
    rows = training_rows(facts_from_train_result(train_result(tmp_path)))
    assert rows["learning rate"] == 1e-3 and rows["batch size"] == "16" and rows["sequence length (tokens)"] == 128
    assert rows["steps"] == 150 and rows["training examples"] == 320 and rows["epochs (approx.)"] == 7.5
    assert rows["training data"] == "`tickets.csv` (column `sentence` -> `topic`)"
    assert not any(str(tmp_path) in str(v) for v in rows.values())
    zoo = training_rows(zoo_facts(training={"steps": 3, "learning rate": 3e-4, "where": "/home/me/run"}))
    assert zoo == {"steps": 3, "learning rate": 3e-4}


def test_task_rows_show_the_template_and_the_labels(tmp_path):
    (task,) = task_rows(facts_from_train_result(train_result(tmp_path)))
    assert task["template"].startswith("Classify the text as {choices}.") and "text alone" in task["reads"]
    assert [(l["name"], l["train"], l["eval"]) for l in task["labels"]] == [("billing", 180, 22), ("bug", 100, 12),
                                                                            ("other", 40, 6)]


def test_rendered_card_parses_and_never_shows_this_machine(tmp_path):
    result = facts_from_train_result(train_result(tmp_path))
    text = render_card(
        "model", title="tickets", summary=f"A TalkLoRA model on top of {base_label(result.result['base'], result)}.",
        repo_id="me/tickets", revision="main", method="talklora", output_router_logits=True,
        adapter_rows=[("method", "talklora")], trainable=10, total=100, training=training_rows(result),
        evaluation=evaluation_rows(result), tasks=task_rows(result),
        card_data=card_data("model", "seqcls", "talklora", result.result["base"], result, "me/tickets"))
    card = ModelCard(text)
    assert card.data.base_model is None and [r.metric_type for r in card.data.eval_results] == ["accuracy"]
    assert str(tmp_path) not in text and "a local folder `my-minilm`" in text
    assert "| tickets | test | accuracy | 0.7500 | [0.598, 0.858] | 40 | 0.5500 [0.398, 0.693] (always `billing`) |" in text
    assert "| billing | billing | 180 | 22 |" in text and "{text}" in text
    assert "AutoModelForSequenceClassification" in text


def test_zoo_rows_keep_their_intervals_and_show_no_majority_column():
    result = zoo_facts(evaluation=[{"task": "spam", "split": "test", "metric": "accuracy", "value": 0.9, "low": 0.8,
                                    "high": 0.95, "count": 100, "dataset": "user/spam"}])
    (row,) = evaluation_rows(result)
    assert (row["low"], row["high"], row["majority"]) == (0.8, 0.95, None)


def zoo_facts(**facts):
    """CardFacts as the zoo fills them (no task details), with the required facts defaulted."""
    return CardFacts(**{"tasks": ["spam"], "training": {}, "evaluation": [], **facts})
