"""Straightforward per-expert-loop implementations of the methods, written the way the papers' code is
structured (one small module per expert, a Python loop over experts, the talked code materialised).

They are independent oracles for the tests (the bundle's layers fold and batch the same math) and the
baseline that benchmarks/ measures the batched layers against. TT-LoRA's oracle builds delta W entry by
entry from its digits, in the official code's digit order. Not used by the models themselves.
"""

from __future__ import annotations

import itertools
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..modeling.adapter_moelora import MoELoRALinear
from ..modeling.adapter_talklora import TalkLoRALinear


class LoopTalkLoRA(nn.Module):
    """TalkLoRA update with one module per expert (the official code's structure).

    x (..., D_in) -> delta (..., D_out):
        z_i = A_i x;  z~_f = sum_e T[f, e] z_e;  g = softmax(R [z~_1; ...; z~_E]);
        delta = s * sum_i g_i B_i M_i z_i.
    talk=False drops the Talking Module (the router reads z itself): the no-talk variant.
    """

    def __init__(self, in_features: int, out_features: int, r: int, num_experts: int, scaling: float = 1.0,
                 talk: bool = True):
        super().__init__()
        d = r // num_experts
        self.down = nn.ModuleList(nn.Linear(in_features, d, bias=False) for _ in range(num_experts))
        self.maps = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(num_experts))
        self.up = nn.ModuleList(nn.Linear(d, out_features, bias=False) for _ in range(num_experts))
        self.talk = nn.Linear(num_experts, num_experts, bias=False) if talk else None
        self.router = nn.Linear(r, num_experts, bias=False)
        self.scaling = scaling

    def forward(self, x: torch.Tensor, top_k: Optional[int] = None) -> torch.Tensor:
        codes = [down(x) for down in self.down]  # E x (..., d)
        stacked = torch.stack(codes, dim=-2)  # (..., E, d)
        if self.talk is not None:
            stacked = torch.einsum("fe,...ed->...fd", self.talk.weight, stacked)
        gates = self.router(stacked.flatten(-2)).float().softmax(dim=-1)
        if top_k is not None and top_k < gates.shape[-1]:
            vals, idx = gates.topk(top_k, dim=-1)
            gates = torch.zeros_like(gates).scatter(-1, idx, vals / vals.sum(-1, keepdim=True))
        out = 0
        for i, (code, m, up) in enumerate(zip(codes, self.maps, self.up)):
            out = out + gates[..., i:i + 1].to(x.dtype) * up(m(code))
        return out * self.scaling

    @classmethod
    @torch.no_grad()
    def from_layer(cls, layer: TalkLoRALinear, talk: bool = True) -> "LoopTalkLoRA":
        """Copies a bundle TalkLoRA layer's tensors into the per-expert structure."""
        E, d = layer.num_experts, layer.expert_rank
        ref = cls(layer.in_features, layer.out_features, E * d, E, layer.scaling, talk=talk)
        ref.to(layer.lora_A.dtype)
        bank = layer.expert_bank
        for i in range(E):
            ref.down[i].weight.copy_(layer.lora_A[i * d:(i + 1) * d])
            ref.maps[i].weight.copy_(layer.expert_maps[i])
            ref.up[i].weight.copy_(bank[:, i * d:(i + 1) * d])
        if talk:
            ref.talk.weight.copy_(layer.talk)
        ref.router.weight.copy_(layer.router_weight)
        return ref


class LoopMoELoRA(nn.Module):
    """MoELoRA update, per-expert loop: g = softmax(R_x x); delta = s * sum_i g_i B_i A_i x."""

    def __init__(self, in_features: int, out_features: int, r: int, num_experts: int, scaling: float = 1.0):
        super().__init__()
        d = r // num_experts
        self.down = nn.ModuleList(nn.Linear(in_features, d, bias=False) for _ in range(num_experts))
        self.up = nn.ModuleList(nn.Linear(d, out_features, bias=False) for _ in range(num_experts))
        self.router = nn.Linear(in_features, num_experts, bias=False)
        self.scaling = scaling

    def forward(self, x: torch.Tensor, top_k: Optional[int] = None) -> torch.Tensor:
        gates = self.router(x).float().softmax(dim=-1)
        if top_k is not None and top_k < gates.shape[-1]:
            vals, idx = gates.topk(top_k, dim=-1)
            gates = torch.zeros_like(gates).scatter(-1, idx, vals / vals.sum(-1, keepdim=True))
        out = 0
        for i, (down, up) in enumerate(zip(self.down, self.up)):
            out = out + gates[..., i:i + 1].to(x.dtype) * up(down(x))
        return out * self.scaling

    @classmethod
    @torch.no_grad()
    def from_layer(cls, layer: MoELoRALinear) -> "LoopMoELoRA":
        E, d = layer.num_experts, layer.expert_rank
        ref = cls(layer.in_features, layer.out_features, E * d, E, layer.scaling)
        ref.to(layer.lora_A.dtype)
        bank = layer.expert_bank
        for i in range(E):
            ref.down[i].weight.copy_(layer.lora_A[i * d:(i + 1) * d])
            ref.up[i].weight.copy_(bank[:, i * d:(i + 1) * d])
        ref.router.weight.copy_(layer.router_weight)
        return ref


def no_talk_reference(layer: TalkLoRALinear, x: torch.Tensor) -> torch.Tensor:
    """The no-talk variant computed directly: router on the raw code z (no T), same experts."""
    return LoopTalkLoRA.from_layer(layer, talk=False)(x)


def tt_delta_weight_by_digits(cores: Sequence[torch.Tensor], input_factors: List[int],
                              output_factors: List[int]) -> torch.Tensor:
    """TT-LoRA's delta W (D_out, D_in) built entry by entry from its digits, the official code's convention:

        delta W[j, i] = G_1[:, i_1, :] ... G_K[:, i_K, :] G_{K+1}[:, j_1, :] ... G_{K+L}[:, j_L, :],
        i = sum_t i_t * prod_{s<t} m_s (input core 1 least significant),
        j = sum_l j_l * prod_{s>l} n_s (output core K+1 most significant).

    cores[t]: (r_{t-1}, s_t, r_t), boundary ranks 1. One Python loop per entry: for small factors only
    (an oracle for adapter_ttlora.tt_contract / tt_reconstruct, which must compute the same matrix).
    """
    d_in, d_out = math.prod(input_factors), math.prod(output_factors)
    delta = torch.zeros(d_out, d_in, dtype=cores[0].dtype)
    in_strides = [math.prod(input_factors[:t]) for t in range(len(input_factors))]
    out_strides = [math.prod(output_factors[l + 1:]) for l in range(len(output_factors))]
    for in_digits in itertools.product(*(range(m) for m in input_factors)):
        i = sum(d * stride for d, stride in zip(in_digits, in_strides))
        for out_digits in itertools.product(*(range(n) for n in output_factors)):
            j = sum(d * stride for d, stride in zip(out_digits, out_strides))
            chain = cores[0][:, in_digits[0], :]
            for core, digit in zip(cores[1:], in_digits[1:] + out_digits):
                chain = chain @ core[:, digit, :]
            delta[j, i] = chain.squeeze()
    return delta
