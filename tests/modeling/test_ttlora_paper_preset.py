"""The paper's TT-LoRA setting (arXiv 2504.21190, official code lanl/TTLoRAMoE) as the "ttlora-paper" preset:
q and v only, rank 5, alpha 16, no dropout, hand-set factors; the project's own default stays as it was."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from talklora_hub.modeling import AdapterSettings
from talklora_hub.modeling.adapter_base import SharedAdapterState
from talklora_hub.modeling.adapter_settings import PAPER_TT_FACTORS, paper_factors, ttlora_paper_settings
from talklora_hub.modeling.injection import inject_adapters

from .conftest import tiny_config


def test_paper_factor_rule():
    assert paper_factors(2048) == [16, 8, 4, 4]  # the paper's factorization of 2048 (Llama-3.2-1B q_proj)
    assert paper_factors(576) == [16, 4, 3, 3]  # SmolLM2-135M hidden size
    assert paper_factors(192) == [16, 3, 2, 2]  # SmolLM2-135M k/v output
    assert paper_factors(32) == [16, 2]
    assert paper_factors(16) == [2, 2, 2, 2]  # 16 alone is not "16 then more factors": four balanced ones
    assert paper_factors(105) == [7, 5, 3]  # no factor of 16 available: a balanced split, largest first
    for n in (2048, 576, 192, 512, 1536, 97, 30, 1):
        assert math.prod(paper_factors(n)) == n


def test_preset_on_a_tiny_llama_config():
    cfg = tiny_config("llama")  # hidden 32, 4 heads of 8, 2 kv heads: q 32 -> 32, v 32 -> 16
    settings = AdapterSettings.preset("ttlora-paper", cfg)
    assert settings == ttlora_paper_settings(cfg)
    assert settings.method == "ttlora" and settings.num_experts == 1
    assert settings.target_modules == ["q_proj", "v_proj"]
    assert settings.lora_dropout == 0.0 and settings.tt_rank == 5 and settings.tt_alpha == 16.0
    # Input factors largest first; output cores in the official core order (the factors reversed), so the
    # largest factors sit on the two boundary cores, whose rank-1 side makes them the cheapest.
    assert settings.tt_factors == {"q_proj": [[16, 2], [2, 16]], "v_proj": [[16, 2], [2, 2, 2, 2]]}
    again = AdapterSettings.from_dict(settings.to_dict())  # survives a config.json round trip
    assert again == settings


def test_preset_overrides_and_errors():
    cfg = tiny_config("llama")
    moe = AdapterSettings.preset("ttlora-paper", cfg, num_experts=3)
    assert moe.num_experts == 3 and moe.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match=r"`name` must be one of \['ttlora-paper'\].*Fix:"):
        AdapterSettings.preset("ttlora-nope", cfg)
    with pytest.raises(ValueError, match=r"`model_config`.*Fix:"):
        AdapterSettings.preset("ttlora-paper", {"model_type": "gpt2", "n_embd": 32})


def _llama_3_2_1b_shaped_on_meta():
    cfg = LlamaConfig(vocab_size=128, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=64)
    with torch.device("meta"):
        return cfg, AutoModelForCausalLM.from_config(cfg)


def test_preset_parameter_count_on_llama_3_2_1b_is_the_papers_33920():
    """Counted from the adapter layers' parameter shapes, on a meta-device Llama-3.2-1B (hidden 2048, q out
    2048, v out 512, 16 layers): no weights are allocated. Also checked in closed form from the factors."""
    cfg, model = _llama_3_2_1b_shaped_on_meta()
    settings = AdapterSettings.preset("ttlora-paper", cfg)
    assert settings.tt_factors == {"q_proj": [[16, 8, 4, 4], [4, 4, 8, 16]],
                                   "v_proj": [[16, 16, 4, 2], [2, 16, 16]]}
    layers = inject_adapters(model, settings, SharedAdapterState(), model_type="llama")
    assert len(layers) == 32
    counted = sum(p.numel() for layer in layers.values() for name, p in layer.named_parameters()
                  if name.startswith("tt_cores"))
    assert counted == 33_920

    def closed_form(sizes, rank=5):
        ranks = [1] + [rank] * (len(sizes) - 1) + [1]
        return sum(ranks[t] * s * ranks[t + 1] for t, s in enumerate(sizes))

    per_block = sum(closed_form(fin + fout) for fin, fout in settings.tt_factors.values())
    assert 16 * per_block == 33_920
    assert PAPER_TT_FACTORS[(2048, 2048)] == ([16, 8, 4, 4], [16, 8, 4, 4])


def test_default_ttlora_settings_are_unchanged():
    """The default stays the project's own: architecture-default targets, automatic factors."""
    settings = AdapterSettings(method="ttlora")
    assert settings.target_modules is None and settings.tt_factors is None
    assert settings.tt_rank == 5 and settings.tt_alpha == 16.0 and settings.lora_dropout == 0.0
