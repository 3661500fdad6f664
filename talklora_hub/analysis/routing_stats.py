"""Routing statistics: how the experts share the work, per module, per layer and per token.

The one home of these definitions: training logs (talklora_hub.train.routing_health), model cards and
the routing Space all call these functions. Torch and the standard library only, so the Space carries a
copy. Shapes: routing weights are (..., E), each row summing to 1 (E experts); a mask of real tokens has
the leading shape (...) and drops padding.

Definitions: an expert's *load* is its mean routing weight over tokens (the loads sum to 1); a token's
*entropy* is -sum_e g_e log g_e in nats (0: one expert, ln E: uniform); the *load CV* is the load's
coefficient of variation (0: balanced); an expert is *dead* when its load is below a threshold (an
absolute share of the routing mass, 2% by default).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch

from .module_names import group_by_layer

DEAD_THRESHOLD = 0.02


def _flat(weights: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(..., E) -> (T, E) float32, keeping only real tokens (mask: (...), same leading shape)."""
    flat = weights.reshape(-1, weights.shape[-1]).float()
    if mask is not None:
        flat = flat[mask.reshape(-1).bool().to(flat.device)]
    return flat


def expert_load(weights: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(E,) mean routing weight per expert over the (real) tokens of weights (..., E); zeros if none."""
    flat = _flat(weights, mask)
    return flat.mean(dim=0) if flat.numel() else torch.zeros(weights.shape[-1])


def token_entropy(weights: torch.Tensor) -> torch.Tensor:
    """(...,) per-token routing entropy -sum g log g in nats of weights (..., E). Zero weights add 0
    (clamped inside the log only, so a one-hot row has entropy exactly 0)."""
    g = weights.float()
    return -(g * g.clamp_min(1e-12).log()).sum(dim=-1)


def routing_sums(weights: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, float, int]:
    """What an accumulator adds up over batches: (load sum (E,), entropy sum, token count) of the real
    tokens of weights (..., E). Dividing the sums by the count gives expert_load and the mean entropy."""
    flat = _flat(weights, mask)
    return flat.sum(0), float(token_entropy(flat).sum()), flat.shape[0]


def balance_figures(load: torch.Tensor, mean_entropy: float,
                    dead_threshold: float = DEAD_THRESHOLD) -> Dict[str, float]:
    """The headline balance figures from an expert load (E,) (any float dtype; computed in it) and a mean
    per-token entropy in nats: mean_entropy, normalized_entropy (/ ln E; 1 = uniform), load_cv,
    max_share (the busiest expert's load) and dead_experts (loads below dead_threshold)."""
    num_experts = load.numel()
    cv = float(load.std(unbiased=False) / load.mean()) if float(load.sum()) > 0 else 0.0
    return {"mean_entropy": mean_entropy,
            "normalized_entropy": mean_entropy / math.log(num_experts) if num_experts > 1 else 0.0,
            "load_cv": cv, "max_share": float(load.max()) if num_experts else 0.0,
            "dead_experts": int((load < dead_threshold).sum())}


def balance_summary(weights: torch.Tensor, mask: Optional[torch.Tensor] = None,
                    dead_threshold: float = DEAD_THRESHOLD) -> Dict[str, float]:
    """balance_figures of one routed module's weights (..., E), or of several stacked on the leading
    dims (modules, batch, seq, E), over the real tokens (mask: the leading shape)."""
    flat = _flat(weights, mask)
    entropy = token_entropy(flat).mean().item() if flat.numel() else 0.0
    return balance_figures(expert_load(weights, mask), entropy, dead_threshold)


def token_routing(weights: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per token, over the modules stacked on dim 0 of weights (modules, tokens, E): "mean" (tokens, E)
    the mean weights, "top" (tokens,) long the expert with the largest mean weight, "top_weight" (tokens,)
    that weight, and "entropy" (tokens,) the mean over modules of each module's entropy."""
    mean = weights.mean(dim=0)
    top_weight, top = mean.max(dim=-1)
    return {"mean": mean, "top": top, "top_weight": top_weight, "entropy": token_entropy(weights).mean(dim=0)}


def layer_load_matrix(weights: Sequence[torch.Tensor], names: Sequence[str],
                      mask: Optional[torch.Tensor] = None) -> "OrderedDict[int, torch.Tensor]":
    """{layer index: (E,) mean of the expert loads of that layer's routed modules}, layers ascending.
    weights: one (..., E) tensor per module, named by names; mask: their leading shape."""
    return OrderedDict((layer, torch.stack([expert_load(weights[i], mask) for i in positions]).mean(0))
                       for layer, positions in group_by_layer(names).items())


def top_expert_per_layer(weights: Sequence[torch.Tensor], names: Sequence[str]) -> "OrderedDict[int, torch.Tensor]":
    """{layer: (batch, seq) index of the expert with the largest weight averaged over the layer's modules}.
    weights: one (batch, seq, E) tensor per module, named by names."""
    return OrderedDict((layer, torch.stack([weights[i].float() for i in positions]).mean(0).argmax(-1))
                       for layer, positions in group_by_layer(names).items())


def layer_means(values: Sequence[torch.Tensor], names: Sequence[str]) -> "OrderedDict[int, torch.Tensor]":
    """{layer: mean of the values (same shape each) of that layer's modules}, layers ascending."""
    return OrderedDict((layer, torch.stack([values[i] for i in positions]).mean(0))
                       for layer, positions in group_by_layer(names).items())


__all__ = ["DEAD_THRESHOLD", "expert_load", "token_entropy", "routing_sums", "balance_figures",
           "balance_summary", "token_routing", "layer_load_matrix", "top_expert_per_layer",
           "layer_means"]
