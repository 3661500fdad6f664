"""Routing health while training: how each routed module spreads its tokens over the experts.

Per module it accumulates, over real (non-pad) tokens, the summed routing weight per expert (its load)
and the summed per-token entropy (talklora_hub.analysis.routing_stats.routing_sums); summaries turn
those into the figures of talklora_hub.analysis.routing_stats.balance_figures (mean load per expert,
mean and normalised entropy, coefficient of variation of the load, the busiest expert's share, dead
experts below a load threshold), per module, per layer (modules of a layer averaged) and overall. Two accumulators
run side by side: a window reset at every log line, and the whole run (saved in checkpoints, summed
over processes at the end). A TT-LoRA MoE's sequence router is tracked as the module
"sequence_router": its load is the share of sequences sent to each expert, its entropy that of the
router's softmax.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch

from ..analysis.module_names import group_by_layer
from ..analysis.routing_stats import DEAD_THRESHOLD, balance_figures, routing_sums, token_entropy

SEQUENCE_ROUTER = "sequence_router"


class _Accumulator:
    """{module: [load sum (E,), entropy sum, token count]} in float64."""

    def __init__(self):
        self.modules: "OrderedDict[str, List]" = OrderedDict()

    def add(self, name: str, load_sum: torch.Tensor, entropy_sum: float, count: float) -> None:
        entry = self.modules.get(name)
        if entry is None:
            self.modules[name] = [load_sum.double().cpu(), float(entropy_sum), float(count)]
        else:
            entry[0] += load_sum.double().cpu()
            entry[1] += float(entropy_sum)
            entry[2] += float(count)

    def reset(self) -> None:
        self.modules.clear()

    def state_dict(self) -> Dict[str, List]:
        return {name: [load.tolist(), ent, count] for name, (load, ent, count) in self.modules.items()}

    def load_state_dict(self, state: Dict[str, List]) -> None:
        self.modules = OrderedDict((name, [torch.tensor(load, dtype=torch.float64), float(ent), float(count)])
                                   for name, (load, ent, count) in state.items())


def _figures(load: torch.Tensor, mean_entropy: float, dead_threshold: float) -> Dict[str, object]:
    """The logged figures of one module or layer: its load (E,) rounded for the logs, then balance_figures."""
    return {"load": [round(float(x), 6) for x in load], **balance_figures(load, mean_entropy, dead_threshold)}


class RoutingHealth:
    """Collects routing per step; `summary()` gives per-module, per-layer and overall figures."""

    def __init__(self, dead_threshold: float = DEAD_THRESHOLD):
        self.dead_threshold = dead_threshold
        self.window = _Accumulator()
        self.total = _Accumulator()

    @property
    def active(self) -> bool:
        return bool(self.total.modules)

    def _add(self, name: str, load_sum: torch.Tensor, entropy_sum: float, count: float) -> None:
        self.window.add(name, load_sum, entropy_sum, count)
        self.total.add(name, load_sum, entropy_sum, count)

    @torch.no_grad()
    def update_tokens(self, weights: Sequence[torch.Tensor], names: Sequence[str],
                      attention_mask: Optional[torch.Tensor]) -> None:
        """weights: one (batch, seq, E) tensor per routed module; attention_mask: (batch, seq), ignored for
        a module whose tokens it does not match one to one."""
        for w, name in zip(weights, names):
            tokens = w.numel() // w.shape[-1] if w.shape[-1] else 0
            mask = attention_mask if attention_mask is not None and attention_mask.numel() == tokens else None
            self._add(name, *routing_sums(w, mask))

    @torch.no_grad()
    def update_sequences(self, logits: torch.Tensor, chosen: torch.Tensor) -> None:
        """logits: (batch, E) sequence-router logits; chosen: (batch,) the experts that served."""
        num_experts = logits.shape[-1]
        onehot = torch.nn.functional.one_hot(chosen.long().cpu(), num_experts).double()
        probs = logits.detach().float().softmax(-1)
        self._add(SEQUENCE_ROUTER, onehot.sum(0), float(token_entropy(probs).sum()), logits.shape[0])

    def reduce(self, accelerator) -> None:
        """Sums the run totals over all processes (every process must call this; a process that saw
        no routing, e.g. an empty evaluation shard, is fine)."""
        if accelerator is None or accelerator.num_processes == 1:
            return
        from accelerate.utils import gather_object

        merged = _Accumulator()
        for state in gather_object([self.total.state_dict()]):
            for name, (load, ent, count) in state.items():
                merged.add(name, torch.tensor(load, dtype=torch.float64), ent, count)
        self.total = merged

    def summary(self, which: str = "total") -> Dict[str, object]:
        """{"modules": {name: figures}, "layers": {layer: figures}, "overall": figures} (empty if nothing
        was routed). Layer figures average the modules' loads and entropies; overall averages the
        modules' figures (mean normalised entropy, mean load CV, dead experts summed)."""
        acc = self.total if which == "total" else self.window
        modules, token_routed = OrderedDict(), []
        for name, (load_sum, ent_sum, count) in acc.modules.items():
            if count <= 0:
                continue
            load, entropy = load_sum / count, ent_sum / count
            modules[name] = _figures(load, entropy, self.dead_threshold)
            modules[name]["tokens"] = int(count)
            if name != SEQUENCE_ROUTER:
                token_routed.append((name, load, entropy))
        layers = OrderedDict()
        for layer, positions in group_by_layer([name for name, _, _ in token_routed]).items():
            load = torch.stack([token_routed[i][1] for i in positions]).mean(0)
            entropy = sum(token_routed[i][2] for i in positions) / len(positions)
            layers[str(layer)] = _figures(load, entropy, self.dead_threshold)
        overall = {}
        if modules:
            values = list(modules.values())
            overall = {"normalized_entropy": sum(v["normalized_entropy"] for v in values) / len(values),
                       "mean_entropy": sum(v["mean_entropy"] for v in values) / len(values),
                       "load_cv": sum(v["load_cv"] for v in values) / len(values),
                       "max_share": max(v["max_share"] for v in values),
                       "dead_experts": sum(v["dead_experts"] for v in values),
                       "modules": len(values), "dead_threshold": self.dead_threshold}
        return {"modules": dict(modules), "layers": dict(layers), "overall": overall}

    def postfix(self) -> Dict[str, str]:
        """Short progress-bar figures of the current window."""
        overall = self.summary("window")["overall"]
        if not overall:
            return {}
        return {"nent": f"{overall['normalized_entropy']:.2f}", "cv": f"{overall['load_cv']:.2f}",
                "dead": str(overall["dead_experts"])}

    def state_dict(self) -> Dict[str, object]:
        return {"total": self.total.state_dict(), "window": self.window.state_dict()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.total.load_state_dict(state.get("total", {}))
        self.window.load_state_dict(state.get("window", {}))
