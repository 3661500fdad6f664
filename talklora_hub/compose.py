"""Composing separately trained single-expert TT-LoRA adapters into one TT-LoRA MoE model.

Each expert is given as its adapter tensors ({name: tensor}, names as in the full model, cores shaped
(1, r_prev, s, r_next)); the MoE stacks them along the expert axis, so expert e's cores are exactly
expert e's (they stay frozen: the MoE trains only its router).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from .modeling import AdapterSettings, TalkLoRAForCausalLM


class CompositionError(ValueError):
    """Experts that cannot form one MoE: different settings, targets or shapes."""


def compose_ttlora_moe_from_tensors(base, settings: Sequence[AdapterSettings],
                                   tensors: Sequence[Dict[str, torch.Tensor]]) -> TalkLoRAForCausalLM:
    """base: the shared base model (wrapped in place); settings/tensors: one per expert, in expert order."""
    if len(settings) < 2:
        raise CompositionError(f"`experts` must hold at least 2 TT-LoRA experts, got {len(settings)}.")
    first = settings[0]
    for i, s in enumerate(settings):
        if s.method != "ttlora" or s.num_experts != 1:
            raise CompositionError(f"expert {i} must be a single TT-LoRA expert (method='ttlora', num_experts=1), "
                                   f"got method={s.method!r}, num_experts={s.num_experts}.")
        for key in ("target_modules", "tt_rank", "tt_alpha", "tt_factors", "lora_dropout"):
            if getattr(s, key) != getattr(first, key):
                raise CompositionError(f"expert {i} has {key}={getattr(s, key)!r} but expert 0 has "
                                       f"{getattr(first, key)!r}; experts of one MoE must share it.")
    moe_settings = AdapterSettings.from_dict({**first.to_dict(), "num_experts": len(settings)})
    model = TalkLoRAForCausalLM.from_base(base, moe_settings)
    params = dict(model.named_parameters())
    core_names = sorted(n for n in params if ".tt_cores." in n)
    for i, expert in enumerate(tensors):
        if sorted(expert) != core_names:
            raise CompositionError(f"expert {i}'s tensors {sorted(expert)[:3]}... do not match the MoE's cores "
                                   f"{core_names[:3]}...; experts must target the same modules of the same base.")
    with torch.no_grad():
        for name in core_names:
            stacked = torch.cat([expert[name] for expert in tensors], dim=0)
            if stacked.shape != params[name].shape:
                raise CompositionError(f"{name}: experts stack to {tuple(stacked.shape)}, the MoE needs "
                                       f"{tuple(params[name].shape)}.")
            params[name].copy_(stacked)
    for name in core_names:  # the experts are frozen: only the router trains
        params[name].requires_grad_(False)
    return model


def expert_tensors(model: TalkLoRAForCausalLM) -> Dict[str, torch.Tensor]:
    """A single-expert TT-LoRA model's cores, as compose_ttlora_moe_from_tensors takes them."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".tt_cores." in n}


def split_experts(model: TalkLoRAForCausalLM) -> List[Dict[str, torch.Tensor]]:
    """The inverse: expert e's cores, each (1, r_prev, s, r_next)."""
    cores = {n: p.detach() for n, p in model.named_parameters() if ".tt_cores." in n}
    count = model.adapter_settings.num_experts
    return [{n: c[e:e + 1].clone() for n, c in cores.items()} for e in range(count)]
