"""Token routing for the expert mixtures: softmax / top-k weights, the load-balancing loss, the dispatch
that computes each expert only on its own tokens, and the recorder that makes routing observable.

Part of the bundle that travels inside every saved model: imports only torch and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

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


class ExpertDispatch:
    """Top-k routing laid out for batched expert compute: the (token, expert) pairs grouped by expert
    into an (E, C) grid, C the busiest expert's token count.

    Two grouped matmuls over (E, C, .) then cost about k/E of the dense ones when routing is balanced,
    with no Python loop over experts. Padding slots point at token 0 with gate 0, so they add nothing.
    top_idx: (N, k) chosen experts; weights: (N, E) routing weights (zero off the chosen experts).
    """

    def __init__(self, top_idx: torch.Tensor, weights: torch.Tensor):
        num_tokens, k = top_idx.shape
        top_vals = weights.gather(1, top_idx)
        device = top_idx.device
        experts = top_idx.reshape(-1)
        order = torch.argsort(experts, stable=True)
        sorted_experts = experts[order]  # M = N * k (token, expert) pairs, grouped by expert
        counts = torch.bincount(experts, minlength=weights.shape[-1])
        self.num_experts, self.num_tokens = counts.numel(), num_tokens
        self.capacity = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slots = sorted_experts * self.capacity + torch.arange(experts.numel(), device=device) - starts[sorted_experts]
        size = self.num_experts * self.capacity
        tokens = torch.arange(num_tokens, device=device).repeat_interleave(k)[order]
        self.grid_tokens = torch.zeros(size, dtype=torch.long, device=device).index_copy(0, slots, tokens)
        self.grid_experts = torch.arange(self.num_experts, device=device).repeat_interleave(self.capacity)
        self.gates = top_vals.new_zeros(size).index_copy(0, slots, top_vals.reshape(-1)[order])

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, F) per-token rows -> (E, C, F) grid. An embedding lookup is torch's fastest row gather on CPU
        (x[idx] is ~2x slower), and its backward is a dense scatter-add."""
        return F.embedding(self.grid_tokens, rows).view(self.num_experts, self.capacity, -1)

    def gather_chunks(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, E, d) per-expert codes -> (E, C, d): each slot's own expert chunk of its token's code."""
        flat = codes.reshape(-1, codes.shape[-1])
        return flat.index_select(0, self.grid_tokens * codes.shape[1] + self.grid_experts).view(
            self.num_experts, self.capacity, -1)

    def gate(self, grid: torch.Tensor) -> torch.Tensor:
        """Scales each (E, C, F) row by its routing weight (0 on padding)."""
        return grid * self.gates.view(self.num_experts, self.capacity, 1).to(grid.dtype)

    def combine(self, grid: torch.Tensor) -> torch.Tensor:
        """(E, C, F) gated expert outputs -> (N, F), each token's outputs summed over its k experts."""
        rows = grid.reshape(-1, grid.shape[-1])
        return rows.new_zeros(self.num_tokens, rows.shape[-1]).index_add(0, self.grid_tokens, rows)


def grouped_down(grid: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """grid (E, C, D_in) through each expert's rows of a down-projection (r, D_in) -> (E, C, d)."""
    num_experts = grid.shape[0]
    return torch.bmm(grid, matrix.view(num_experts, -1, matrix.shape[-1]).transpose(1, 2))


def grouped_up(grid: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """grid (E, C, d) through each expert's columns of an up-projection (D_out, r) -> (E, C, D_out).

    The expert blocks are copied to a contiguous (E, d, D_out) tensor first (D_out * r values): a bmm on
    the strided view, whose batch stride is only d, leaves MKL's fast path and runs ~8x slower on CPU.
    """
    num_experts = grid.shape[0]
    blocks = matrix.view(matrix.shape[0], num_experts, -1).permute(1, 2, 0).contiguous()
    return torch.bmm(grid, blocks)


@dataclass
class RoutingRecord:
    """One routed module's decisions in one forward pass.

    name: dotted module name; layer: transformer block index (-1 if none);
    logits: (batch * seq, E) router logits, rows in (batch, seq) row-major order (Mixtral's layout); in
    the forward's own record they keep their autograd graph, in a RoutingTrace they are detached;
    weights: (batch, seq, E), detached (they sum to 1 per token in eval mode).
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
    sequence_experts: (batch,) the expert serving each sequence in this forward (a TT-LoRA MoE), handed
    to the traces with the step's records.
    """

    def __init__(self):
        self.active = False
        self.keep_weights = False
        self.need_aux = False
        self.token_mask: Optional[torch.Tensor] = None
        self.sequence_experts: Optional[torch.Tensor] = None
        self.records: List[RoutingRecord] = []
        self.aux_terms: List[torch.Tensor] = []
        self.traces: list = []
        self.forwards = 0  # model forwards begun: per-forward state (the TT-LoRA MoE expert mask) keys on it

    def begin(self, keep_weights: bool, need_aux: bool, token_mask: Optional[torch.Tensor],
              sequence_experts: Optional[torch.Tensor] = None) -> None:
        self.active = True
        if not torch.compiler.is_compiling():
            # Only the eager fast path reads it. A compiled forward must not touch it: torch.compile treats a
            # module's int attributes as constants, so bumping it would recompile every decoding step until the
            # recompile limit, then fall back to eager for the rest of the run.
            self.forwards += 1
        self.keep_weights = keep_weights or bool(self.traces)
        self.need_aux = need_aux
        self.token_mask = token_mask
        self.sequence_experts = sequence_experts
        self.records, self.aux_terms = [], []

    @property
    def listening(self) -> bool:
        """Whether report() would keep anything (an aux-loss term or a routing record): a layer may skip building
        what it would report when not."""
        return self.need_aux or (self.active and self.keep_weights)

    def report(self, name: str, layer: int, lead_shape: torch.Size, logits: torch.Tensor, probs: torch.Tensor,
               weights: torch.Tensor, top_idx: Optional[torch.Tensor]) -> None:
        """logits, probs, weights: (N, E) with N = prod(lead_shape) tokens; top_idx: (N, k) or None."""
        if self.need_aux:
            mask = self.token_mask if self.token_mask is not None and self.token_mask.numel() == probs.shape[0] else None
            term = load_balancing_loss(probs, top_idx, mask)
            if self.active:
                self.aux_terms.append(term)
        if self.active and self.keep_weights:
            # Decoding calls this once per routed layer and token while a trace is on: ops are skipped where they
            # would change nothing (a 2-D logits tensor, weights that carry no autograd graph), each costs ~1.5 us.
            num_experts = logits.shape[-1]
            if logits.dim() != 2:
                logits = logits.reshape(-1, num_experts)
            if weights.requires_grad:
                weights = weights.detach()
            self.records.append(RoutingRecord(name, layer, logits, weights.reshape(*lead_shape, num_experts)))

    def end(self) -> Tuple[List[RoutingRecord], Optional[torch.Tensor]]:
        records, aux = self.records, None
        if self.aux_terms:
            aux = torch.stack(self.aux_terms).mean()
        if self.traces:
            detached = [RoutingRecord(r.name, r.layer, r.logits.detach(), r.weights) if r.logits.requires_grad else r
                        for r in records]
            experts = None if self.sequence_experts is None else self.sequence_experts.detach().clone()
            for trace in self.traces:
                trace.add_step(detached, experts)
        # need_aux and token_mask stay: a checkpointed recomputation must repeat the same arithmetic.
        self.active, self.records, self.aux_terms, self.sequence_experts = False, [], [], None
        return records, aux


class RoutingTrace:
    """Routing of every forward pass inside a `with model.trace_routing() as trace:` block, e.g. the
    prompt pass and each new token of generate() with a KV cache.

    steps: one list of RoutingRecord per forward pass, in order (empty lists for a model without token
    routing); experts: per forward pass, the (batch,) expert that served each sequence (a TT-LoRA MoE),
    else None.
    """

    def __init__(self):
        self.steps: List[List[RoutingRecord]] = []
        self.experts: List[Optional[torch.Tensor]] = []

    def add_step(self, records: List[RoutingRecord], sequence_experts: Optional[torch.Tensor] = None) -> None:
        self.steps.append(records)
        self.experts.append(sequence_experts)

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

    def sequence_experts(self) -> torch.Tensor:
        """(num_steps, batch) long: the expert that served each sequence in each forward pass of a TT-LoRA
        MoE (row 0 the prompt pass; with a KV cache every later row repeats it)."""
        if not self.experts or any(e is None for e in self.experts):
            raise ValueError("the trace holds no per-sequence experts: trace a TT-LoRA MoE (method='ttlora', "
                             "num_experts > 1) and run a forward pass or generate() inside the `with` block.")
        return torch.stack(self.experts)
