"""TT-LoRA MoE per-sequence routing: the forward arguments that steer it, the choice made on the prompt
and held while generating (batched, left-padded), the KV cache under this transformers version's name,
and the router's two noise variants."""

import json
import logging

import pytest
import torch
from transformers.utils import logging as hf_logging

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.modeling_talklora import CACHE_FIELD
from talklora_hub.modeling.sequence_router import SEQUENCE_ROUTER_CE_WEIGHT, SequenceRouter

from .conftest import tiny_base


def moe(num_experts=3, **settings):
    """A TT-LoRA MoE on a tiny llama whose wide init gives confident next-token logits (large greedy
    margins), with a router scaled up so that different prompts pick different experts."""
    base = tiny_base("llama", initializer_range=0.5)
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="ttlora", num_experts=num_experts, tt_rank=3,
                                                                **settings)).eval()
    with torch.no_grad():
        for p in model.sequence_router.parameters():
            p.mul_(30)
    return model


def left_padded_batch():
    """Three prompts of 4, 7 and 6 tokens, left-padded to 7 (pad id 0)."""
    torch.manual_seed(5)  # a batch whose three rows go to three different experts
    ids = torch.randint(3, 96, (3, 7))
    mask = torch.ones_like(ids)
    for row, pads in ((0, 3), (2, 1)):
        ids[row, :pads] = 0
        mask[row, :pads] = 0
    return ids, mask


def alone(ids, mask, row):
    return ids[row:row + 1, mask[row].bool()]


def test_generate_holds_the_prompt_experts_for_every_new_token_batched_and_left_padded():
    model = moe()
    ids, mask = left_padded_batch()
    each_alone = torch.stack([model.route_sequences(alone(ids, mask, row)).argmax(-1)[0] for row in range(3)])
    assert len(set(each_alone.tolist())) > 1  # the rows really are routed differently
    with model.trace_routing() as trace:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert out.shape == (3, 12)
    chosen = trace.sequence_experts()
    # the prompt pass, then one pass per new token but the last: every one served by the prompt's experts
    assert chosen.shape == (5, 3)
    assert torch.equal(chosen, each_alone.expand(5, 3))

    forced = torch.tensor([0, 0, 1])
    with model.trace_routing() as trace:
        model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, sequence_experts=forced)
    assert torch.equal(trace.sequence_experts(), forced.expand(4, 3))


def test_left_padded_batch_generation_equals_generating_each_row_alone():
    model = moe()
    ids, mask = left_padded_batch()
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, output_scores=True,
                           return_dict_in_generate=True)
    for row in range(3):
        prompt = alone(ids, mask, row)
        single = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                                output_scores=True, return_dict_in_generate=True)
        scores = torch.stack(single.scores)[:, 0]
        top2 = scores.topk(2, dim=-1).values
        # greedy margins far above the layout noise (~1e-5 here), so the argmax tokens are stable
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-3
        new, own = batch.sequences[row, ids.shape[1]:], single.sequences[0, prompt.shape[1]:]
        steps = own.shape[0]  # a row that hit EOS alone is padded (pad id 0) in the batch after it
        assert torch.equal(new[:steps], own) and not new[steps:].any()
        # padding changes the float layout, not the function: same logits up to rounding
        torch.testing.assert_close(torch.stack(batch.scores)[:steps, row], scores, rtol=1e-4, atol=1e-4)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("method", ["ttlora-moe", "talklora"])
def test_generate_and_cached_forward_do_not_trigger_the_cache_deprecation_warning(method):
    if method == "talklora":
        model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="talklora", r=8)).eval()
    else:
        model = moe()
    ids, mask = left_padded_batch()
    hf_logging.warning_once.cache_clear()  # a warning already given elsewhere in this process would hide it
    handler = _Collect()
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
        with torch.no_grad():
            first = model(ids, attention_mask=mask, use_cache=True)
            cache = first[CACHE_FIELD]
            step = model(torch.full((3, 1), 5), attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1),
                         use_cache=True, **{CACHE_FIELD: cache})
    finally:
        root.removeHandler(handler)
    assert step.logits.shape[:2] == (3, 1) and step[CACHE_FIELD] is cache
    assert not [m for m in handler.messages if "deprecated" in m and "cache" in m], handler.messages


def test_decoding_from_a_cache_without_held_experts_is_a_clear_error():
    model = moe()
    ids = torch.randint(3, 96, (2, 5))
    with torch.no_grad():
        cache = model(ids, use_cache=True)[CACHE_FIELD]
        model.adapter_shared.sequence_experts = None
        with pytest.raises(RuntimeError, match="expert chosen on its prompt.*sequence_experts"):
            model(ids[:, -1:], use_cache=True, **{CACHE_FIELD: cache})
        # with the experts given, decoding from the cache works
        out = model(ids[:, -1:], use_cache=True, sequence_experts=torch.tensor([0, 1]), **{CACHE_FIELD: cache})
    assert out.sequence_router_logits is None
    assert torch.equal(model.adapter_shared.sequence_experts, torch.tensor([0, 1]))


def test_sequence_experts_force_the_experts_and_the_router_logits_are_still_returned():
    model = moe()
    ids = torch.randint(3, 96, (2, 6))
    with torch.no_grad():
        routed = model(ids)
        for e in range(3):
            forced = model(ids, sequence_experts=torch.full((2,), e))
            torch.testing.assert_close(forced.sequence_router_logits, routed.sequence_router_logits)
            assert torch.equal(model.adapter_shared.sequence_experts, torch.full((2,), e))
            model.adapter_shared.sequence_experts = torch.full((1,), e)
            for row in range(2):
                torch.testing.assert_close(forced.logits[row:row + 1], model.base(ids[row:row + 1]).logits,
                                           rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="`sequence_experts` must hold integer expert indices in \\[0, 3\\)"):
        model(ids, sequence_experts=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="`sequence_experts` must be a \\(batch,\\) tensor"):
        model(ids, sequence_experts=torch.tensor([0, 1, 2]))
    lora = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8))
    with pytest.raises(ValueError, match="`sequence_experts` only applies to a TT-LoRA MoE"):
        lora(ids, sequence_experts=torch.tensor([0, 1]))


def test_router_attention_mask_reads_the_prompt_only():
    model = moe()
    ids = torch.randint(3, 96, (2, 10))
    prompt_mask = torch.ones_like(ids)
    prompt_mask[0, 6:] = 0
    prompt_mask[1, 4:] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=torch.ones_like(ids), router_attention_mask=prompt_mask).sequence_router_logits
        for row, length in ((0, 6), (1, 4)):
            alone = model(ids[row:row + 1, :length]).sequence_router_logits
            unmasked = model(ids[row:row + 1]).sequence_router_logits  # what reading the answer would give
            # Different batch layouts (a masked batch of 2 vs one short row) take different attention kernels:
            # equal up to float32 reduction order, not bit for bit.
            torch.testing.assert_close(full[row:row + 1], alone, atol=1e-4, rtol=1e-4)
            assert (unmasked - alone).abs().max() > 1e-3


def test_sequence_labels_add_the_router_cross_entropy_to_the_loss():
    model = moe()
    ids = torch.randint(3, 96, (2, 6))
    targets = torch.tensor([2, 0])
    with torch.no_grad():
        plain = model(ids, labels=ids, sequence_experts=targets)
        out = model(ids, labels=ids, sequence_experts=targets, sequence_labels=targets)
        weighted = model(ids, labels=ids, sequence_experts=targets, sequence_labels=targets,
                         sequence_router_ce_weight=2.0)
        alone_ce = model(ids, sequence_labels=targets)
    ce = torch.nn.functional.cross_entropy(plain.sequence_router_logits, targets)
    torch.testing.assert_close(out.sequence_router_loss, ce)
    torch.testing.assert_close(out.loss, plain.loss + SEQUENCE_ROUTER_CE_WEIGHT * ce)
    torch.testing.assert_close(weighted.loss, plain.loss + 2.0 * ce)
    torch.testing.assert_close(alone_ce.loss, SEQUENCE_ROUTER_CE_WEIGHT * ce)  # no labels: the router's term alone


# ---- the router's noise ------------------------------------------------------------------------
def test_default_router_noise_is_training_only_masked_and_without_bias():
    torch.manual_seed(0)
    router = SequenceRouter(16, 3)
    assert router.noise.bias is None and router.noise_variant == "masked-train"
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    router.eval()
    assert torch.equal(router(hidden, mask), router(hidden, mask))  # eval: deterministic
    torch.testing.assert_close(router(hidden, mask), router.gate(hidden[[0, 1], [2, 4]]))
    router.train()
    assert not torch.equal(router(hidden, mask), router(hidden, mask))  # training: noisy
    # the noise scale reads the mean over real tokens only: what the padding holds does not matter
    other = hidden.clone()
    other[0, 3:] = 100.0
    torch.manual_seed(5)
    a = router(hidden, mask)
    torch.manual_seed(5)
    torch.testing.assert_close(router(other, mask), a)


def test_official_router_noise_has_a_bias_reads_all_positions_and_adds_noise_in_eval():
    torch.manual_seed(0)
    router = SequenceRouter(16, 3, noise="official").eval()
    assert router.noise.bias is not None and router.noise.bias.shape == (3,)
    assert bool(router.noise.bias.abs().sum() > 0)  # initialised like nn.Linear's bias
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert not torch.equal(router(hidden, mask), router(hidden, mask))  # noise in eval mode too
    # the noise scale reads the mean over ALL positions, padding included
    other = hidden.clone()
    other[0, 3:] = 100.0
    torch.manual_seed(5)
    a = router(hidden, mask)
    torch.manual_seed(5)
    b = router(other, mask)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    torch.manual_seed(5)
    noise = torch.randn(2, 3)
    expected = router.gate(hidden[[0, 1], [2, 4]]) + noise * torch.nn.functional.softplus(router.noise(hidden.mean(1)))
    torch.testing.assert_close(a, expected)
    with pytest.raises(ValueError, match="`router_noise` must be one of"):
        SequenceRouter(16, 3, noise="always")


def test_router_noise_setting_is_saved_in_the_config_and_builds_the_router(tmp_path):
    with pytest.raises(ValueError, match="`router_noise` must be one of"):
        AdapterSettings(method="ttlora", num_experts=2, router_noise="sometimes")
    model = moe(num_experts=2, router_noise="official")
    assert model.sequence_router.noise_variant == "official" and "sequence_router.noise.bias" in model.state_dict()
    ids = torch.randint(3, 96, (2, 6))
    with torch.no_grad():
        assert not torch.equal(model(ids).sequence_router_logits, model(ids).sequence_router_logits)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["adapter"]["router_noise"] == "official"
    loaded = TalkLoRAForCausalLM.from_pretrained(tmp_path)
    assert loaded.sequence_router.noise_variant == "official"
    torch.testing.assert_close(loaded.sequence_router.noise.bias, model.sequence_router.noise.bias)
    default = moe(num_experts=2)
    assert "sequence_router.noise.bias" not in default.state_dict()
    with torch.no_grad():
        assert torch.equal(default(ids).sequence_router_logits, default(ids).sequence_router_logits)
