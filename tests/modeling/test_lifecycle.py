"""The adapter's life as a user walks it: build, save, reload frozen (or trainable), train more, save again
beside a tokenizer, survive a killed save, and refuse a corrupt or incomplete folder with an error that names it."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM, TalkLoRAForSequenceClassification
from talklora_hub.modeling import saving
from talklora_hub.modeling.loading import AdapterLoadError
from talklora_hub.modeling.methods import method_names

from .conftest import tiny_base

METHODS = method_names()  # every registered method (methods.py)


def _wrapped(method: str, cls=TalkLoRAForCausalLM, head: str = "causal"):
    return cls.from_base(tiny_base("llama", head=head), AdapterSettings(method=method, r=8))


@pytest.mark.parametrize("method", METHODS)
def test_reload_leaves_the_base_frozen_and_the_model_in_eval_mode(tmp_path, method):
    model = _wrapped(method)
    built = model.parameter_counts()
    assert 0 < built["trainable"] == built["adapter"] < built["total"]
    model.save_pretrained(tmp_path / "m")

    loaded = TalkLoRAForCausalLM.from_pretrained(tmp_path / "m")
    assert not loaded.training
    assert loaded.parameter_counts() == {**built, "trainable": 0}  # inference: nothing requires grad

    trainable = TalkLoRAForCausalLM.from_pretrained(tmp_path / "m", is_trainable=True)
    assert trainable.parameter_counts() == built
    names = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}

    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert auto.parameter_counts()["trainable"] == 0 and not auto.training


def test_a_reloaded_model_trains_only_its_adapter(tmp_path, input_ids):
    model = _wrapped("talklora")
    model.save_pretrained(tmp_path / "m")
    loaded = TalkLoRAForCausalLM.from_pretrained(tmp_path / "m", is_trainable=True).train()
    before = {n: p.detach().clone() for n, p in loaded.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in loaded.parameters() if p.requires_grad], lr=1e-2)
    loaded(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()
    adapter = set(loaded.adapter_tensor_names())
    changed = {n for n, p in loaded.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= adapter


def test_the_adapter_is_defined_by_names_not_requires_grad(tmp_path):
    model = _wrapped("talklora")
    expected = model.adapter_state_dict()
    model.set_adapter_trainable(False)
    assert set(model.adapter_state_dict()) == set(expected)
    for p in model.parameters():
        p.requires_grad_(True)  # what transformers' loader used to leave behind
    assert set(model.adapter_state_dict()) == set(expected)
    assert not any(n.startswith("base.model.embed_tokens") for n in expected)


def test_a_classifier_head_is_part_of_the_adapter():
    model = _wrapped("lora", TalkLoRAForSequenceClassification, "seqcls")
    names = model.adapter_tensor_names()
    assert any(n.startswith("base.score.") for n in names)


def _save_tokenizer_like_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "special_tokens_map.json").write_text("{}")
    (folder / "notes").mkdir()
    (folder / "notes" / "README.txt").write_text("mine")


def test_save_keeps_files_it_does_not_own_and_drops_stale_weights(tmp_path):
    folder = tmp_path / "m"
    _save_tokenizer_like_files(folder)
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    _wrapped("lora").save_pretrained(folder)
    assert (folder / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert (folder / "special_tokens_map.json").exists() and (folder / "notes" / "README.txt").read_text() == "mine"
    assert not (folder / "model-00001-of-00002.safetensors").exists()
    assert (folder / "model.safetensors").exists()
    TalkLoRAForCausalLM.from_pretrained(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or retired leftovers


def test_the_folder_is_swapped_in_one_step(tmp_path, monkeypatch):
    """While the new version takes the old one's place, the path is never empty: no rename of the old folder
    away happens where the atomic exchange exists."""
    folder = tmp_path / "m"
    _wrapped("lora").save_pretrained(folder)
    moved_away = []
    real_replace = os.replace

    def watching(src, dst):
        if os.fspath(src) == os.fspath(folder):
            moved_away.append(src)
        return real_replace(src, dst)

    monkeypatch.setattr(saving.os, "replace", watching)
    _wrapped("talklora").save_pretrained(folder)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if saving._exchange(tmp_path / "a", tmp_path / "b"):  # the system has the atomic exchange
        assert moved_away == []
    assert TalkLoRAForCausalLM.from_pretrained(folder).adapter_settings.method == "talklora"


def test_a_save_killed_between_its_two_renames_is_recovered(tmp_path, monkeypatch, input_ids):
    folder = tmp_path / "m"
    old = _wrapped("lora")
    old.save_pretrained(folder)
    expected = old.eval()(input_ids=input_ids).logits
    monkeypatch.setattr(saving, "_exchange", lambda a, b: False)  # a system without renameat2
    real_replace = os.replace
    calls = []

    def killed_after_first(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(saving.os, "replace", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        _wrapped("talklora").save_pretrained(folder)
    monkeypatch.setattr(saving.os, "replace", real_replace)
    assert not folder.exists() and saving.retired_versions(folder)  # the state a kill -9 leaves
    loaded = TalkLoRAForCausalLM.from_pretrained(folder)  # puts the old version back first
    assert torch.equal(loaded(input_ids=input_ids).logits, expected)
    assert not saving.retired_versions(folder)


def test_a_missing_adapter_tensor_is_an_error_naming_it(tmp_path):
    _wrapped("talklora").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = next(n for n in tensors if n.endswith("expert_maps"))
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(AdapterLoadError, match="missing adapter tensors") as error:
        TalkLoRAForCausalLM.from_pretrained(tmp_path / "m")
    assert dropped in str(error.value)


@pytest.mark.parametrize("cut", [4, 100, -200])
def test_a_truncated_weights_file_is_named(tmp_path, cut):
    _wrapped("lora").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut])
    with pytest.raises(Exception, match="model.safetensors"):
        TalkLoRAForCausalLM.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("value", ["x", 3, ["method"]])
def test_an_adapter_section_that_is_not_an_object_is_named(tmp_path, value):
    _wrapped("lora").save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["adapter"] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="`adapter` in config.json must be a JSON object"):
        TalkLoRAForCausalLM.from_pretrained(tmp_path / "m")


def test_an_expert_export_does_not_keep_a_previous_model(tmp_path):
    """staged_directory without keep_existing replaces the folder whole (exports own their folder)."""
    folder = tmp_path / "x"
    _save_tokenizer_like_files(folder)
    with saving.staged_directory(folder) as staging:
        (staging / "a.txt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    shutil.rmtree(folder)
