"""Token routing for the expert mixtures: softmax / top-k weights, the load-balancing loss, the sparse
combine that skips unselected experts, and the recorder that makes routing observable.

Part of the bundle that travels inside every saved model: imports only torch and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F


def route(logits: torch.Tensor, top_k: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Turns router logits into routing weights.

    logits: (N, E). Returns probs (N, E) fp32 softmax; weights (N, E) fp32, equal to probs when dense
    (top_k None or E), else the top-k probs renormalised to sum to 1 and zero elsewhere (Mixtral's
    rule); top_idx (N, k) long, or None when dense.
    """
    probs = logits.float().softmax(dim=-1)
    num_experts = probs.shape[-1]
    if top_k is None or top_k >= num_experts:
        return probs, probs, None
    top_vals, top_idx = probs.topk(top_k, dim=-1)
    top_vals = top_vals / top_vals.sum(dim=-1, keepdim=True)
    weights = torch.zeros_like(probs).scatter(-1, top_idx, top_vals)
    return probs, weights, top_idx


def jitter(x: torch.Tensor, noise: float, training: bool) -> torch.Tensor:
    """Multiplicative uniform noise in [1 - noise, 1 + noise] on the router input while training."""
    if not training or noise <= 0:
        return x
    return x * torch.empty_like(x).uniform_(1.0 - noise, 1.0 + noise)


def load_balancing_loss(probs: torch.Tensor, top_idx: Optional[torch.Tensor],
                        token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Switch/Mixtral load-balancing loss: E * sum_i f_i * P_i.

    probs: (N, E); top_idx: (N, k) selected experts (None for dense routing: the top-1 is used);
    token_mask: (N,) bool, True for real tokens. f_i is the share of selections going to expert i,
    P_i the mean probability of expert i; the loss is 1.0 at a perfectly uniform router.
    """
    num_experts = probs.shape[-1]
    if top_idx is None:
        top_idx = probs.argmax(dim=-1, keepdim=True)
    chosen = F.one_hot(top_idx, num_experts).float().sum(dim=1) / top_idx.shape[-1]  # (N, E)
    if token_mask is not None:
        keep = token_mask.reshape(-1).to(probs.device)
        probs, chosen = probs[keep], chosen[keep]
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    return num_experts * (chosen.mean(dim=0) * probs.mean(dim=0)).sum()


def sparse_combine(expert_codes: Callable[[int, torch.Tensor], torch.Tensor], weights: torch.Tensor,
                   top_idx: torch.Tensor, bank: torch.Tensor, expert_rank: int) -> torch.Tensor:
    """Sum of the selected experts' outputs, computing each expert only on the tokens routed to it.

    expert_codes(e, tokens) -> (n_e, d): expert e's low-rank code for those tokens;
    weights: (N, E); top_idx: (N, k); bank: (D_out, E*d), expert e owns columns [e*d, (e+1)*d).
    Returns (N, D_out). The Python loop runs over experts, not tokens: E small matmuls on n_e rows
    instead of one dense matmul on all N rows, which is what makes top-k cheaper than dense.
    """
    num_tokens, num_experts = weights.shape
    out = bank.new_zeros(num_tokens, bank.shape[0])
    selected = torch.zeros(num_tokens, num_experts, dtype=torch.bool, device=weights.device)
    selected.scatter_(1, top_idx, True)
    for e in range(num_experts):
        tokens = selected[:, e].nonzero().squeeze(-1)
        if tokens.numel() == 0:
            continue
        code = expert_codes(e, tokens) * weights[tokens, e].unsqueeze(-1).to(bank.dtype)
        out.index_add_(0, tokens, F.linear(code, bank[:, e * expert_rank:(e + 1) * expert_rank]))
    return out


@dataclass
class RoutingRecord:
    """One routed module's decisions in one forward pass.

    name: dotted module name; layer: transformer block index (-1 if none);
    logits / weights: (batch, seq, E) (weights sum to 1 per token in eval mode).
    """

    name: str
    layer: int
    logits: torch.Tensor
    weights: torch.Tensor


class RoutingRecorder:
    """Collects what routed layers decide during one model forward.

    The model opens a forward with begin() and closes it with end(); layers call report(). Outside
    a forward (e.g. when gradient checkpointing recomputes a layer in backward) nothing is recorded,
    so nothing is counted twice; the aux-loss arithmetic still runs there (and is discarded) because
    checkpointing requires the recomputation to save exactly the tensors the forward saved.
    """

    def __init__(self):
        self.active = False
        self.keep_weights = False
        self.need_aux = False
        self.token_mask: Optional[torch.Tensor] = None
        self.records: List[RoutingRecord] = []
        self.aux_terms: List[torch.Tensor] = []
        self.traces: list = []

    def begin(self, keep_weights: bool, need_aux: bool, token_mask: Optional[torch.Tensor]) -> None:
        self.active = True
        self.keep_weights = keep_weights or bool(self.traces)
        self.need_aux = need_aux
        self.token_mask = token_mask
        self.records, self.aux_terms = [], []

    def report(self, name: str, layer: int, lead_shape: torch.Size, logits: torch.Tensor, probs: torch.Tensor,
               weights: torch.Tensor, top_idx: Optional[torch.Tensor]) -> None:
        if self.need_aux:
            mask = self.token_mask if self.token_mask is not None and self.token_mask.numel() == probs.shape[0] else None
            term = load_balancing_loss(probs, top_idx, mask)
            if self.active:
                self.aux_terms.append(term)
        if self.active and self.keep_weights:
            num_experts = logits.shape[-1]
            self.records.append(RoutingRecord(name, layer, logits.detach().reshape(*lead_shape, num_experts),
                                              weights.detach().reshape(*lead_shape, num_experts)))

    def end(self) -> Tuple[List[RoutingRecord], Optional[torch.Tensor]]:
        records, aux = self.records, None
        if self.aux_terms:
            aux = torch.stack(self.aux_terms).mean()
        for trace in self.traces:
            trace.add_step(records)
        # need_aux and token_mask stay: a checkpointed recomputation must repeat the same arithmetic.
        self.active, self.records, self.aux_terms = False, [], []
        return records, aux


class RoutingTrace:
    """Routing of every forward pass inside a `with model.trace_routing() as trace:` block, e.g. the
    prompt pass and each new token of generate() with a KV cache.

    steps: one list of RoutingRecord per forward pass, in order.
    """

    def __init__(self):
        self.steps: List[List[RoutingRecord]] = []

    def add_step(self, records: List[RoutingRecord]) -> None:
        self.steps.append(records)

    @property
    def module_names(self) -> List[str]:
        return [r.name for r in self.steps[0]] if self.steps else []

    @property
    def layers(self) -> List[int]:
        return [r.layer for r in self.steps[0]] if self.steps else []

    def weights(self) -> torch.Tensor:
        """(num_modules, batch, total_tokens, E): all steps concatenated along the token axis, so
        position t is the t-th token the model read (prompt tokens first, then each generated one)."""
        if not self.steps:
            raise ValueError("the trace is empty: run a forward pass or generate() inside the `with` block.")
        per_module = zip(*[[r.weights for r in step] for step in self.steps])
        return torch.stack([torch.cat(chunks, dim=1) for chunks in per_module])
