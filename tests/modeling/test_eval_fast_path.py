"""Inferring (eval mode, no grad) every adapter layer adds its update into the base output through a fast path
(AdaptedLinear.infer_into: the method's inference plan of cached factors, one mm, one addmm_ into the base output;
TT-LoRA MoE masks the codes
of the unchosen experts with a mask shared for the whole forward). It must compute the general path's function
up to float rounding (the same logits, the same routing weights in a trace and in the outputs), serve exactly
where it should (not in training, with grad, under autocast, for top-k routing), and never read a stale cache:
not after an optimizer step, load_state_dict, an in-place edit, .to() or a dtype change, a train()/eval() switch,
or a change of the experts a TT-LoRA MoE serves."""

import pytest
import torch

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import AdaptedLinear, adapter_layers
from talklora_hub.modeling.adapter_lora import LoRALinear
from talklora_hub.modeling.adapter_moelora import MoELoRALinear
from talklora_hub.modeling.adapter_talklora import TalkLoRALinear
from talklora_hub.modeling.adapter_ttlora import TTLoRALinear

from .conftest import tiny_base

FAST = ["lora", "moelora", "talklora", "ttlora", "ttlora-moe"]
ROUTED = ["moelora", "talklora", "ttlora-moe"]


def _settings(method, **extra):
    values = {"r": 8, "lora_dropout": 0.0, **extra}
    if method == "ttlora-moe":
        return AdapterSettings(method="ttlora", num_experts=3, tt_rank=3, **values)
    if method == "talklora-top2":
        return AdapterSettings(method="talklora", num_experts_per_tok=2, **values)
    return AdapterSettings(method=method, **values)


def _model(method, arch="llama", seed=0, **extra):
    """Eval mode, B non-zero (so the update matters), every parameter nudged off its init."""
    model = TalkLoRAForCausalLM.from_base(tiny_base(arch), _settings(method, **extra))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in model.adapter_tensor_names():
            tensor = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
            if "bank" in name or "lora_B" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return model.eval()


def _fast(model, ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, **kwargs)


def _general(model, ids, **kwargs):
    """The general path: with grad enabled nothing is cached and delta() runs."""
    with torch.enable_grad():
        out = model(input_ids=ids, **kwargs)
    return out


def _close(actual, expected, scale_tol=3e-5):
    """Equal up to float rounding: the fast path sums in other orders (folded factors: (M A) x for M (A x), TT's
    boundary factors for the core-by-core contraction), ~1e-6 of the output's scale in fp32 through two layers;
    a stale cache or a wrong expert moves the output by the update itself, ~1e-1 of the scale here."""
    expected = expected.detach()
    torch.testing.assert_close(actual.detach(), expected, rtol=1e-5,
                               atol=scale_tol * max(float(expected.abs().max()), 1e-6))


@pytest.fixture
def spy(monkeypatch):
    """Records what every apply_plan_ returned (True: the fast path served that call; never called: no plan)."""
    calls = []
    for cls in (LoRALinear, MoELoRALinear, TalkLoRALinear, TTLoRALinear):
        original = cls.apply_plan_

        def recorded(self, *args, _original=original):
            done = _original(self, *args)
            calls.append(done)
            return done

        monkeypatch.setattr(cls, "apply_plan_", recorded)
    return calls


def _layer_count(model):
    return len(adapter_layers(model))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", FAST)
def test_the_fast_path_serves_every_layer_and_equals_the_general_path(method, arch, input_ids, spy):
    model = _model(method, arch)
    fast = _fast(model, input_ids).logits
    assert spy == [True] * _layer_count(model)
    spy.clear()
    general = _general(model, input_ids).logits
    assert spy == []  # grad enabled: never the fast path
    _close(fast, general)
    assert not torch.equal(fast, model.base(input_ids).logits * 0)  # the update is real


@pytest.mark.parametrize("method", FAST)
def test_the_fast_path_equals_the_training_mode_math(method, input_ids):
    """Train mode with dropout 0 (and the experts forced, where training adds router noise) is the same function."""
    model = _model(method)
    kwargs = {"sequence_experts": torch.tensor([2, 0])} if method == "ttlora-moe" else {}
    fast = _fast(model, input_ids, **kwargs).logits
    model.train()
    trained = model(input_ids=input_ids, **kwargs).logits
    model.eval()
    _close(fast, trained)


def test_top_k_routing_and_a_users_own_method_take_the_general_path(input_ids, spy):
    model = _model("talklora-top2")
    fast = _fast(model, input_ids).logits
    assert spy == []  # top-k dispatch has no inference plan
    assert all(layer.inference_plan(torch.float32) is None for layer in adapter_layers(model).values())
    _close(fast, _general(model, input_ids).logits)


@pytest.mark.parametrize("method", ROUTED)
def test_routing_trace_and_router_outputs_record_the_same_decisions(method, input_ids, spy):
    model = _model(method)
    with model.trace_routing() as fast_trace:
        fast = _fast(model, input_ids, output_router_logits=True)
    assert spy and all(spy)
    with model.trace_routing() as general_trace:
        general = _general(model, input_ids, output_router_logits=True)
    if method == "ttlora-moe":
        assert torch.equal(fast_trace.sequence_experts(), general_trace.sequence_experts())
        return
    _close(fast_trace.weights(), general_trace.weights())
    assert fast.router_module_names == general.router_module_names
    for mine, theirs in zip(fast.router_logits, general.router_logits):
        _close(mine, theirs)
    for mine, theirs in zip(fast.routing_weights, general.routing_weights):
        _close(mine, theirs)
    _close(fast.aux_loss, general.aux_loss)


@pytest.mark.parametrize("method", FAST)
def test_generation_gives_the_same_tokens_and_scores(method, input_ids, monkeypatch):
    model = _model(method)

    def generate():
        with torch.inference_mode():  # as bench_generate and serving call it: inference tensors, no versions
            return model.generate(input_ids, max_new_tokens=5, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True, pad_token_id=0)

    fast = generate()
    monkeypatch.setattr(AdaptedLinear, "infer_into", lambda self, x, result: False)
    general = generate()
    assert torch.equal(fast.sequences, general.sequences)
    for mine, theirs in zip(fast.scores, general.scores):
        _close(mine, theirs)


# The edits below grow the update to ~2x the output's scale (TT: x1.5 on each of ~6 cores), and the general path's
# own fp32 rounding with it (~1e-5 of the scale off an fp64 evaluation); a stale cache is off by the update.
STALE_TOL = 1e-4


def _fresh(model, ids):
    _close(_fast(model, ids).logits, _general(model, ids).logits, STALE_TOL)


@pytest.mark.parametrize("method", FAST)
def test_no_cache_is_stale_after_training_loading_editing_or_casting(method, input_ids, spy):
    model = _model(method)
    _fresh(model, input_ids)

    # train()/eval() and an optimizer step: training never takes the fast path, eval sees the new values
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    spy.clear()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    with torch.no_grad():
        model(input_ids=input_ids)  # train mode under no_grad: not inferring either
    assert spy == []
    optimizer.step()
    model.eval()
    _fresh(model, input_ids)
    assert spy and all(spy)

    # load_state_dict, in place and by assignment
    other = _model(method, seed=1).state_dict()
    model.load_state_dict(other)
    _fresh(model, input_ids)
    model.load_state_dict(_model(method, seed=2).state_dict(), assign=True)
    _fresh(model, input_ids)

    # an in-place edit of every adapter tensor by hand
    with torch.no_grad():
        for name in model.adapter_tensor_names():
            tensor = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
            tensor.mul_(1.5)
    _fresh(model, input_ids)

    # dtype changes and back; in bf16 both paths round a lot (TT's chains most): the fast one must be no further
    # from the fp64 function than the general one
    model.to(torch.float64)
    fast64, reference = _fast(model, input_ids).logits, _general(model, input_ids).logits.detach()
    assert fast64.dtype == torch.float64
    _close(fast64, reference, STALE_TOL)
    model.to(torch.bfloat16)
    fast16, general16 = _fast(model, input_ids).logits, _general(model, input_ids).logits.detach()
    assert fast16.dtype == torch.bfloat16
    fast_error, general_error = [float((out.double() - reference).abs().max()) for out in (fast16, general16)]
    assert fast_error <= 2 * general_error + 1e-3 * float(reference.abs().max()), (fast_error, general_error)
    model.to(torch.float32)
    _fresh(model, input_ids)


def test_the_tt_moe_expert_mask_follows_the_experts_of_every_forward(input_ids):
    model = _model("ttlora-moe")
    experts = torch.tensor([0, 1])
    for chosen in ([0, 1], [2, 2], [1, 0]):
        experts.copy_(torch.tensor(chosen))  # the same tensor object, changed in place between forwards
        fast = _fast(model, input_ids, sequence_experts=experts).logits
        _close(fast, _general(model, input_ids, sequence_experts=torch.tensor(chosen)).logits)
        for row, expert in enumerate(chosen):  # each row served by its own expert alone
            alone = _general(model, input_ids[row:row + 1], sequence_experts=torch.tensor([expert])).logits
            _close(fast[row:row + 1], alone)

    # layers called outside a model forward (no recorder.begin) still follow an in-place change
    shared = model.adapter_shared
    held = torch.tensor([1, 1])
    shared.sequence_experts = held
    with torch.no_grad():
        first = model.base(input_ids).logits
        held.fill_(2)
        second = model.base(input_ids).logits
    _close(first, _general(model, input_ids, sequence_experts=torch.tensor([1, 1])).logits)
    _close(second, _general(model, input_ids, sequence_experts=torch.tensor([2, 2])).logits)


def test_autocast_takes_the_general_path_and_a_disabled_adapter_is_the_base(input_ids, spy):
    model = _model("talklora")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(input_ids=input_ids).logits
    assert spy == []  # infer_into declined before any method's update ran
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        general = model(input_ids=input_ids).logits
    _close(mixed.float(), general.float(), scale_tol=1e-2)  # bf16 matmuls, cached folds vs not
    with torch.no_grad(), model.disable_adapter():
        disabled = model(input_ids=input_ids).logits
        base = model.base(input_ids).logits
    assert spy == []
    assert torch.equal(disabled, base)


def test_the_fast_path_leaves_its_input_untouched(input_ids):
    model = _model("talklora")
    layer = next(iter(adapter_layers(model).values()))
    x = torch.randn(2, 3, layer.in_features)
    kept = x.clone()
    with torch.no_grad():
        fast = layer(x)
    assert torch.equal(x, kept)
    with torch.enable_grad():
        _close(fast, layer(x))


@pytest.mark.parametrize("method", FAST)
def test_half_precision_on_a_cpu_computes_the_update_in_fp32(method, input_ids):
    """bf16 on a CPU, the fast path computes the update from cached fp32 copies of the factors (half-precision
    small products have no fast CPU kernel) and adds it into the bf16 output. The copies follow the parameters: an
    in-place edit changes the next forward exactly as the fresh model's forward."""
    model = _model(method).to(torch.bfloat16)
    layers = list(adapter_layers(model).values())
    assert all(layer.product_dtype(torch.bfloat16, "cpu") == torch.float32 for layer in layers)
    first = _fast(model, input_ids).logits
    plans = [value for layer in layers for key, (_, value) in layer.__dict__["_inference_cache"].items()
             if key is torch.float32]
    assert len(plans) == len(layers)  # one fp32 plan per layer
    assert all(factor.dtype == torch.float32 for plan in plans for factor in plan)
    assert first.dtype == torch.bfloat16
    with torch.no_grad():
        for name in model.adapter_tensor_names():
            tensor = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
            tensor.mul_(1.5)
    edited = _fast(model, input_ids).logits
    fresh = _model(method).to(torch.bfloat16)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(edited, _fast(fresh, input_ids).logits) and not torch.equal(edited, first)


def test_a_bf16_lora_layer_on_a_cpu_adds_its_fp32_update_into_the_bf16_output():
    """The arithmetic, exactly: bf16(W0 x in bf16 + (x A^T) B^T s computed in fp32 from the bf16 values)."""
    layer = adapter_layers(_model("lora")).popitem()[1].to(torch.bfloat16)
    x = torch.randn(3, layer.in_features).to(torch.bfloat16)
    with torch.no_grad():
        got = layer(x)
        base = torch.nn.functional.linear(x, layer.weight, layer.bias)
        update = (x.float() @ layer.lora_A.float().t()) @ layer.lora_B.float().t() * layer.scaling
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, (base.float() + update).to(torch.bfloat16))


def test_fp32_adapter_factors_beside_a_bf16_input_off_the_cpu_take_the_general_path(monkeypatch):
    """Where the products would run in bf16 (not on a CPU), fp32 adapter factors are never rounded down to bf16
    for the fast path: there is no bf16 plan, the layer returns False from infer_into (its output untouched), and
    delta() computes in the adapter's fp32."""
    for method in FAST:
        layer = adapter_layers(_model(method)).popitem()[1]
        assert layer.build_plan(torch.bfloat16) is None, method
        assert all(factor.dtype == torch.float32 for factor in layer.build_plan(torch.float32)), method
    monkeypatch.setattr(AdaptedLinear, "product_dtype", staticmethod(lambda dtype, device: dtype))  # a GPU's
    x = torch.randn(2, layer.in_features).to(torch.bfloat16)
    with torch.no_grad():
        out = torch.zeros(2, layer.out_features, dtype=torch.bfloat16)
        assert layer.infer_into(x, out) is False
        assert not out.any()


def test_layers_sharing_a_bank_share_one_transposed_copy_and_plans_are_contiguous(input_ids):
    """A TalkLoRA plan reads the shared bank as one contiguous B^T held once for all the layers of its projection
    type (not a copy per layer); every routed plan's factors are contiguous (the layout small products read
    fastest), and a changed bank gives every layer the new one."""
    model = _model("talklora")
    _fast(model, input_ids)
    layers = list(adapter_layers(model).values())
    by_bank = {}
    for layer in layers:
        plan = layer.inference_plan(torch.float32)
        assert all(factor.is_contiguous() for factor in plan)
        by_bank.setdefault(layer.bank_key, []).append(plan[2])
    assert len(by_bank) > 1 and all(len(ups) > 1 for ups in by_bank.values())
    for key, ups in by_bank.items():
        assert all(up is ups[0] for up in ups), key
        assert torch.equal(ups[0], model.adapter_shared.banks[key].t())
    with torch.no_grad():
        next(iter(model.adapter_shared.banks.values())).mul_(-1.0)
    _fresh(model, input_ids)
    moelora = _model("moelora")
    _fast(moelora, input_ids)
    assert all(factor.is_contiguous() for layer in adapter_layers(moelora).values()
               for factor in layer.inference_plan(torch.float32))
