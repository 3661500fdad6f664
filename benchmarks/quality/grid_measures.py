"""What the grid measures on a trained routed model besides accuracy: routing balance and routing stability.

Both run on probe batches of the test split (its first `limit` examples, prompts only: a causal LM's probe
stops before the answer, as scoring does), in eval mode (no dropout, no jitter), without gradients.

Routing balance (per routed module, per layer = mean over that layer's modules, and overall = mean over
modules), from talklora_hub.analysis.routing_stats over real tokens:
    load (E,) mean routing weight per expert; load_entropy: -sum load log load / log E (1 = every expert
    gets the same share); mean_entropy / normalized_entropy: the mean per-token entropy -sum g log g
    (nats, and / log E); load_cv; max_share; dead_experts (load < dead_threshold).

Routing stability (the TalkLoRA paper's smoothness claim): the input embeddings are perturbed,
e' = e + sigma * N(0, 1) * rms(e) with rms per token over the hidden axis; for each routed module and
real token, ratio = ||g' - g|| / ||x' - x||, with g (E,) its routing weights and x (D_in,) its input,
captured by a forward pre-hook on the adapter layer. A token whose input did not move (sigma = 0) has
ratio 0. With top-k routing g is the sparse gate the layer applies (so a flipped selection is a jump).
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

Batch = Tuple[torch.Tensor, torch.Tensor]  # input_ids (B, S), attention_mask (B, S)


def probe_batches(model, tokenizer, task_item: Any, head: str, max_length: int, limit: int = 128,
                  batch_size: int = 16) -> List[Batch]:
    """The first `limit` test examples of one task as right-padded (input_ids, attention_mask) batches."""
    from talklora_hub.train.data import encode_examples, pad_id
    from talklora_hub.evaluation.scoring import test_rows

    data, per_task = test_rows([task_item], head)
    rows = per_task[data.names[0]][:limit]
    encoded = encode_examples(rows, tokenizer, head, max_length, data)
    sequences = [e.input_ids if head == "classification" else e.input_ids[:e.prompt_len] for e in encoded]
    pad, device = pad_id(tokenizer), next(model.parameters()).device
    batches = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        batches.append((ids.to(device), mask.to(device)))
    return batches


def _layer_of(name: str) -> int:
    from talklora_hub.modeling.adapter_base import layer_index_of

    return layer_index_of(name)


def _mean_figures(items: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    keys = ("load_entropy", "mean_entropy", "normalized_entropy", "load_cv", "max_share", "dead_experts")
    return {k: sum(float(f[k]) for f in items) / len(items) for k in keys}


@torch.no_grad()
def routing_figures(model, batches: Sequence[Batch], dead_threshold: float = 0.02) -> Dict[str, Any]:
    """{"modules": {name: figures}, "layers": {layer: figures + mean load}, "overall": figures, "tokens"}."""
    from talklora_hub.analysis.routing_stats import balance_summary, expert_load

    model.eval()
    per_module: "OrderedDict[str, List[torch.Tensor]]" = OrderedDict()
    tokens = 0
    for ids, mask in batches:
        out = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
        real = mask.reshape(-1).bool()
        tokens += int(real.sum())
        for name, weights in zip(out.router_module_names, out.routing_weights):
            per_module.setdefault(name, []).append(weights.reshape(-1, weights.shape[-1])[real].float().cpu())
    modules: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
    for name, chunks in per_module.items():
        flat = torch.cat(chunks)  # (T, E): every real probe token
        load = expert_load(flat)
        num_experts = load.numel()
        load_entropy = float(-(load * load.clamp_min(1e-12).log()).sum() / math.log(num_experts))
        modules[name] = {"load": [round(float(x), 6) for x in load], "load_entropy": load_entropy,
                         **balance_summary(flat, dead_threshold=dead_threshold)}
    layers: "OrderedDict[int, Dict[str, Any]]" = OrderedDict()
    for layer in sorted({_layer_of(n) for n in modules}):
        members = [f for n, f in modules.items() if _layer_of(n) == layer]
        mean_load = torch.tensor([f["load"] for f in members]).mean(0)
        layers[layer] = {"load": [round(float(x), 6) for x in mean_load], **_mean_figures(members)}
    overall = _mean_figures(list(modules.values())) if modules else {}
    return {"modules": modules, "layers": {str(k): v for k, v in layers.items()}, "overall": overall,
            "tokens": tokens, "dead_threshold": dead_threshold}


class _InputCapture:
    """Forward pre-hooks on the routed adapter layers: inputs[module_name] = that layer's x (B, S, D_in)."""

    def __init__(self, model):
        from talklora_hub.modeling.adapter_base import adapter_layers

        routed = set(model.routed_module_names())
        self.inputs: Dict[str, torch.Tensor] = {}
        self.handles = [layer.register_forward_pre_hook(self._hook(layer.module_name))
                        for layer in adapter_layers(model).values() if layer.module_name in routed]

    def _hook(self, name: str):
        def hook(module, args):
            self.inputs[name] = args[0].detach().float()
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def _pass(model, capture: _InputCapture, embeds: torch.Tensor, mask: torch.Tensor):
    """({module: x (B, S, D_in)}, {module: g (B, S, E)}) of one forward on inputs_embeds."""
    capture.inputs = {}
    out = model(inputs_embeds=embeds, attention_mask=mask, output_router_logits=True)
    return dict(capture.inputs), {n: w.float() for n, w in zip(out.router_module_names, out.routing_weights)}


@torch.no_grad()
def routing_stability(model, batches: Sequence[Batch], sigmas: Sequence[float] = (0.01, 0.05),
                      seed: int = 0) -> Dict[str, Any]:
    """{str(sigma): {"modules": {name: mean ratio}, "layers": {layer: mean ratio}, "median", "mean",
    "mean_delta_g", "mean_delta_x"}}: ||delta g|| / ||delta x|| per routed module under embedding noise."""
    model.eval()
    embed = model.get_input_embeddings()
    capture = _InputCapture(model)
    generator = torch.Generator().manual_seed(seed)
    ratios: Dict[float, Dict[str, List[torch.Tensor]]] = {s: {} for s in sigmas}
    moves: Dict[float, List[Tuple[float, float]]] = {s: [] for s in sigmas}
    try:
        for ids, mask in batches:
            clean = embed(ids)  # (B, S, D)
            rms = clean.float().pow(2).mean(-1, keepdim=True).sqrt().to(clean.dtype)  # (B, S, 1)
            x0, g0 = _pass(model, capture, clean, mask)
            real = mask.bool()
            for sigma in sigmas:
                noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype)
                x1, g1 = _pass(model, capture, clean + sigma * noise * rms, mask)
                for name in g0:
                    dg = (g1[name] - g0[name]).norm(dim=-1)[real]  # (T,)
                    dx = (x1[name] - x0[name]).norm(dim=-1)[real]
                    ratio = torch.where(dx > 0, dg / dx.clamp_min(1e-30), torch.zeros_like(dg))
                    ratios[sigma].setdefault(name, []).append(ratio.cpu())
                    moves[sigma].append((float(dg.mean()), float(dx.mean())))
    finally:
        capture.close()
    out: Dict[str, Any] = {}
    for sigma in sigmas:
        per_module = {n: torch.cat(chunks) for n, chunks in ratios[sigma].items()}
        every = torch.cat(list(per_module.values())) if per_module else torch.zeros(1)
        module_means = {n: float(r.mean()) for n, r in per_module.items()}
        layers = {}
        for layer in sorted({_layer_of(n) for n in module_means}):
            values = [v for n, v in module_means.items() if _layer_of(n) == layer]
            layers[str(layer)] = sum(values) / len(values)
        out[str(sigma)] = {"modules": module_means, "layers": layers, "median": float(every.median()),
                           "mean": float(every.mean()),
                           "mean_delta_g": statistics.fmean(m[0] for m in moves[sigma]) if moves[sigma] else 0.0,
                           "mean_delta_x": statistics.fmean(m[1] for m in moves[sigma]) if moves[sigma] else 0.0}
    return out


def routing_over_training(losses: Sequence[Dict[str, Any]]) -> Optional[List[Dict[str, Any]]]:
    """Per log line of the training run, its window's overall routing balance (TrainResult.losses records
    it every log_every steps: normalized_entropy, load_cv, max_share, dead_experts); None if not logged."""
    rows = [{"step": r["step"], **{k: r["routing"][k] for k in ("normalized_entropy", "load_cv", "max_share",
                                                                  "dead_experts") if k in r["routing"]}}
            for r in losses if r.get("routing")]
    return rows or None
