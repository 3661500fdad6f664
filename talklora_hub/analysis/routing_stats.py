"""Routing statistics: how the experts share the work, per layer and module.

All functions take routing weights as a tensor (..., E) (rows sum to 1) and an optional mask of real
tokens, and return plain tensors / floats, so training logs, model cards and the Space share them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from ..modeling.adapter_base import layer_index_of


def _flat(weights: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(..., E) -> (T, E) keeping only real tokens (mask broadcast over the leading dims)."""
    flat = weights.reshape(-1, weights.shape[-1]).float()
    if mask is not None:
        flat = flat[mask.reshape(-1).bool()]
    return flat


def expert_load(weights: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(E,) mean routing weight per expert over tokens (sums to 1)."""
    flat = _flat(weights, mask)
    return flat.mean(dim=0) if flat.numel() else torch.zeros(weights.shape[-1])


def token_entropy(weights: torch.Tensor) -> torch.Tensor:
    """(...,) per-token routing entropy -sum g log g, in nats (0: one expert; log E: uniform)."""
    g = weights.float().clamp_min(1e-12)
    return -(weights.float() * g.log()).sum(dim=-1)


def balance_summary(weights: torch.Tensor, mask: Optional[torch.Tensor] = None,
                    dead_threshold: float = 0.02) -> Dict[str, float]:
    """Headline balance figures of one routed module (or of several stacked on the leading dims).

    mean_entropy: mean per-token entropy (nats); normalized_entropy: that / log E;
    load_cv: coefficient of variation of expert load (0 = perfectly balanced);
    max_share: the busiest expert's load; dead_experts: how many experts get a load below
    dead_threshold (an absolute share of the tokens' routing mass, default 2%).
    """
    num_experts = weights.shape[-1]
    flat = _flat(weights, mask)
    load = expert_load(weights, mask)
    entropy = token_entropy(flat).mean().item() if flat.numel() else 0.0
    cv = (load.std(unbiased=False) / load.mean()).item() if load.sum() > 0 else 0.0
    return {"mean_entropy": entropy, "normalized_entropy": entropy / math.log(num_experts) if num_experts > 1 else 0.0,
            "load_cv": cv, "max_share": load.max().item(), "dead_experts": int((load < dead_threshold).sum())}


def layer_load_matrix(weights: Sequence[torch.Tensor], names: Sequence[str],
                      mask: Optional[torch.Tensor] = None) -> "OrderedDict[int, torch.Tensor]":
    """{layer index: (E,) mean load over all routed modules of that layer}, layers in order."""
    per_layer: "OrderedDict[int, List[torch.Tensor]]" = OrderedDict()
    for w, name in zip(weights, names):
        per_layer.setdefault(layer_index_of(name), []).append(expert_load(w, mask))
    return OrderedDict((layer, torch.stack(loads).mean(0)) for layer, loads in sorted(per_layer.items()))


def top_expert_per_layer(weights: Sequence[torch.Tensor], names: Sequence[str]) -> "OrderedDict[int, torch.Tensor]":
    """{layer: (batch, seq) index of the expert with the largest weight averaged over the layer's modules}."""
    per_layer: "OrderedDict[int, List[torch.Tensor]]" = OrderedDict()
    for w, name in zip(weights, names):
        per_layer.setdefault(layer_index_of(name), []).append(w.float())
    return OrderedDict((layer, torch.stack(ws).mean(0).argmax(-1)) for layer, ws in sorted(per_layer.items()))
