"""disable_adapter() and print_trainable_parameters(), as peft users expect them: inside the block the
wrapped model computes exactly what its base computes; outside it the adapter is back."""

import copy

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.compose import compose_ttlora_moe

from .conftest import tiny_base

SETTINGS = {
    "lora": dict(method="lora", r=4),
    "moelora": dict(method="moelora", r=6, num_experts=3),
    "talklora": dict(method="talklora", r=6, num_experts=3),
    "ttlora": dict(method="ttlora", tt_rank=3),
}


def _wrapped(settings):
    base = tiny_base("llama")
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(copy.deepcopy(base), AdapterSettings(**settings)).eval()
    with torch.no_grad():  # B starts at zero (the adapter is then the identity): move every adapter tensor
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    return base, model


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_inside_the_block_the_model_is_its_base(method, input_ids):
    base, model = _wrapped(SETTINGS[method])
    with torch.no_grad():
        expected = base(input_ids).logits
        adapted = model(input_ids).logits
        with model.disable_adapter():
            bare = model(input_ids, output_router_logits=model.adapter_settings.is_routed).logits
        after = model(input_ids).logits
    assert not torch.allclose(adapted, expected)  # the adapter really changes the output...
    assert torch.equal(bare, expected)            # ...the block removes it exactly (same arithmetic)...
    assert torch.equal(after, adapted)            # ...and leaving the block brings it back


def test_a_ttlora_moe_stays_bare_through_its_router_pass(input_ids):
    experts = [_wrapped(SETTINGS["ttlora"])[1] for _ in range(2)]
    base = tiny_base("llama")
    moe = compose_ttlora_moe(experts, base=copy.deepcopy(base)).eval()
    with torch.no_grad():
        with moe.disable_adapter():  # the router's own bare pass must not switch the adapters back on
            bare = moe(input_ids).logits
        adapted = moe(input_ids).logits
        expected = base(input_ids).logits
    assert torch.equal(bare, expected) and not torch.allclose(adapted, expected)


def test_the_block_restores_the_adapter_after_an_error(input_ids):
    _, model = _wrapped(SETTINGS["lora"])
    with torch.no_grad():
        adapted = model(input_ids).logits
    with pytest.raises(RuntimeError):
        with model.disable_adapter():
            raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, adapted)


def test_print_trainable_parameters(capsys):
    _, model = _wrapped(SETTINGS["talklora"])
    counts = model.parameter_counts()
    model.print_trainable_parameters()
    line = capsys.readouterr().out.strip()
    share = 100 * counts["trainable"] / counts["total"]
    assert line == (f"trainable params: {counts['trainable']:,d} || all params: {counts['total']:,d} || "
                    f"trainable%: {share:.4f}")
    assert 0 < counts["trainable"] < counts["total"]
