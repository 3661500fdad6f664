"""CardFacts, the one record a card is rendered from: both producers (a talklora_hub.train result, a shipped zoo
record) fill the same facts for the same training, and a missing fact is named."""

from __future__ import annotations

import pytest

from talklora_hub.jobs.zoo_build import card_result
from talklora_hub.publish.card_facts import CardFacts, as_card_facts
from talklora_hub.publish.cards import evaluation_rows, hub_base_id
from talklora_hub.publish.train_facts import facts_from_train_result

from .test_cards import train_result


def same_training(tmp_path):
    """One training, as train_result.json and as the zoo's record.json hold it: MiniLM on spam, 150 steps."""
    result = train_result(tmp_path, base="all-minilm-l6-v2", tasks=["spam"], base_repo_id="user/all-MiniLM-L6-v2")
    result["metrics"] = {"spam": {"accuracy": 0.75, "n": 40}}
    details = result["data"]["task_details"].pop("tickets")
    result["data"].update(tasks=["spam"], task_details={"spam": details}, train={"spam": 320}, eval={"spam": 40})
    result.update(datasets=["user/task-spam"], comparison={"spam": {}})
    record = {"name": "minilm-spam", "kind": "model", "head": "classification", "tasks": ["spam"], "steps": 150,
              "seed": 0, "base": {"name": "all-minilm-l6-v2"}, "split": "test",
              "recipe": {"batch_size": 16, "max_length": 128, "lr": 1e-3},
              "metrics": {"spam": {"accuracy": 0.75, "low": 0.598, "high": 0.858, "n": 40, "correct": 30}},
              "timing": {"train_seconds": 60.0, "tokens_per_second": 500.0}, "machine": {"cpu": "x", "cores": 2},
              "command": "talklora-hub zoo retrain --only minilm-spam", "train_command": "talklora-hub train ..."}
    return result, record


def test_both_producers_fill_the_same_facts_for_the_same_training(tmp_path):
    result, record = same_training(tmp_path)
    trained = facts_from_train_result(result)
    zoo = card_result(record, {"spam": "user/task-spam"}, base_repo_id="user/all-MiniLM-L6-v2")
    assert isinstance(trained, CardFacts) and isinstance(zoo, CardFacts)
    # The zoo's record keeps no label counts, so only the train result has the task details (the Task section).
    assert set(trained.filled()) == set(zoo.filled()) | {"task_details"}
    assert trained.tasks == zoo.tasks == ("spam",) and trained.datasets == zoo.datasets == ("user/task-spam",)
    assert (trained.head, trained.base_name, trained.base_repo_id) == (zoo.head, zoo.base_name, zoo.base_repo_id)
    assert hub_base_id(None, trained) == hub_base_id(None, zoo) == "user/all-MiniLM-L6-v2"
    figures = ("tasks", "learning rate", "steps", "seed", "train time (s)", "tokens / s")
    assert {k: trained.training[k] for k in figures} == {k: zoo.training[k] for k in figures}
    pick = ("task", "split", "metric", "value", "count")
    assert [[r[k] for k in pick] for r in evaluation_rows(trained)] == [[r[k] for k in pick] for r in evaluation_rows(zoo)]
    assert trained.result is result and zoo.result is record  # what ships beside the model as train_result.json


@pytest.mark.parametrize("missing", ["tasks", "training", "evaluation"])
def test_a_missing_required_fact_is_named(missing):
    facts = {"tasks": ["spam"], "training": {"steps": 3}, "evaluation": [], missing: None}
    with pytest.raises(ValueError, match=rf"`CardFacts\.{missing}` is a required card fact .* got None\. Fix:"):
        CardFacts(**facts)


def test_malformed_facts_and_results_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"`CardFacts\.evaluation\[0\]` must have the keys .*'count'"):
        CardFacts(tasks=["spam"], training={}, evaluation=[{"task": "spam", "metric": "accuracy", "value": 0.9}])
    with pytest.raises(ValueError, match=r"`CardFacts\.tasks` must be a list of task names"):
        CardFacts(tasks="spam", training={}, evaluation=[])
    result = train_result(tmp_path)
    del result["config"]["lr"]
    with pytest.raises(ValueError, match=r"`result\['config'\]\['lr'\]` is needed for the card's Training table"):
        facts_from_train_result(result)
    with pytest.raises(ValueError, match=r"`result\['config'\]` must be the run's TrainConfig"):
        as_card_facts({"training": {"steps": 3}})
    with pytest.raises(TypeError, match="`result` must be a CardFacts or a talklora_hub.train result dict"):
        as_card_facts(["spam"])
