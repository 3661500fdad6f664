"""The adapters compute the papers' math: zero updates at init, routing weights, top-k, the Talking
Module, and tensor-train contraction, each checked against an independent computation."""

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM, TalkLoRAModel
from talklora_hub.modeling.adapter_base import adapter_layers
from talklora_hub.modeling.adapter_ttlora import factorize, tt_contract, tt_reconstruct
from talklora_hub.testing.oracles import LoopMoELoRA, LoopTalkLoRA, no_talk_reference

from .conftest import tiny_base

ARCHS = ["llama", "qwen2", "gpt2", "bert"]
ZERO_INIT_METHODS = ["lora", "moelora", "talklora"]


def wrap(arch, method, head="causal", **settings):
    base = tiny_base(arch, head=head)
    cls = TalkLoRAForCausalLM if head == "causal" else TalkLoRAModel
    return base, cls.from_base(base, AdapterSettings(method=method, r=8, **settings)).eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ZERO_INIT_METHODS)
def test_zero_update_at_init_equals_base_exactly(arch, method, input_ids):
    head = "bare" if arch == "bert" else "causal"
    reference = tiny_base(arch, head=head)
    with torch.no_grad():
        expected = reference(input_ids)[0]
        _, model = wrap(arch, method, head=head)
        got = model(input_ids)[0]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_ttlora_is_nonzero_at_init(arch, input_ids):
    head = "bare" if arch == "bert" else "causal"
    reference = tiny_base(arch, head=head)
    _, model = wrap(arch, "ttlora", head=head)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids)[0], reference(input_ids)[0])


def test_tt_contraction_equals_reconstruction():
    torch.manual_seed(0)
    fin, fout = [6, 8, 12], [4, 6, 8]
    sizes = fin + fout
    ranks = [1] + [5] * (len(sizes) - 1) + [1]
    cores = [torch.randn(ranks[t], s, ranks[t + 1], dtype=torch.float64) for t, s in enumerate(sizes)]
    x = torch.randn(3, 5, 576, dtype=torch.float64)
    full = tt_reconstruct(cores, fin, fout)
    assert full.shape == (192, 576)
    contracted = tt_contract(x.reshape(1, 15, 576), [c[None] for c in cores], fin, fout).reshape(3, 5, 192)
    torch.testing.assert_close(contracted, x @ full.T, rtol=1e-10, atol=1e-10)


def test_ttlora_layer_forward_equals_its_merged_weight(input_ids):
    _, model = wrap("llama", "ttlora")
    layer = next(iter(adapter_layers(model).values()))
    x = torch.randn(4, layer.in_features)
    expected = x @ (layer.weight + layer.delta_weight()).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_factorize_products():
    for n in (576, 192, 1536, 2048, 97, 384, 30):
        factors = factorize(n)
        assert torch.tensor(factors).prod().item() == n


def _randomise(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_routing_weights_sum_to_one_in_eval(method, input_ids):
    _, model = wrap("llama", method)
    _randomise(model)
    out = model(input_ids, output_router_logits=True)
    assert len(out.routing_weights) == len(model.routed_module_names()) == 10
    for weights in out.routing_weights:
        assert weights.shape == (2, 9, 4)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 9))


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_top_k_equal_to_E_is_dense_and_top1_selects_one(method, input_ids):
    _, dense = wrap("llama", method)
    _randomise(dense)
    _, full_k = wrap("llama", method, num_experts_per_tok=4)
    _, top1 = wrap("llama", method, num_experts_per_tok=1)
    full_k.load_state_dict(dense.state_dict())
    top1.load_state_dict(dense.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(full_k(input_ids).logits, dense(input_ids).logits)
        out = top1(input_ids, output_router_logits=True)
        assert not torch.allclose(out.logits, dense(input_ids).logits)
    for weights in out.routing_weights:
        assert ((weights > 0).sum(-1) == 1).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 9))


@pytest.mark.parametrize("top_k", [None, 1, 2])
def test_talklora_layer_equals_per_expert_loop_reference(top_k):
    _, model = wrap("llama", "talklora", num_experts_per_tok=top_k)
    _randomise(model)
    x = torch.randn(2, 5, 32)
    for layer in list(adapter_layers(model).values())[:3]:
        expected = LoopTalkLoRA.from_layer(layer)(x, top_k=top_k)
        torch.testing.assert_close(layer.delta(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_moelora_layer_equals_per_expert_loop_reference(top_k):
    _, model = wrap("llama", "moelora", num_experts_per_tok=top_k)
    _randomise(model)
    x = torch.randn(2, 5, 32)
    for layer in list(adapter_layers(model).values())[:3]:
        torch.testing.assert_close(layer.delta(x), LoopMoELoRA.from_layer(layer)(x, top_k=top_k),
                                   rtol=1e-5, atol=1e-6)


def test_talk_identity_equals_no_talk_variant():
    _, model = wrap("llama", "talklora", talk_init="identity")
    _randomise(model)
    for layer in adapter_layers(model).values():
        x = torch.randn(3, 4, layer.in_features)
        with torch.no_grad():
            layer.talk.copy_(torch.eye(4))
        torch.testing.assert_close(layer.delta(x), no_talk_reference(layer, x), rtol=1e-5, atol=1e-6)


def test_talking_module_changes_routing():
    _, model = wrap("llama", "talklora")
    _randomise(model)
    layer = next(iter(adapter_layers(model).values()))
    x = torch.randn(3, 4, 32)
    assert not torch.allclose(layer.delta(x), no_talk_reference(layer, x))


def test_talklora_shares_expert_banks_across_layers():
    _, model = wrap("llama", "talklora")
    layers = list(adapter_layers(model).values())
    q_layers = [l for l in layers if l.module_name.endswith("q_proj")]
    assert len(q_layers) == 2 and q_layers[0].expert_bank is q_layers[1].expert_bank
    assert set(model.adapter_shared.banks.keys()) == {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}
    _, per_layer = wrap("llama", "talklora", share_expert_banks=False)
    assert len(per_layer.adapter_shared.banks) == 0


def test_aux_loss_is_one_for_a_uniform_router_and_enters_the_loss(input_ids):
    _, model = wrap("llama", "moelora", router_aux_loss_coef=0.5)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.router_weight.zero_()
    out = model(input_ids, output_router_logits=True)
    torch.testing.assert_close(out.aux_loss, torch.tensor(1.0))
    model.train()
    plain = model(input_ids, labels=input_ids)
    model.config.adapter["router_aux_loss_coef"] = 0.0  # the loss term follows the recorded settings
    without = model(input_ids, labels=input_ids)
    torch.testing.assert_close(plain.loss - without.loss, torch.tensor(0.5))


def test_dropout_and_jitter_only_in_training(input_ids):
    _, model = wrap("llama", "talklora", lora_dropout=0.3, router_jitter_noise=0.2)
    _randomise(model)
    with torch.no_grad():
        a, b = model(input_ids).logits, model(input_ids).logits
        assert torch.equal(a, b)
        model.train()
        assert not torch.equal(model(input_ids).logits, a)

