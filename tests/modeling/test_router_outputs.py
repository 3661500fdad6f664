"""Routing outputs in Mixtral's layout: router_logits is one (batch * seq, E) tensor per routed module,
so transformers' own load_balancing_loss_func reads them; routing_weights stays (batch, seq, E)."""

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

from .conftest import tiny_base


def routed(method, seed=3, scale=0.5, layers=2, targets=None, **settings):
    base = tiny_base("llama", num_hidden_layers=layers)
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method=method, r=8, target_modules=targets, **settings))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * scale)
    return model.eval()


def _scale_routers(model, factor):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("router_weight"):
                p.mul_(factor)


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_router_logits_have_mixtrals_layout(method, input_ids):
    model = routed(method)
    out = model(input_ids, output_router_logits=True)
    batch, seq = input_ids.shape
    assert len(out.router_logits) == len(out.routing_weights) == len(out.router_module_names) == 10
    for logits, weights in zip(out.router_logits, out.routing_weights):
        assert logits.shape == (batch * seq, 4) and weights.shape == (batch, seq, 4)
        # rows in (batch, seq) row-major order: the dense routing weights are their softmax
        torch.testing.assert_close(logits.softmax(-1).view(batch, seq, 4), weights)
    assert out.router_logits[0].requires_grad  # as Mixtral's: a loss on them trains the routers



@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_a_trace_beside_autograd_keeps_no_graph_while_the_outputs_keep_theirs(method, input_ids):
    """The recorder skips detach() where there is no graph (decoding); with one, the trace must still hold
    detached logits and weights of the same values, and the forward's own router_logits keep their graph."""
    model = routed(method)
    with model.trace_routing() as trace:
        out = model(input_ids, output_router_logits=True)
    with torch.no_grad():
        with model.trace_routing() as plain:
            model(input_ids)
    batch, seq = input_ids.shape
    assert out.router_logits[0].requires_grad and out.router_logits[0].grad_fn is not None
    for record, plain_record, logits in zip(trace.steps[0], plain.steps[0], out.router_logits):
        assert not record.logits.requires_grad and not record.weights.requires_grad
        assert record.weights.shape == (batch, seq, 4)
        torch.testing.assert_close(record.logits, logits.detach())
        torch.testing.assert_close(plain_record.weights, record.weights)

@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_transformers_load_balancing_loss_is_about_one_for_a_uniform_router(method, input_ids):
    model = routed(method)
    _scale_routers(model, 1e-4)  # logits near 0: routing probabilities near 1/E
    with torch.no_grad():
        out = model(input_ids, output_router_logits=True)
    value = load_balancing_loss_func(out.router_logits, 4, 1)
    assert abs(float(value) - 1.0) < 1e-3, float(value)
    mask = torch.ones_like(input_ids)
    mask[0, -3:] = 0
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask, output_router_logits=True)
    assert abs(float(load_balancing_loss_func(out.router_logits, 4, 1, mask)) - 1.0) < 1e-3
    torch.testing.assert_close(out.aux_loss, torch.tensor(1.0), rtol=0, atol=1e-3)


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_transformers_load_balancing_loss_equals_aux_loss_where_the_definitions_agree(method, input_ids):
    # One routed module: Mixtral's pooling over modules and our mean over modules coincide.
    model = routed(method, layers=1, targets=["q_proj"], seed=4, scale=1.0)
    mask = torch.ones_like(input_ids)
    mask[1, :4] = 0
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask, output_router_logits=True)
        unmasked = model(input_ids, output_router_logits=True)
    assert len(out.router_logits) == 1 and abs(float(out.aux_loss) - 1.0) > 1e-2  # not a trivially uniform router
    # dense routing counts the top-1 choice: Mixtral's top_k=1
    torch.testing.assert_close(load_balancing_loss_func(out.router_logits, 4, 1, mask), out.aux_loss)
    torch.testing.assert_close(load_balancing_loss_func(unmasked.router_logits, 4, 1), unmasked.aux_loss)
    # top-k: Mixtral counts each of the k selections fully, ours divides the shares by k
    top2 = routed(method, layers=1, targets=["q_proj"], seed=4, scale=1.0, num_experts_per_tok=2)
    with torch.no_grad():
        out = top2(input_ids, attention_mask=mask, output_router_logits=True)
    torch.testing.assert_close(load_balancing_loss_func(out.router_logits, 4, 2, mask), 2 * out.aux_loss)
