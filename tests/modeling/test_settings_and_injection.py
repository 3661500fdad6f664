"""Configuration errors, injection into several architectures, parameter counts, freezing, merging."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from talklora_hub.modeling import (AdapterSettings, TalkLoRAForCausalLM, TalkLoRAForSequenceClassification,
                                   TalkLoRAModel)
from talklora_hub.modeling.adapter_base import AdaptedLinear, adapter_layers
from talklora_hub.modeling.adapter_ttlora import factorize

from .conftest import tiny_base

# The tiny Llama's targeted maps (D_in, D_out), per layer: q, k, v, up, down; two layers.
LLAMA_DIMS = [(32, 32), (32, 16), (32, 16), (32, 48), (48, 32)]
R, E = 8, 4


@pytest.mark.parametrize("kwargs, argument, value", [
    ({"method": "talklora", "r": 10, "num_experts": 4}, "r", "10"),
    ({"method": "moelora", "num_experts_per_tok": 9}, "num_experts_per_tok", "9"),
    ({"method": "moelora", "num_experts_per_tok": 0}, "num_experts_per_tok", "0"),
    ({"method": "mixture"}, "method", "'mixture'"),
    ({"method": "lora", "lora_dropout": -0.1}, "lora_dropout", "-0.1"),
    ({"method": "talklora", "talk_init": "zeros"}, "talk_init", "'zeros'"),
    ({"method": "lora", "num_experts": 3}, "num_experts", "3"),
    ({"method": "lora", "num_experts_per_tok": 1}, "num_experts_per_tok", "1"),
])
def test_bad_settings_name_argument_rule_value_and_fix(kwargs, argument, value):
    with pytest.raises(ValueError) as info:
        AdapterSettings(**kwargs)
    message = str(info.value)
    assert f"`{argument}`" in message and f"got {value}" in message and "Fix:" in message


def test_unknown_target_lists_candidates():
    base = tiny_base("llama")
    with pytest.raises(ValueError) as info:
        TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="lora", r=4, target_modules=["qkv"]))
    message = str(info.value)
    assert "`target_modules`" in message and "'qkv'" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in message


def test_tt_factors_must_multiply_to_the_layer_dimension():
    base = tiny_base("llama")
    bad = AdapterSettings(method="ttlora", target_modules=["q_proj"], tt_factors={"q_proj": [[4, 4], [4, 8]]})
    with pytest.raises(ValueError, match=r"must multiply to the layer's input dimension 32, got \[4, 4\]"):
        TalkLoRAForCausalLM.from_base(base, bad)


def test_unknown_architecture_default_targets_asks_for_targets():
    from talklora_hub.modeling.adapter_settings import default_targets
    with pytest.raises(ValueError, match="pass target_modules explicitly"):
        default_targets("some_new_arch")


def test_regex_targets():
    base = tiny_base("llama")
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="lora", r=4,
                                                                target_modules=r".*layers\.1\.self_attn\.(q|v)_proj"))
    assert sorted(adapter_layers(model)) == ["base.model.layers.1.self_attn.q_proj", "base.model.layers.1.self_attn.v_proj"]


def count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_parameter_counts_match_closed_forms():
    dims = LLAMA_DIMS * 2
    d = R // E
    expected = {
        "lora": sum(R * (i + o) for i, o in dims),
        "moelora": sum(R * i + E * i + R * o for i, o in dims),
        # per layer: A, the E maps M_i (d x d), T (E x E), R (E x r); B shared: one (D_out x r) per projection type
        "talklora": sum(R * i + E * d * d + E * E + E * R for i, o in dims) + sum(R * o for _, o in LLAMA_DIMS),
    }
    for method, value in expected.items():
        model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method=method, r=R))
        assert count(model) == value, method
    tt = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="ttlora", tt_rank=5))
    expected_tt = 0
    for i, o in dims:
        sizes = factorize(i) + factorize(o)
        ranks = [1] + [5] * (len(sizes) - 1) + [1]
        expected_tt += sum(ranks[t] * s * ranks[t + 1] for t, s in enumerate(sizes))
    assert count(tt) == expected_tt


def test_talklora_with_shared_banks_is_cheaper_than_lora_at_equal_rank():
    lora = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="lora", r=R))
    talk = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="talklora", r=R))
    assert count(talk) < count(lora)


@pytest.mark.parametrize("arch, head", [("llama", "causal"), ("qwen2", "causal"), ("gpt2", "causal"),
                                        ("bert", "bare"), ("bert", "seqcls"), ("llama", "seqcls")])
@pytest.mark.parametrize("method", ["lora", "moelora", "talklora", "ttlora"])
def test_injection_trains_only_the_adapter(arch, head, method, input_ids):
    cls = {"causal": TalkLoRAForCausalLM, "bare": TalkLoRAModel, "seqcls": TalkLoRAForSequenceClassification}[head]
    extra = {"num_labels": 3} if head == "seqcls" else {}
    model = cls.from_base(tiny_base(arch, head=head, **extra), AdapterSettings(method=method, r=8)).train()
    layers = adapter_layers(model)
    assert layers and all(isinstance(l, AdaptedLinear) for l in layers.values())
    if arch == "gpt2":
        assert all(l.fan_in_fan_out for l in layers.values())
    out = model(input_ids, attention_mask=torch.ones_like(input_ids))
    out[0].float().pow(2).mean().backward() if head != "seqcls" else out.logits.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head_names = {n for n in trainable if ".score." in n or ".classifier." in n}
    assert bool(head_names) == (head == "seqcls")
    for name, param in model.named_parameters():
        adapter_tensor = name not in head_names and not name.endswith((".weight", ".bias")) or "banks" in name \
            or "tt_cores" in name or "sequence_router" in name
        assert param.requires_grad == (adapter_tensor or name in head_names), name
        if not param.requires_grad:
            assert param.grad is None, name


def test_sequence_classification_loss_and_labels():
    model = TalkLoRAForSequenceClassification.from_base(tiny_base("llama", head="seqcls", num_labels=3),
                                                        AdapterSettings(method="talklora", r=8))
    ids = torch.randint(3, 96, (4, 6))
    out = model(ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3) and out.loss.ndim == 0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "ttlora"])
def test_static_adapters_merge_into_a_plain_base_model(arch, method, input_ids, tmp_path):
    model = TalkLoRAForCausalLM.from_base(tiny_base(arch), AdapterSettings(method=method, r=8)).eval()
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            if method == "lora":
                layer.lora_B.normal_()
        expected = model(input_ids).logits
        plain = model.merge_and_unload()
        assert not any(isinstance(m, AdaptedLinear) for m in plain.modules())
        torch.testing.assert_close(plain(input_ids).logits, expected, rtol=1e-4, atol=1e-4)
    plain.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # no remote code needed
    assert "auto_map" not in reloaded.config.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_routed_adapters_refuse_to_merge_and_say_why(method):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method=method, r=8))
    with pytest.raises(ValueError, match="cannot be merged.*depends on the input"):
        model.merge_and_unload()


def test_adapter_follows_base_dtype():
    base = tiny_base("llama").to(torch.bfloat16)
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="talklora", r=8))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(3, 96, (2, 5))
    assert model(ids).logits.dtype == torch.bfloat16


def test_gradient_checkpointing_gives_the_same_gradients(input_ids):
    def grads(checkpointing):
        model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="talklora", r=8,
                                                                                  router_aux_loss_coef=0.1))
        torch.manual_seed(5)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.2)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids, labels=input_ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_ttlora_moe_routes_each_sequence_to_one_frozen_expert(input_ids):
    base = tiny_base("llama")
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="ttlora", num_experts=3)).eval()
    out = model(input_ids)
    chosen = model.adapter_shared.sequence_experts
    assert out.sequence_router_logits.shape == (2, 3) and chosen.shape == (2,)
    # Each row must equal that row run with its expert forced for the whole batch.
    for row in range(2):
        model.adapter_shared.sequence_experts = chosen[row:row + 1]
        model.adapter_shared.adapters_enabled = True
        single = model.base(input_ids[row:row + 1]).logits
        torch.testing.assert_close(out.logits[row:row + 1], single)
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_route_sequences_returns_the_router_choice_without_changing_state(input_ids):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="ttlora", num_experts=3)).eval()
    logits = model.route_sequences(input_ids)
    assert logits.shape == (2, 3) and model.adapter_shared.sequence_experts is None
    torch.testing.assert_close(model(input_ids).sequence_router_logits, logits)
    with pytest.raises(ValueError, match="needs a TT-LoRA MoE"):
        TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8)).route_sequences(input_ids)


def test_saved_folders_are_readable_by_others(tmp_path):
    import os
    import stat

    TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8)).save_pretrained(tmp_path / "m")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o777 & ~umask
    files = list((tmp_path / "m").iterdir())
    assert any(f.suffix == ".safetensors" for f in files)  # safetensors itself writes 0600
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask for f in files)
