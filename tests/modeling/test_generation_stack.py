"""Every adapter method through transformers' generation stack: the static cache, torch.compile, continuous
batching (generate_batch: paged attention, packed sequences), beam search and seeded sampling give the tokens
plain generate() gives, one prompt at a time. A TT-LoRA MoE (one expert per SEQUENCE) keeps each sequence's
expert wherever sequences stay rows of a batch, and refuses packed sequences (continuous batching) with an
error naming why and the fix.

Already covered elsewhere: greedy left-padded batches of a TT-LoRA MoE vs each row alone
(test_sequence_routing.py); here the other methods, beams and sampling."""

import pytest
import torch
from transformers import CompileConfig, ContinuousBatchingConfig

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

from .conftest import tiny_base
from .test_sequence_routing import alone, left_padded_batch

VARIANTS = {
    "lora": {"method": "lora", "r": 8},
    "moelora": {"method": "moelora", "r": 8, "num_experts": 4},
    "talklora": {"method": "talklora", "r": 8, "num_experts": 4},
    "talklora-top2": {"method": "talklora", "r": 8, "num_experts": 4, "num_experts_per_tok": 2},
    "ttlora": {"method": "ttlora", "tt_rank": 3},
    "ttlora-moe": {"method": "ttlora", "tt_rank": 3, "num_experts": 3},
}
ALL = ["lora", "moelora", "talklora", "talklora-top2", "ttlora", "ttlora-moe"]
TOKEN_LEVEL = [v for v in ALL if v != "ttlora-moe"]  # every token computed alone: packing cannot change it
NEW = 6


def build(variant: str, arch: str = "llama", **base_overrides) -> TalkLoRAForCausalLM:
    """A tiny llama whose wide init gives confident logits (large greedy margins), the adapter's zero-init B
    made non-zero (so the adapter changes the tokens), a TT-LoRA MoE's router scaled up so that the rows of
    left_padded_batch() go to three different experts (as in test_sequence_routing.moe)."""
    base = tiny_base(arch, initializer_range=0.5, **base_overrides)
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(**VARIANTS[variant])).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bank" in name or "lora_B" in name:
                param.normal_(0, 0.5)
        if model.sequence_router is not None:
            for param in model.sequence_router.parameters():
                param.mul_(30)
    model.generation_config.eos_token_id = None  # always NEW tokens: rows of a batch stay comparable
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine a preempted OpenMP thread stalls
    every op (index_add: 30 ms instead of 0.1): one thread keeps this file fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    return {}


def get(models, variant):
    if variant not in models:
        models[variant] = build(variant)
    return models[variant]


def prompts():
    """The three prompts of left_padded_batch() (4, 7 and 6 tokens) without their padding: (1, n) each."""
    ids, mask = left_padded_batch()
    return [alone(ids, mask, row) for row in range(3)]


def greedy_alone(model, **kwargs):
    """[NEW new tokens] of greedy generate() for each prompt alone (dynamic cache)."""
    return [model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=NEW, do_sample=False,
                           **kwargs)[0, p.shape[1]:].tolist() for p in prompts()]


def test_the_batch_really_is_routed_three_ways(models):
    model = get(models, "ttlora-moe")
    experts = {int(model.route_sequences(p).argmax(-1)) for p in prompts()}
    assert len(experts) == 3  # otherwise holding "each sequence's own expert" would be untested


@pytest.mark.parametrize("variant", ALL)
def test_static_cache_gives_the_dynamic_cache_tokens_alone_and_left_padded(models, variant):
    model = get(models, variant)
    expected = greedy_alone(model)
    assert greedy_alone(model, cache_implementation="static") == expected
    ids, mask = left_padded_batch()
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                           cache_implementation="static")
    assert batch[:, ids.shape[1]:].tolist() == expected


@pytest.mark.parametrize("variant", TOKEN_LEVEL)
def test_left_padded_greedy_batch_gives_each_prompt_alone(models, variant):
    model = get(models, variant)
    ids, mask = left_padded_batch()
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    assert batch[:, ids.shape[1]:].tolist() == greedy_alone(model)


@pytest.mark.parametrize("variant", ["lora", "talklora", "ttlora", "ttlora-moe"])
def test_beam_search_on_a_left_padded_batch_gives_each_prompt_alone(models, variant):
    model = get(models, variant)
    beams = {"num_beams": 3, "do_sample": False, "max_new_tokens": NEW, "early_stopping": True}
    ids, mask = left_padded_batch()
    with model.trace_routing() as trace:
        batch = model.generate(ids, attention_mask=mask, **beams)
    for row, prompt in enumerate(prompts()):
        own = model.generate(prompt, attention_mask=torch.ones_like(prompt), **beams)
        assert batch[row, ids.shape[1]:].tolist() == own[0, prompt.shape[1]:].tolist()
    if variant == "ttlora-moe":  # every beam of a prompt is served by that prompt's expert, on every step
        experts = torch.stack([model.route_sequences(p).argmax(-1)[0] for p in prompts()])
        assert torch.equal(trace.sequence_experts(), experts.repeat_interleave(3).expand(NEW, 9))


@pytest.mark.parametrize("variant", ["lora", "talklora", "ttlora-moe"])
def test_seeded_sampling_is_reproducible_and_independent_of_the_cache(models, variant):
    """One multinomial draw per step over the whole batch: a batch row's draws are not a lone prompt's, so the
    comparison is per prompt, across repeats and cache implementations (and seeds do change the tokens)."""
    model = get(models, variant)
    prompt = prompts()[1]
    sample = {"do_sample": True, "top_k": 0, "temperature": 1.5, "max_new_tokens": 12}

    def draw(seed, **kwargs):
        torch.manual_seed(seed)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), **sample, **kwargs)
        return out[0, prompt.shape[1]:].tolist()

    first = draw(7)
    assert draw(7) == first and draw(7, cache_implementation="static") == first
    assert any(draw(seed) != first for seed in (8, 9, 10))


def compile_config(backend: str, fullgraph: bool) -> CompileConfig:
    config = CompileConfig(fullgraph=fullgraph, backend=backend, mode="default" if backend == "inductor" else None)
    config._compile_all_devices = True  # transformers compiles generate()'s decoding steps on GPUs only otherwise
    return config


# lora with inductor: real code generation on this CPU (a C++ compiler is needed; gcc is here). The others traced
# with backend "eager" (dynamo's tracing, no code generation, fast); every token-routed method traces whole (no
# graph break), the TT-LoRA MoE too: it decides "route or hold the expert" without branching on the static cache's
# length (sequence_routing._decoding_with_cache).
COMPILED = [("lora", "inductor", True), ("ttlora", "eager", True), ("moelora", "eager", True),
            ("talklora", "eager", True), ("ttlora-moe", "eager", True)]


@pytest.mark.parametrize("variant,backend,fullgraph", COMPILED)
def test_torch_compile_gives_the_plain_generate_tokens(variant, backend, fullgraph):
    from torch._dynamo.utils import counters

    model = build(variant)  # fresh: a compiled forward stays attached to its model
    expected = greedy_alone(model)
    torch._dynamo.reset()
    counters.clear()
    ids, mask = left_padded_batch()
    try:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                             cache_implementation="static", compile_config=compile_config(backend, fullgraph))
        assert hasattr(model, "_compiled_call") and counters["stats"]["unique_graphs"] >= 1  # it really compiled
        breaks = dict(counters["graph_break"])
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()  # no compiled code or counters left for other tests
    assert out[:, ids.shape[1]:].tolist() == expected
    # One compiled graph (two across the TT-LoRA MoE's break) serves every decoding step: a forward that changed
    # a Python int on a module (a counter) would recompile each token, and after dynamo's recompile limit (8)
    # silently run eager for the rest of the generation.
    assert graphs <= (1 if fullgraph else 2), f"{graphs} graphs for {NEW - 1} decoding steps: it recompiles"
    if fullgraph:
        assert not breaks


def test_compiled_models_side_by_side_compile_once_each():
    """Every adapted model shares TalkLoRAForCausalLM.forward's code object. A graph break in one (the TT-LoRA MoE's
    old branch on the cache length) left a short compiled entry there that the others then matched, so each
    compiled once more on its next call: a second round of generate() calls must compile nothing."""
    from torch._dynamo.utils import counters

    models = {variant: build(variant) for variant in ("lora", "ttlora-moe")}
    ids, mask = left_padded_batch()

    def graphs_of_one_round():
        before = counters["stats"]["unique_graphs"]
        for model in models.values():
            model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                           cache_implementation="static", compile_config=compile_config("eager", False))
        return counters["stats"]["unique_graphs"] - before

    torch._dynamo.reset()
    counters.clear()
    try:
        first, second = graphs_of_one_round(), graphs_of_one_round()
        breaks = dict(counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert (first, second) == (2, 0), f"graphs compiled per round: {first}, then {second}"
    assert not breaks


def test_a_compiled_ttlora_moe_refuses_a_stale_expert_on_a_reused_static_cache():
    """Compiled, a TT-LoRA MoE cannot branch on the static cache's length (a tensor) without a graph break, so it
    holds the expert whenever one is held for the batch and asserts inside the graph that the cache is not empty.
    A compiled prefill on a reused (reset) cache while last prompt's experts are still held must raise, not decode
    the new prompt with the old experts; uncompiled, the same call reads the length and routes afresh."""
    import inspect

    from transformers import LlamaForCausalLM, StaticCache

    model = build("ttlora-moe")
    name = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
    ids, mask = left_padded_batch()
    cache = StaticCache(config=model.config, max_cache_len=32)
    with torch.no_grad():
        model(ids, attention_mask=mask, **{name: cache})  # eager prefill: routes, holds three experts
        routed = model.adapter_shared.sequence_experts.clone()
        assert len(set(routed.tolist())) == 3
        cache.reset()
        flipped = ids.flip(0), mask.flip(0)  # the same prompts in reverse order: each row's expert changes
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, backend="eager", fullgraph=True)
            with pytest.raises(RuntimeError, match="guessed wrong"):
                compiled(flipped[0], attention_mask=flipped[1], **{name: cache})
        finally:
            torch._dynamo.reset()
        cache.reset()
        model(flipped[0], attention_mask=flipped[1], **{name: cache})  # eager: the length says "empty"
    assert model.adapter_shared.sequence_experts.tolist() == routed.flip(0).tolist()


def cb_config() -> ContinuousBatchingConfig:
    # Small on purpose: the default sizes the paged KV cache from free memory (seconds to set up on a CPU).
    return ContinuousBatchingConfig(num_blocks=16, page_size=16, max_batch_tokens=64)


def generate_batch(model, prompt_list):
    """[new tokens] per prompt from transformers' continuous batching (the prompts packed into one row)."""
    out = model.generate_batch([p[0].tolist() for p in prompt_list], max_new_tokens=NEW, do_sample=False,
                               continuous_batching_config=cb_config())
    assert len(out) == len(prompt_list) and all(o.error is None for o in out.values()), out
    return [o.generated_tokens for o in out.values()]


@pytest.mark.parametrize("variant", TOKEN_LEVEL)
def test_continuous_batching_gives_generate_tokens_one_prompt_at_a_time(models, variant):
    model = get(models, variant)
    assert generate_batch(model, prompts()) == greedy_alone(model)


def test_continuous_batching_with_sliding_and_full_attention_layers():
    """Two layer types: continuous batching hands the model a dict of masks (one per type), not a tensor."""
    model = build("talklora", arch="qwen2", layer_types=["sliding_attention", "full_attention"],
                  use_sliding_window=True, sliding_window=4)
    assert generate_batch(model, prompts()) == greedy_alone(model)


def test_a_ttlora_moe_refuses_packed_sequences_naming_why_and_the_fix(models):
    model = get(models, "ttlora-moe")
    with pytest.raises(ValueError, match=r"init_continuous_batching.*SEQUENCE.*talklora-hub serve") as refused:
        model.generate_batch([p[0].tolist() for p in prompts()], max_new_tokens=NEW,
                             continuous_batching_config=cb_config())
    assert "num_experts=3" in str(refused.value) and "model.generate()" in str(refused.value)
    # a forward given packed sequences directly (e.g. a padding-free training batch) is refused too
    with pytest.raises(ValueError, match=r"`cu_seq_lens_q`.*2 packed sequences"):
        model(input_ids=torch.randint(3, 96, (1, 8)), cu_seq_lens_q=torch.tensor([0, 3, 8]))


@pytest.mark.parametrize("variant", ALL)
def test_a_compiled_forward_gives_the_eager_logits(models, variant):
    """Compiled, the layers run the training arithmetic in eval mode (no cache, TalkLoRA's M applied to the codes
    instead of folded into B): the same function, summed in another order, so equal within float rounding."""
    model = get(models, variant)
    ids, mask = left_padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, backend="eager", fullgraph=True)
            got = compiled(ids, attention_mask=mask).logits
        finally:
            torch._dynamo.reset()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
