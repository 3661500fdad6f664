"""TT-LoRA (arXiv 2504.21190): delta W as a tensor train of small cores, never built in the forward.

Cores G_t (r_{t-1}, s_t, r_t): first K over the input factors m_1..m_K (prod = D_in), then L over
the output factors n_1..n_L (prod = D_out, listed in core order); boundary ranks 1, inner rank tt_rank.

    delta W[j, i] = G_1[:, i_1, :] ... G_K[:, i_K, :] G_{K+1}[:, j_1, :] ... G_{K+L}[:, j_L, :]
    with  i = sum_t i_t * prod_{s<t} m_s   (input digit of core 1 the LEAST significant)
    and   j = sum_l j_l * prod_{s>l} n_s   (output digit of core K+1 the MOST significant),

h = W0 x + alpha * delta W x. This is the official TT-LoRA code's convention (lanl/TTLoRAMoE): it views x
as (..., m_K, ..., m_1) and its first core contracts the last, fastest-varying axis; each output core
appends its mode as a new last axis. So cores trained there compute the same function here, given the
same factor lists (its tt_shape = input factors + output factors in core order; e.g. Llama-3.2-1B q_proj
[16, 8, 4, 4] + [4, 4, 8, 16]). Several experts (a TT-LoRA MoE) stack their cores on a leading axis; the
model picks one expert per sequence.

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from .adapter_base import AdaptedLinear, is_fresh
from .fast_path import laid_out
from .adapter_settings import balanced_bins, config_error, prime_factors
from .methods import MethodSpec, register_method


def factorize(n: int, max_factor: int = 16) -> List[int]:
    """Splits n into about log_{max_factor}(n) balanced factors (e.g. 576 -> [6, 8, 12]).

    Primes are placed largest first into the currently smallest factor, which keeps factors close.
    """
    if n < 2:
        return [n]
    primes = prime_factors(n)
    count = min(len(primes), max(1, math.ceil(math.log(n) / math.log(max_factor))))
    bins = balanced_bins(primes, count)
    return sorted(b for b in bins if b > 1)


def tt_contract(x: torch.Tensor, cores: Sequence[torch.Tensor], input_factors: Sequence[int],
                output_factors: Sequence[int]) -> torch.Tensor:
    """delta W x for a batch of tensor trains, contracting x with the cores one by one.

    x: (B, N, D_in); cores[t]: (B, r_{t-1}, s_t, r_t), B = 1 to share one train across all rows.
    Returns (B, N, D_out). Digit order as in the module docstring (the official one): input core t takes
    digit i_t = (i // prod_{s<t} m_s) % m_t, so core 1 the fastest-varying one. Cost is O(N * D_in * r)
    for the first core and smaller after: delta W is never materialised.
    """
    num_in = len(input_factors)
    return contract_outputs(contract_inputs(x, cores[:num_in], input_factors), cores[num_in:])


def contract_inputs(x: torch.Tensor, cores: Sequence[torch.Tensor], input_factors: Sequence[int]) -> torch.Tensor:
    """x: (B, N, D_in) through the K input cores -> (B, N, r_K), the code at the train's input/output boundary."""
    batch, tokens, _ = x.shape
    num_in = len(input_factors)
    # (B, N, P, m_1, r_0 = 1): P = the digits not yet contracted (more significant), m_1 the fastest axis.
    state = x.reshape(batch, tokens, -1, input_factors[0], 1)
    for t in range(num_in):
        core = cores[t]
        state = torch.einsum("bnpia,baic->bnpc", state, core)  # (B, N, P, r_t)
        if t + 1 < num_in:
            # The next digit is now the least significant of what is left of the input index.
            state = state.reshape(batch, tokens, -1, input_factors[t + 1], core.shape[-1])
    return state.reshape(batch, tokens, -1)


def contract_outputs(code: torch.Tensor, cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """code: (B, N, r_K) through the L output cores -> (B, N, D_out)."""
    batch, tokens, _ = code.shape
    out = code.reshape(batch, tokens, -1, 1)  # (B, N, r_K, Q=1)
    for core in cores:
        out = torch.einsum("bnaq,bajc->bncqj", out, core)  # output index j_t appended least significant
        out = out.reshape(batch, tokens, core.shape[-1], -1)
    return out.reshape(batch, tokens, -1)


def boundary_factors(cores: Sequence[torch.Tensor], input_factors: Sequence[int]) -> tuple:
    """delta W = up @ down, split at the train's input/output boundary (rank r_K = tt_rank): down (B, D_in, r_K)
    the input cores contracted with the identity, up (B, r_K, D_out) the output cores'. Then delta W x is two
    small matmuls, x @ down @ up: the same function as tt_contract (summed in another order), at the cost of a
    rank-r_K LoRA; a product of parameters only, so it is computed once while inferring."""
    num_in = len(input_factors)
    batch, d_in, rank = cores[0].shape[0], math.prod(input_factors), cores[num_in].shape[1]
    eye = torch.eye(d_in, dtype=cores[0].dtype, device=cores[0].device).expand(batch, d_in, d_in)
    down = contract_inputs(eye, cores[:num_in], input_factors)  # (B, D_in, r_K)
    eye = torch.eye(rank, dtype=cores[0].dtype, device=cores[0].device).expand(batch, rank, rank)
    return down, contract_outputs(eye, cores[num_in:])  # (B, r_K, D_out)


def tt_reconstruct(cores: Sequence[torch.Tensor], input_factors: Sequence[int],
                   output_factors: Sequence[int]) -> torch.Tensor:
    """The full delta W (D_out, D_in) of one tensor train; cores[t]: (r_{t-1}, s_t, r_t).

    Chains the cores left to right into a (prod s_t, 1) column whose row index is (i_1..i_K, j_1..j_L)
    in row-major order; the input digits are then reversed so that i_1 is the least significant, the
    order tt_contract (and the official code) uses.
    """
    chain = cores[0].reshape(-1, cores[0].shape[-1])  # (s_1, r_1)
    for core in cores[1:]:
        chain = (chain @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    d_in, d_out = math.prod(input_factors), math.prod(output_factors)
    num_in = len(input_factors)
    digits = chain.reshape(*input_factors, d_out).permute(*range(num_in - 1, -1, -1), num_in)
    return digits.reshape(d_in, d_out).T


class TTLoRALinear(AdaptedLinear):
    """tt_cores[t]: (E, r_{t-1}, s_t, r_t) for the E experts (E = 1 for a single TT-LoRA).
    Init: each core kaiming-uniform then divided by its Frobenius norm (delta W != 0 at init)."""

    method = "ttlora"

    def __init__(self, base, name, settings, shared, input_factors: Optional[List[int]] = None,
                 output_factors: Optional[List[int]] = None):
        super().__init__(base, name, settings, shared)
        self.input_factors = self._checked_factors(input_factors, self.in_features, "input", 0)
        self.output_factors = self._checked_factors(output_factors, self.out_features, "output", 1)
        sizes = self.input_factors + self.output_factors
        ranks = [1] + [settings.tt_rank] * (len(sizes) - 1) + [1]
        self.tt_cores = nn.ParameterList(
            self.new_parameter(self.num_experts, ranks[t], s, ranks[t + 1]) for t, s in enumerate(sizes))
        self.scaling = settings.tt_alpha
        self.reset_adapter_parameters()

    def _checked_factors(self, factors, dim: int, side: str, position: int) -> List[int]:
        if factors is None:
            return factorize(dim)
        if math.prod(factors) != dim:
            leaf = self.module_name.rsplit(".", 1)[-1]
            raise config_error(f"tt_factors[{leaf!r}][{position}]",
                               f"({side} factors) must multiply to the layer's {side} dimension {dim}",
                               list(factors), f"use factors whose product is {dim}, e.g. {factorize(dim)}.")
        return list(factors)

    @torch.no_grad()
    def reset_adapter_parameters(self) -> None:
        for core in self.tt_cores:
            if not is_fresh(core):
                continue
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(core[e], a=math.sqrt(5))
                core[e].div_(core[e].norm())

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = self.dropout(self.input_dropout, x)
        chosen = None
        if self.num_experts > 1:
            chosen = self.shared.sequence_experts
            if chosen is None:
                raise RuntimeError(f"{self.module_name}: a TT-LoRA MoE layer needs the model to choose one expert per "
                                   "sequence first; call the model, not the layer.")
        rows = x.reshape(1 if chosen is None else chosen.shape[0], -1, self.in_features)
        if self.inferring:  # delta W never changes here: two small matmuls through its boundary factors
            down, up = self.expert_factors()
            if chosen is not None:
                down, up = down[chosen], up[chosen]  # (B, D_in, r_K), (B, r_K, D_out): each sequence its expert
            out = torch.matmul(torch.matmul(rows, down), up)
        else:
            # (1, ...) broadcast over every row, or (B, ...): each sequence its expert
            cores = list(self.tt_cores) if chosen is None else [core[chosen] for core in self.tt_cores]
            out = tt_contract(rows, cores, self.input_factors, self.output_factors)
        return self.scaled(out).reshape(*lead, self.out_features)

    def core_tensors(self) -> list:
        """The cores in order, read from the ParameterList's own dict (held as a plain attribute; the list keeps
        it, updated in place by load_state_dict and .to()): iterating the list, or even reaching it through
        Module.__getattr__, costs more than a decoding token's TT arithmetic (~8 us for six cores)."""
        store = self.__dict__.get("_core_store")
        if store is None:
            store = self.__dict__["_core_store"] = self.tt_cores._parameters
        return list(store.values())

    def plan_sources(self) -> list:
        return self.core_tensors()

    def build_plan(self, dtype: torch.dtype):
        """The boundary factors of every expert side by side (_stacked_factors, contiguous already), in `dtype`."""
        factors = tuple(laid_out(factor, dtype) for factor in self._stacked_factors())
        return None if any(f is None for f in factors) else factors

    def apply_plan_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        """out (N, D_out) += alpha * delta W x in place, through the boundary factors of every expert side by side:
        one mm gives each token the codes of all E experts (N, E * r_K); a TT-LoRA MoE zeroes the codes of the
        experts its sequence was not routed to (one masked_fill_ with the (B, 1, E, 1) mask the whole model shares
        for this forward, instead of gathering each layer's chosen factors per call), and one addmm_ applies the
        stacked up-factors. Filling with 0 (not multiplying by a 0/1 mask) keeps an unchosen expert's inf or nan out
        of the sum."""
        down, up = plan
        code = torch.mm(flat, down)  # (N, E * r_K)
        if self.num_experts > 1:
            unchosen = self.shared.unchosen_experts(self.num_experts, code.device)  # (B, 1, E, 1)
            if unchosen is None or flat.shape[0] % unchosen.shape[0]:
                return False  # delta() explains what is missing
            code.view(unchosen.shape[0], -1, self.num_experts, code.shape[-1] // self.num_experts).masked_fill_(
                unchosen, 0.0)
        self.add_product_(out, code, up, self.scaling)
        return True

    def expert_factors(self) -> tuple:
        """Inferring: the boundary factors per expert, down (E, D_in, r_K) and up (E, r_K, D_out), as views of the
        inference plan in the cores' own dtype (the fast path's plan where it computes in that dtype, so a layer then
        holds a single copy of them)."""
        down, up = self.inference_plan(self.adapter_dtype)
        experts = self.num_experts
        return (down.view(self.in_features, experts, -1).permute(1, 0, 2),
                up.view(experts, -1, self.out_features))

    def _stacked_factors(self) -> tuple:
        """The boundary factors of all E experts side by side: down (D_in, E * r_K), expert e in columns
        [e * r_K, (e + 1) * r_K); up (E * r_K, D_out), expert e in the same rows."""
        down, up = boundary_factors(self.tt_cores, self.input_factors)  # (E, D_in, r_K), (E, r_K, D_out)
        experts, d_in, rank = down.shape
        return down.permute(1, 0, 2).reshape(d_in, experts * rank), up.reshape(experts * rank, -1)

    def delta_weight(self, expert: int = 0) -> torch.Tensor:
        """alpha * delta W (D_out, D_in) of one expert, rebuilt from its cores."""
        cores = [core[expert] for core in self.tt_cores]
        return tt_reconstruct(cores, self.input_factors, self.output_factors) * self.scaling


def _factor_arguments(name: str, settings) -> dict:
    """The hand-set tensor-train factors (settings.tt_factors) whose key names this target, if any."""
    factors = settings.tt_factors or {}
    pair = next((factors[key] for key in factors if name == key or name.endswith("." + key)), None)
    return {"input_factors": pair[0], "output_factors": pair[1]} if pair else {}


register_method(MethodSpec(
    name="ttlora", label="TT-LoRA", layer_class=TTLoRALinear, routing="sequence", reference="arXiv 2504.21190",
    description="a tensor-train update; with E > 1 frozen experts, a TT-LoRA MoE routed top-1 per sequence",
    experts_split_rank=False, layer_arguments=_factor_arguments,
    card_fields=("tt_rank", "tt_alpha", "tt_factors", "router_noise")))
