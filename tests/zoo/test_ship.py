"""Shipping a trained entry: bf16 weights that reload to exactly the scored model, and a record whose
figures are that model's."""

import json

import pytest
import torch
from safetensors.torch import load_file

from talklora_hub.train import TrainConfig, train
from talklora_hub.zoo.recipes import ZooRecipe
from talklora_hub.zoo.retrain import ship
from talklora_hub.evaluation.scoring import score
from talklora_hub.zoo.shipped import RECORD, WEIGHTS, attach_shipped, read_record, shipped_entries

from ..train.helpers import colors_task

QUIET = dict(progress=False, log_every=1000)


def test_a_shipped_entry_reloads_to_the_scored_model(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    task = colors_task(80)
    recipe = ZooRecipe("tiny-talklora", "model", dict(base="tiny", tasks=[task], method="talklora", r=8, max_steps=3,
                                                      batch_size=4, max_length=40, lr=5e-2, seed=0), "a test entry")
    result = train(TrainConfig(**{k: v for k, v in recipe.train.items() if k != "base"}, base=tiny_llama,
                               max_eval_examples=0, **QUIET))
    folder = ship(recipe, result, tmp_path / "zoo", baselines={}, progress=False)

    assert set(shipped_entries(tmp_path / "zoo")) == {"tiny-talklora"}
    tensors = load_file(str(folder / WEIGHTS))
    assert tensors and all(t.dtype == torch.bfloat16 for t in tensors.values())
    record = read_record(folder)
    assert record["steps"] == 3 and record["command"] == "talklora-hub zoo retrain --only tiny-talklora"
    assert record["machine"]["torch"] == torch.__version__
    metrics = record["metrics"][task[0]]
    assert metrics["n"] == len(metrics["hits"]) == len(task[1]["test"])
    assert metrics["low"] <= metrics["accuracy"] <= metrics["high"]

    # The shipped weights, attached to the base, are exactly the model that was scored (the trained
    # model itself was rounded to bf16 before scoring).
    again = attach_shipped(folder, base=AutoModelForCausalLM.from_pretrained(tiny_llama))
    ids = torch.tensor([[1, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, result.model.eval()(ids).logits)
    rescored = score(again, result.tokenizer, [task], "causal", 40, progress=False)[task[0]]
    assert "".join("1" if h else "0" for h in rescored["hits"]) == metrics["hits"]
    assert json.loads((folder / RECORD).read_text())["weights"].startswith("bf16")


@pytest.mark.parametrize("modules_to_save", [None, ["bert.pooler"]])
def test_a_trained_classifier_expert_attaches_to_a_fresh_base(tmp_path, modules_to_save):
    """The fingerprint pins the frozen pretrained backbone, not the classification head nor the base modules
    trained with the adapter (BERT's pooler): a fresh base's are untrained, the expert's travel in its own
    tensors."""
    from transformers import AutoModelForSequenceClassification

    from talklora_hub.publish.artifacts import attach_expert, export_expert
    from talklora_hub.publish.fingerprint import base_fingerprint

    from ..train.helpers import save_tiny_bert

    path = save_tiny_bert(tmp_path / "bert")
    result = train(TrainConfig(base=str(path), tasks=[colors_task(40)], method="talklora", r=4, max_steps=2,
                               batch_size=4, max_length=32, lr=5e-2, max_eval_examples=0,
                               modules_to_save=modules_to_save, **QUIET))
    fresh = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert base_fingerprint(fresh, modules_to_save or ()) == base_fingerprint(result.model)
    if modules_to_save:  # the pooler did train, and a fingerprint that kept it would tell the bases apart
        trained = result.model.inner_model.bert.pooler.dense.weight
        assert not torch.equal(trained, fresh.bert.pooler.dense.weight)
        assert base_fingerprint(fresh) != base_fingerprint(fresh, modules_to_save)
    folder = export_expert(result.model, tmp_path / "expert", "syn_colors", "me/bert", "abc")
    again = attach_expert(folder, base=AutoModelForSequenceClassification.from_pretrained(path, num_labels=2))
    ids = torch.tensor([[4, 7, 8, 9, 5]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, result.model.eval()(ids).logits)
