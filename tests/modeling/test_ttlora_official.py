"""TT-LoRA against the official TT-LoRA code's conventions (lanl/TTLoRAMoE, TTLoRAWrapper_utils.py) and
the digit order of the contraction.

The official contraction views x (B, S, D_in) as (B, S, m_K, ..., m_1): the LAST axis, the fastest-varying
digit of the flattened input index, is m_1, and its first core contracts that axis. So

    input index   i = sum_t i_t * prod_{s<t} m_s          (digit of input core 1 least significant)

Each output core then appends its mode as a new LAST axis before the final flatten, so the digit of the
first output core is the MOST significant:

    output index  j = sum_l j_l * prod_{s>l} n_s          (n_l: the mode size of output core l, in core order)

In the official configs the output cores' sizes are the paper's n factors reversed (Llama-3.2-1B q_proj:
tt_shape [16,8,4,4, 4,4,8,16] for m = n = [16,8,4,4]); "n_l in core order" above means those sizes.
"""

import itertools
import math

import torch

from talklora_hub.modeling import AdapterSettings
from talklora_hub.modeling.adapter_base import SharedAdapterState
from talklora_hub.modeling.adapter_ttlora import TTLoRALinear, tt_contract, tt_reconstruct

IN_FACTORS, OUT_FACTORS = [2, 3, 4], [3, 5]  # distinct sizes, so any digit-order mix-up changes the result


def _random_cores(sizes, rank=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ranks = [1] + [rank] * (len(sizes) - 1) + [1]
    return [torch.randn(ranks[t], s, ranks[t + 1], generator=gen, dtype=torch.float64) for t, s in enumerate(sizes)]


def _naive_official_delta_weight(cores, m, n):
    """ΔW (D_out, D_in) entry by entry, with the official digit convention spelled out as arithmetic:
    i = sum_t i_t prod_{s<t} m_s (input core 1 least significant), j = sum_l j_l prod_{s>l} n_s
    (output core 1 most significant)."""
    d_in, d_out = math.prod(m), math.prod(n)
    delta = torch.zeros(d_out, d_in, dtype=cores[0].dtype)
    for in_digits in itertools.product(*[range(s) for s in m]):
        i = sum(d * math.prod(m[:t]) for t, d in enumerate(in_digits))
        for out_digits in itertools.product(*[range(s) for s in n]):
            j = sum(d * math.prod(n[l + 1:]) for l, d in enumerate(out_digits))
            chain = torch.ones(1, 1, dtype=cores[0].dtype)
            for core, digit in zip(cores, in_digits + out_digits):
                chain = chain @ core[:, digit, :]
            delta[j, i] = chain.item()
    return delta


def _official_style_contract(x, cores, m, n):
    """The official contraction's structure: view x as (B, S, m_K..m_1), put a rank axis in front, and let each
    input core eat the last axis; each output core then adds its mode as a new last axis."""
    b, s, _ = x.shape
    state = x.reshape(b, s, *m[::-1]).unsqueeze(1)  # (B, r_0=1, S, m_K, ..., m_1)
    for core in cores[:len(m)]:
        state = torch.einsum("br...m,rmp->bp...", state, core)
    for core in cores[len(m):]:
        state = torch.einsum("br...,rnp->bp...n", state, core)
    return state.reshape(b, s, -1)


def test_official_oracles_agree_with_each_other():
    cores = _random_cores(IN_FACTORS + OUT_FACTORS)
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    full = _naive_official_delta_weight(cores, IN_FACTORS, OUT_FACTORS)
    torch.testing.assert_close(_official_style_contract(x, cores, IN_FACTORS, OUT_FACTORS), x @ full.T)
    from talklora_hub.testing.oracles import tt_delta_weight_by_digits

    torch.testing.assert_close(tt_delta_weight_by_digits(cores, IN_FACTORS, OUT_FACTORS), full)


def test_tt_contract_and_reconstruct_follow_the_official_digit_order():
    cores = _random_cores(IN_FACTORS + OUT_FACTORS, seed=1)
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    expected = _naive_official_delta_weight(cores, IN_FACTORS, OUT_FACTORS)
    torch.testing.assert_close(tt_reconstruct(cores, IN_FACTORS, OUT_FACTORS), expected, rtol=1e-12, atol=1e-12)
    got = tt_contract(x.reshape(1, 6, 24), [c[None] for c in cores], IN_FACTORS, OUT_FACTORS).reshape(2, 3, 15)
    torch.testing.assert_close(got, x @ expected.T, rtol=1e-12, atol=1e-12)


def test_ttlora_layer_with_official_cores_computes_the_official_function():
    """Cores trained by the official code, copied into our layer, give the official output (alpha * ΔW x)."""
    settings = AdapterSettings(method="ttlora", tt_rank=3, tt_alpha=16.0)
    base = torch.nn.Linear(24, 15, bias=False).double()
    layer = TTLoRALinear(base, "layers.0.q_proj", settings, SharedAdapterState(), IN_FACTORS, OUT_FACTORS)
    cores = _random_cores(IN_FACTORS + OUT_FACTORS, seed=2)
    with torch.no_grad():
        for param, core in zip(layer.tt_cores, cores):
            param.copy_(core[None])
    x = torch.randn(2, 4, 24, dtype=torch.float64)
    official = 16.0 * _official_style_contract(x, cores, IN_FACTORS, OUT_FACTORS)
    torch.testing.assert_close(layer.delta(x), official, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x), base(x) + official, rtol=1e-12, atol=1e-12)
    expected_weight = 16.0 * _naive_official_delta_weight(cores, IN_FACTORS, OUT_FACTORS)
    torch.testing.assert_close(layer.delta_weight(), expected_weight)


def test_multi_expert_contraction_follows_the_official_order_per_sequence():
    """The MoE path (a different train per batch row) uses the same order as the shared one."""
    trains = [_random_cores(IN_FACTORS + OUT_FACTORS, seed=s) for s in (3, 4)]
    stacked = [torch.stack([trains[0][t], trains[1][t]]) for t in range(len(trains[0]))]
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    got = tt_contract(x, stacked, IN_FACTORS, OUT_FACTORS)
    for b in range(2):
        torch.testing.assert_close(got[b], _official_style_contract(x[b:b + 1], trains[b], IN_FACTORS, OUT_FACTORS)[0])
