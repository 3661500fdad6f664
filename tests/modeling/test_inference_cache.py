"""Inferring (eval mode, no grad) the layers cache their parameter-only products (TalkLoRA's M and router folded
into its down-projection; TT-LoRA's delta W split at its boundary into two small factors). The cache must never be
stale: after an optimizer step, load_state_dict, .to() and a dtype change the output equals a fresh computation
(the grad-enabled path, which never caches)."""

import pytest
import torch

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import adapter_layers

from .conftest import tiny_base


def _model(method):
    experts = 3 if method == "ttlora-moe" else None
    settings = AdapterSettings(method=method.replace("-moe", ""), r=8, num_experts=experts)
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), settings)
    with torch.no_grad():  # non-zero B, so the adapter's output matters
        for name, p in model.named_parameters():
            if "bank" in name or "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def _cached(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _fresh(model, ids):
    with torch.enable_grad():
        return model(input_ids=ids).logits.detach()


def _check(model, ids, dtype=torch.float32):
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(_cached(model, ids), _fresh(model, ids), **tol)


@pytest.mark.parametrize("method", ["moelora", "talklora", "ttlora", "ttlora-moe"])
def test_the_cache_is_used_and_never_stale(method, input_ids):
    model = _model(method)
    _check(model, input_ids)
    layers = list(adapter_layers(model).values())
    assert all("_inference_cache" in layer.__dict__ for layer in layers)  # each layer's inference plan

    # an optimizer step
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()
    model.eval()
    _check(model, input_ids)

    # load_state_dict with other adapter values
    other = _model(method).state_dict()
    model.load_state_dict(other)
    _check(model, input_ids)

    # an in-place edit of one tensor by hand
    with torch.no_grad():
        model.get_parameter(next(n for n in model.adapter_tensor_names() if "lora_A" in n or "tt_cores" in n)).mul_(2.0)
    _check(model, input_ids)

    # dtype changes and back
    model.to(torch.float64)
    assert _cached(model, input_ids).dtype == torch.float64
    model.to(torch.bfloat16)
    _check(model, input_ids, torch.bfloat16)
    model.to(torch.float32)
    _check(model, input_ids)


def test_generation_reuses_the_cache_and_matches_the_uncached_path(input_ids):
    model = _model("talklora")
    with torch.no_grad():
        fast = model.generate(input_ids[:1], max_new_tokens=6, do_sample=False)
    layer = next(iter(adapter_layers(model).values()))
    with torch.no_grad():
        layer.__dict__.pop("_inference_cache")
        model.train()  # training mode never caches (dropout is 0 here, so the arithmetic is the plain one)
        slow = model.generate(input_ids[:1], max_new_tokens=6, do_sample=False)
    assert torch.equal(fast, slow)
