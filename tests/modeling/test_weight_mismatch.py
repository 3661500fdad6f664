"""A saved model whose config.json was edited so that it no longer fits its weights fails to load with
an error naming the adapter setting, the tensor, its saved shape, and the fix."""

import json

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM, TalkLoRAModel

from .conftest import tiny_base


def save_and_edit(tmp_path, settings, **edits):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), settings)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["adapter"].update(edits)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("settings, key, saved, edited, tensor", [
    (dict(method="lora", r=8), "r", 8, 16, "base.model.layers.0.self_attn.q_proj.lora_A has shape (8, 32)"),
    (dict(method="talklora", r=8), "num_experts", 4, 2,
     "base.model.layers.0.self_attn.q_proj.expert_maps has shape (4, 2, 2)"),
    (dict(method="moelora", r=8), "r", 8, 12, "base.model.layers.0.self_attn.q_proj.lora_A has shape (8, 32)"),
    (dict(method="ttlora", num_experts=3, tt_rank=3), "num_experts", 3, 2,
     "base.model.layers.0.self_attn.q_proj.tt_cores.0 has shape (3, 1, "),
    (dict(method="ttlora", tt_rank=3), "tt_rank", 3, 5,
     "base.model.layers.0.self_attn.q_proj.tt_cores.0 has shape (1, 1, "),
])
def test_edited_config_names_the_setting_the_tensor_and_the_fix(tmp_path, settings, key, saved, edited, tensor):
    save_and_edit(tmp_path, AdapterSettings(**settings), **{key: edited})
    with pytest.raises(ValueError) as caught:
        TalkLoRAForCausalLM.from_pretrained(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"`adapter.{key}` in config.json must match the saved weights: "), message
    assert tensor in message and "in model.safetensors" in message, message
    assert f"which {key}={saved} gives, but {key}={edited} builds" in message, message
    assert f", got {edited}. Fix: restore \"{key}\": {saved} in the \"adapter\" section of config.json" in message
    assert "ignore_mismatched_sizes" not in message


def test_the_bare_model_explains_it_too_and_a_fitting_config_still_loads(tmp_path):
    model = save_and_edit(tmp_path, AdapterSettings(method="lora", r=8), r=4)
    with pytest.raises(ValueError, match="`adapter.r` in config.json must match the saved weights"):
        TalkLoRAModel.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["adapter"]["r"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = TalkLoRAForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.state_dict()["base.model.layers.0.self_attn.q_proj.lora_A"],
                       model.state_dict()["base.model.layers.0.self_attn.q_proj.lora_A"])


def test_a_mismatch_no_single_setting_explains_lists_the_tensors(tmp_path):
    save_and_edit(tmp_path, AdapterSettings(method="talklora", r=8), r=16, num_experts=2)
    with pytest.raises(ValueError) as caught:
        TalkLoRAForCausalLM.from_pretrained(tmp_path)
    message = str(caught.value)
    assert message.startswith("`adapter` settings in config.json must match the saved weights ("), message
    assert "in model.safetensors but the config builds" in message and "'r': 16, 'num_experts': 2" in message
