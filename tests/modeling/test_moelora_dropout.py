"""MoELoRA's three dropouts, as in the official TalkLoRA repo's MoELoRA baseline (and TalkLoRA here): on the
adapter input, on the routing weights (after the recorder has seen them) and on the scaled adapter output,
all with p = lora_dropout, active only in training."""

import pytest
import torch
import torch.nn.functional as F

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import adapter_layers

from .conftest import tiny_base

P = 0.4


def _model(**settings):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="moelora", r=8, **settings))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.3)
    return model


def _masks(seed, tokens, d_in, num_experts, d_out):
    """The three dropout masks (already scaled by 1/(1-p)) the layer draws, in its order: input, routing, output.
    A dropout mask depends only on the shape and the generator state, not on the values."""
    torch.manual_seed(seed)
    return (F.dropout(torch.ones(tokens, d_in), P, True), F.dropout(torch.ones(tokens, num_experts), P, True),
            F.dropout(torch.ones(tokens, d_out), P, True))


def _manual_delta(layer, x, masks, top_k):
    """s * out_mask * sum_i (g_i * g_mask_i) B_i A_i (x * in_mask), with g = softmax(R_x x) read from the raw x."""
    in_mask, g_mask, out_mask = masks
    flat = x.reshape(-1, layer.in_features)
    gates = F.linear(flat, layer.router_weight).softmax(-1)
    if top_k is not None:
        vals, idx = gates.topk(top_k, dim=-1)
        gates = torch.zeros_like(gates).scatter(-1, idx, vals / vals.sum(-1, keepdim=True))
    gates = gates * g_mask
    d = layer.expert_rank
    codes = F.linear(flat * in_mask, layer.lora_A).view(-1, layer.num_experts, d)
    out = sum(gates[:, i:i + 1] * F.linear(codes[:, i], layer.expert_bank[:, i * d:(i + 1) * d])
              for i in range(layer.num_experts))
    return (out * layer.scaling * out_mask).view(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("top_k", [None, 2])
def test_train_mode_drops_input_routing_weights_and_output(top_k):
    model = _model(lora_dropout=P, num_experts_per_tok=top_k, lora_alpha=16.0).train()
    x = torch.randn(2, 5, 32)
    for layer in list(adapter_layers(model).values())[:3]:
        torch.manual_seed(7)
        got = layer.delta(x)
        masks = _masks(7, 10, layer.in_features, layer.num_experts, layer.out_features)
        torch.testing.assert_close(got, _manual_delta(layer, x, masks, top_k), rtol=1e-5, atol=1e-6)


def test_output_dropout_zeroes_about_p_of_the_entries():
    model = _model(lora_dropout=P).train()
    layer = next(iter(adapter_layers(model).values()))
    torch.manual_seed(0)
    out = layer.delta(torch.randn(64, 32, 32))
    zero_share = (out == 0).float().mean().item()
    assert abs(zero_share - P) < 0.03, zero_share


def test_recorded_routing_weights_are_not_dropped(input_ids):
    """The recorder sees the routing weights before the dropout: they still sum to one per token."""
    model = _model(lora_dropout=P).train()
    out = model(input_ids, output_router_logits=True)
    for weights in out.routing_weights:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 9))


@pytest.mark.parametrize("top_k", [None, 2])
def test_eval_mode_is_bit_identical_to_no_dropout(top_k, input_ids):
    dropped = _model(lora_dropout=P, num_experts_per_tok=top_k).eval()
    plain = _model(lora_dropout=0.0, num_experts_per_tok=top_k).eval()
    with torch.no_grad():
        assert torch.equal(dropped(input_ids).logits, plain(input_ids).logits)
        plain.train()  # p = 0 in training draws masks of ones: still the eval output (which fuses the code's and
        # the router's matmuls into one, so equal up to the kernel's rounding)
        torch.testing.assert_close(plain(input_ids).logits, dropped.eval()(input_ids).logits, rtol=1e-5, atol=1e-6)
