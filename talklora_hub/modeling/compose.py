"""TT-LoRA MoE (arXiv 2504.21190) stage 2 building blocks.

compose_ttlora_moe stacks E single-expert TT-LoRA models (stage 1, one per task) into one model
with E experts per adapted layer and a fresh sequence router; freeze_experts leaves only the router
trainable. What the router reads and which expert serves each sequence are forward arguments of the
models themselves (so transformers' Trainer, generate() and any loop can use them):

- router_attention_mask: the router reads the frozen base's state at the last *prompt* token. In
  training and in verbalizer scoring the input also holds the answer; without this the router would
  read the answer's last token (a leak, and not what it sees in generation, which routes on the prompt).
  The bare base pass is causal, so masking the answer positions leaves the prompt positions' states
  exactly as they are in a prompt-only pass.
- sequence_experts: force the expert per sequence (teacher forcing, or "each expert alone" evaluation);
  the router logits are still computed (and returned) so its cross-entropy can be trained.
- sequence_labels (+ sequence_router_ce_weight): the model adds the router's cross-entropy to its loss.

sequence_routing_args builds those keyword arguments for a batch ({} for any other model).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .adapter_base import adapter_layers
from .adapter_settings import AdapterSettings, config_error
from .injection import base_state_dict
from .modeling_talklora import TalkLoRAForCausalLM, TalkLoRAPreTrainedModel

# Settings that define what a TT expert computes, so they must agree (dropout, which only acts in
# training, and r, which TT-LoRA does not use, may differ; the MoE takes expert 0's).
_SHARED_SETTINGS = ("target_modules", "tt_rank", "tt_alpha", "tt_factors", "modules_to_save")


def compose_ttlora_moe(expert_models: Sequence[TalkLoRAPreTrainedModel],
                       base: Union[None, str, torch.nn.Module] = None,
                       check_base_weights: bool = True, router_noise: Optional[str] = None) -> TalkLoRAForCausalLM:
    """One TT-LoRA MoE model from E trained single-expert TT-LoRA models.

    Every expert must be method "ttlora" with one expert, the same settings (rank, alpha, targets,
    factors) and the same base (architecture and, with check_base_weights, bit-identical weights).
    Expert e's cores become slice e of the stacked cores (E, r_prev, s, r_next); the sequence router
    is fresh. base: the base model (object or path) to build on; None rebuilds it from the first
    expert's own base weights. Returns a TalkLoRAForCausalLM whose experts are trainable as built:
    call freeze_experts for stage 2. router_noise: the router's noise variant ("masked-train" or
    "official", see sequence_router; None: expert 0's setting, by default "masked-train"). The caller's
    RNG state is left as it was (the router's init is drawn from it, then the state is restored).
    """
    experts = list(expert_models)
    if len(experts) < 2:
        raise config_error("expert_models", "must hold at least two single-expert TT-LoRA models", len(experts),
                           "train one TT-LoRA expert per task (method='ttlora', num_experts=1) first.")
    first = experts[0]
    cls = type(first)
    if not isinstance(first, TalkLoRAForCausalLM):
        raise config_error("expert_models[0]", "must be a TalkLoRAForCausalLM (every task speaks through the one LM "
                           "head; a classification head is per task and cannot be shared)", type(first).__name__,
                           "train the experts as causal LMs (a decoder base).")
    reference = first.adapter_settings
    for index, model in enumerate(experts):
        if not isinstance(model, TalkLoRAPreTrainedModel):
            raise config_error(f"expert_models[{index}]", "must be a talklora_hub model", type(model).__name__,
                               "load it with TalkLoRAForCausalLM.from_pretrained(folder).")
        if type(model) is not cls:
            raise config_error(f"expert_models[{index}]", f"must be a {cls.__name__} like expert 0",
                               type(model).__name__, "compose experts with the same head.")
        settings = model.adapter_settings
        if settings.method != "ttlora" or settings.num_experts != 1:
            raise config_error(f"expert_models[{index}]", "must be a single-expert TT-LoRA model (method='ttlora', "
                               "num_experts=1)", f"method={settings.method!r}, num_experts={settings.num_experts}",
                               "train each expert with method='ttlora' and num_experts=1.")
        for key in _SHARED_SETTINGS:
            if getattr(settings, key) != getattr(reference, key):
                raise config_error(f"expert_models[{index}]", f"must share {key} with expert 0",
                                   f"{getattr(settings, key)!r} vs {getattr(reference, key)!r}",
                                   "train every expert with the same adapter settings.")
        if _architecture(model) != _architecture(first):
            raise config_error(f"expert_models[{index}]", "must be built on the same base model (config) as expert 0",
                               model.config.base_model_name_or_path, "train every expert on one base model.")

    with torch.random.fork_rng(devices=[]):  # composing must not move the caller's RNG stream
        return _compose(experts, first, cls, reference, base, check_base_weights, router_noise)


def _moe_settings(reference: AdapterSettings, num_experts: int, router_noise: Optional[str]) -> AdapterSettings:
    values = {**reference.to_dict(), "num_experts": num_experts}
    if router_noise is not None:
        values["router_noise"] = router_noise
    return AdapterSettings.from_dict(values)


def _compose(experts, first, cls, reference, base, check_base_weights, router_noise):
    base_model = base
    if base_model is None:
        base_model = cls.base_auto_class.from_config(first.config.base_config, dtype=first.dtype)
        base_model.load_state_dict(base_state_dict(first), strict=False)
    elif isinstance(base_model, (str, bytes)) or hasattr(base_model, "__fspath__"):
        base_model = cls.base_auto_class.from_pretrained(base_model, dtype=first.dtype)
    moe = cls.from_base(base_model, _moe_settings(reference, len(experts), router_noise))
    moe.config.base_model_name_or_path = first.config.base_model_name_or_path
    moe.config.base_model_revision = first.config.base_model_revision

    if check_base_weights:
        reference_base = base_state_dict(moe)
        for index, model in enumerate(experts):
            theirs = base_state_dict(model)
            if theirs.keys() != reference_base.keys():
                raise config_error(f"expert_models[{index}]", "must have the same base tensors as the composed model",
                                   sorted(set(theirs) ^ set(reference_base))[:5], "train every expert on one base.")
            for name, tensor in reference_base.items():
                if theirs[name].shape != tensor.shape or not torch.equal(theirs[name].to(tensor.dtype), tensor):
                    raise config_error(f"expert_models[{index}]", "must be trained on bit-identical base weights",
                                       f"tensor {name} differs", "train every expert on the same base checkpoint.")

    moe_layers = adapter_layers(moe)
    for index, model in enumerate(experts):
        layers = adapter_layers(model)
        if layers.keys() != moe_layers.keys():
            raise config_error(f"expert_models[{index}]", "must adapt the same modules as expert 0",
                               sorted(set(layers) ^ set(moe_layers))[:5], "train every expert with the same targets.")
    stack_expert_cores(moe, [expert_cores(model) for model in experts])
    return moe


def stack_expert_cores(moe: TalkLoRAPreTrainedModel, experts: Sequence[Dict[str, torch.Tensor]]) -> None:
    """Writes expert e's cores ({name: (1, r_prev, s, r_next)}, named as in the MoE) into slice e of the
    MoE's stacked cores (E, r_prev, s, r_next), checking names and shapes."""
    cores = {n: p for n, p in moe.named_parameters() if ".tt_cores." in n}
    with torch.no_grad():
        for index, tensors in enumerate(experts):
            if tensors.keys() != cores.keys():
                raise config_error(f"experts[{index}]", "must hold exactly the MoE's TT cores",
                                   sorted(set(tensors) ^ set(cores))[:5], "compose experts that adapt the same "
                                   "modules of the same base with the same tt_rank and factors.")
            for name, core in cores.items():
                part = tensors[name]
                if part.shape[0] != 1 or tuple(part.shape[1:]) != tuple(core.shape[1:]):
                    raise config_error(f"experts[{index}]", f"core {name} must have shape "
                                       f"(1, {', '.join(map(str, core.shape[1:]))})", tuple(part.shape),
                                       "train every expert with the same tt_rank and factors.")
                core[index].copy_(part[0].to(core.dtype))


def compose_from_cores(base: torch.nn.Module, settings: Sequence[AdapterSettings],
                       experts: Sequence[Dict[str, torch.Tensor]],
                       router_noise: Optional[str] = None) -> TalkLoRAForCausalLM:
    """A TT-LoRA MoE from experts given as settings + cores (e.g. read from expert repos, whose base was
    already checked by fingerprint). `base` is wrapped in place."""
    if len(settings) < 2:
        raise config_error("experts", "must hold at least two single-expert TT-LoRA experts", len(settings),
                           "list every expert the router was trained with.")
    for index, item in enumerate(settings):
        if item.method != "ttlora" or item.num_experts != 1:
            raise config_error(f"experts[{index}]", "must be a single-expert TT-LoRA adapter", item.method,
                               "compose experts trained with method='ttlora', num_experts=1.")
        for key in _SHARED_SETTINGS:
            if getattr(item, key) != getattr(settings[0], key):
                raise config_error(f"experts[{index}]", f"must share {key} with expert 0",
                                   f"{getattr(item, key)!r} vs {getattr(settings[0], key)!r}",
                                   "compose experts trained with the same adapter settings.")
    moe = TalkLoRAForCausalLM.from_base(base, _moe_settings(settings[0], len(settings), router_noise))
    stack_expert_cores(moe, experts)
    return moe


def _architecture(model: TalkLoRAPreTrainedModel) -> Dict[str, Any]:
    """The base config without where it was loaded from."""
    return {k: v for k, v in model.config.base_config.to_dict().items()
            if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}


def freeze_experts(model: TalkLoRAPreTrainedModel) -> List[str]:
    """Stage 2: everything frozen except the sequence router. Returns the trainable names."""
    if model.sequence_router is None:
        raise config_error("model", "must be a TT-LoRA MoE (method='ttlora', num_experts > 1)",
                           model.adapter_settings.method, "compose the experts with compose_ttlora_moe first.")
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("sequence_router."))
    return [n for n, p in model.named_parameters() if p.requires_grad]


def expert_cores(model: TalkLoRAPreTrainedModel) -> Dict[str, torch.Tensor]:
    """Copies of every TT core (for checking the experts stay bit-identical)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "tt_cores" in n}


def sequence_routing_args(model: Optional[TalkLoRAPreTrainedModel], prompt_mask: Optional[torch.Tensor] = None,
                          experts: Optional[torch.Tensor] = None,
                          labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """The forward keyword arguments that steer a TT-LoRA MoE's per-sequence routing, {} for any other
    model (so callers can always splat them): prompt_mask -> router_attention_mask (the router reads the
    prompt only), experts -> sequence_experts (forced, one per sequence), labels -> sequence_labels (the
    router's cross-entropy target, added to the loss)."""
    if model is None or getattr(model, "sequence_router", None) is None:
        return {}
    args = {"router_attention_mask": prompt_mask, "sequence_experts": experts, "sequence_labels": labels}
    return {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in args.items() if v is not None}


def load_expert(item: Any, cls=TalkLoRAForCausalLM) -> TalkLoRAPreTrainedModel:
    """A stage-1 expert from a model object or a saved folder."""
    if isinstance(item, TalkLoRAPreTrainedModel):
        return item
    return cls.from_pretrained(str(item))
