"""PEFT interop that is faithful or refuses: a plain LoRA trained here exports as a PEFT adapter folder, and
PEFT LoRA adapters (local folders or Hub repos) import as a LoRA model or as the experts of a MoELoRA.

Tensor layouts agree: PEFT's lora_A.weight is (r, D_in) and lora_B.weight (D_out, r), as here (GPT-2's Conv1D
included: PEFT transposes only the base weight). PEFT's scale (alpha / r, or alpha / sqrt(r) with rsLoRA) is
kept as this project's lora_alpha / r (one LoRA: outputs bit-identical to PEFT's) or folded into B (experts of
a MoELoRA). The modules adapted are read from the saved tensors, so target_modules, exclude_modules,
layers_to_transform and layers_pattern are honoured whatever PEFT matched.

Every adapter_config.json field is checked (see `check_peft_config`): a field whose value changes what the
adapter computes and that this project cannot reproduce (DoRA, rank/alpha patterns, trained biases, saved
modules, base-modifying initialisations, ...) is refused with its name, value and the fix; so is any field
this module does not know that holds a non-default value.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file

from ..modeling import AdapterSettings, TalkLoRAForCausalLM
from ..modeling.adapter_base import AdaptedLinear, adapter_layers, is_adaptable
from ..modeling.injection import find_target_modules
from ..modeling.modeling_talklora import staged_directory
from .artifacts import ArtifactError, _local_folder

PEFT_PREFIX = "base_model.model."

# Fields that never change the function the saved tensors compute: bookkeeping, options read here (r,
# lora_alpha, use_rslora), module selection (the saved tensors say which modules were adapted), training-time
# options (dropout; VeLoRA's compressed backward, whose forward is plain LoRA), and initialisation settings of
# inits that leave the base weights alone. fan_in_fan_out: PEFT itself sets it per module from the module type
# (True for Conv1D, False for nn.Linear, with a warning), as the adapter layers here do.
ANY_VALUE = frozenset({
    "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode", "r",
    "lora_alpha", "use_rslora", "lora_dropout", "target_modules", "exclude_modules", "layers_to_transform",
    "layers_pattern", "fan_in_fan_out", "runtime_config", "megatron_core", "qalora_group_size", "loftq_config",
    "eva_config", "corda_config", "lora_ga_config", "velora_config", "ensure_weight_tying"})

# init_lora_weights values whose effect is all in the saved A and B; the others rewrite the base weights
# (PiSSA, CorDA, OLoRA: W0 - s B0 A0; LoftQ: a quantized residual; LoRA-GA: W0 minus an offset).
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal", "mica")
CAUSAL_TASKS = (None, "CAUSAL_LM")

# Fields that change the math, refused unless default: field -> (accepted predicate, what it does, the fix).
_NO_PATTERN = "retrain with one r and lora_alpha for every module, or merge the adapter with peft (merge_and_unload)"
REFUSED = {
    "task_type": (lambda v: v in CAUSAL_TASKS, "adapts a model with another head",
                  "import causal-LM adapters only (task_type CAUSAL_LM)"),
    "bias": (lambda v: v == "none", "trains (and saves) base biases",
             "retrain with bias='none', or merge the adapter into the base with peft (merge_and_unload)"),
    "use_dora": (lambda v: not v, "is DoRA: a learned magnitude rescales W0 + BA per output column",
                 "merge the adapter with peft (merge_and_unload) and use the merged model as a base, or retrain "
                 "with use_dora=False"),
    "rank_pattern": (lambda v: not v, "gives some modules another rank", _NO_PATTERN),
    "alpha_pattern": (lambda v: not v, "gives some modules another scale", _NO_PATTERN),
    "modules_to_save": (lambda v: not v, "saves full copies of base modules",
                        "retrain without modules_to_save, or merge the adapter with peft (merge_and_unload)"),
    "init_lora_weights": (lambda v: v in PLAIN_INITS or (isinstance(v, str) and v.lower() in PLAIN_INITS),
                          "rewrote the base weights at init (the adapter only works on that residual base)",
                          "convert it to a plain LoRA with peft's save_pretrained(..., "
                          "path_initial_model_for_weight_conversion=...) and import that"),
    "megatron_config": (lambda v: not v, "targets Megatron parallel layers", "export from an unsharded model"),
    "trainable_token_indices": (lambda v: not v, "trains rows of the embedding matrix",
                                "retrain without trainable_token_indices"),
    "alora_invocation_tokens": (lambda v: not v, "is Activated LoRA: the update applies only after the "
                                "invocation tokens", "retrain as a plain LoRA"),
    "use_qalora": (lambda v: not v, "is QALoRA (pooled inputs on a quantized base)", "retrain as a plain LoRA"),
    "monteclora_config": (lambda v: not v, "is MonteCLoRA (sampled updates)", "retrain as a plain LoRA"),
    "layer_replication": (lambda v: not v, "replicates base layers", "retrain without layer_replication"),
    "lora_bias": (lambda v: not v, "adds a bias to lora_B", "retrain with lora_bias=False"),
    "target_parameters": (lambda v: not v, "adapts raw parameters (e.g. MoE expert tensors), not linear modules",
                          "retrain with target_modules"),
    "use_bdlora": (lambda v: not v, "is BD-LoRA (block-diagonal factors)", "retrain as a plain LoRA"),
    "arrow_config": (lambda v: not v, "is Arrow routing over several LoRAs",
                     "import the LoRAs themselves as experts (import_peft_experts([...]))"),
    "kasa_config": (lambda v: not v, "is KaSA (truncated base SVD plus a learned diagonal)",
                    "retrain as a plain LoRA"),
}


def _refusal(source, field: str, value: Any, what: str, fix: str) -> ArtifactError:
    return ArtifactError(f"PEFT adapter {source}: `{field}` {what}, which talklora_hub cannot reproduce exactly, "
                         f"got {value!r}. Fix: {fix}.")


def check_peft_config(config: Dict[str, Any], source: Any = "") -> None:
    """Raises ArtifactError naming the first field whose value changes the adapter's math in a way this
    project does not reproduce (or that this module does not know and that holds a non-default value)."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise _refusal(source, "peft_type", config.get("peft_type"), "is not LoRA",
                       "import PEFT LoRA adapters only (peft_type LORA)")
    for field, value in config.items():
        if field in ANY_VALUE:
            continue
        if field in REFUSED:
            accepted, what, fix = REFUSED[field]
            if not accepted(value):
                raise _refusal(source, field, value, what, fix)
        elif value not in (None, False, "", [], {}):
            raise _refusal(source, field, value, "is a PEFT option this importer does not know",
                           "import with a peft version whose LoraConfig this importer checks (0.21), or remove "
                           "the field if it does not change the adapter's output")


def peft_scale(config: Dict[str, Any]) -> float:
    """PEFT's scale: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora (lora_alpha defaults to 8)."""
    r, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def equivalent_alpha(scale: float, r: int) -> float:
    """The lora_alpha for which this project's lora_alpha / r equals `scale` bit for bit."""
    alpha = scale * r
    for _ in range(8):
        quotient = alpha / r
        if quotient == scale:
            return alpha
        alpha = math.nextafter(alpha, math.inf if quotient < scale else -math.inf)
    return scale * r


def _peft_name(full_name: str) -> str:
    """"base.model.layers.0.self_attn.q_proj" -> "base_model.model.model.layers.0.self_attn.q_proj"."""
    inner_name = full_name[len("base."):] if full_name.startswith("base.") else full_name
    return f"{PEFT_PREFIX}{inner_name}"


def _leaves_or_names(names: List[str], select) -> List[str]:
    """target_modules naming exactly the modules `names`: their leaf names when select(leaves) (the modules those
    leaves match) is `names`, else the full names, sorted."""
    leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
    return leaves if set(select(leaves)) == set(names) else sorted(names)


def _peft_targets(model: TalkLoRAForCausalLM, names: List[str]) -> List[str]:
    """target_modules for PEFT: the leaf names when they select exactly the adapted modules, else full names."""
    linear = [n for n, m in model.inner_model.named_modules() if is_adaptable(m) or isinstance(m, AdaptedLinear)]
    # peft: the name or a dotted suffix of it
    return _leaves_or_names(names, lambda leaves: [n for n in linear if n.rsplit(".", 1)[-1] in leaves])


def export_peft(model: TalkLoRAForCausalLM, folder: Union[str, os.PathLike]) -> Path:
    """Writes adapter_config.json + adapter_model.safetensors that peft.PeftModel.from_pretrained loads."""
    settings = model.adapter_settings
    if settings.method != "lora":
        raise ArtifactError(f"only method='lora' exports as a PEFT LoRA adapter, got {settings.method!r}. "
                            "Fix: export a LoRA model, or publish this one as a talklora_hub expert or full model.")
    if not isinstance(model, TalkLoRAForCausalLM):
        raise ArtifactError(f"only a causal LM exports as a PEFT LoRA adapter, got {type(model).__name__} (its "
                            "trained head would be lost). Fix: publish it as a talklora_hub model or expert.")
    if settings.modules_to_save:
        raise ArtifactError(f"`modules_to_save` must be empty to export as a PEFT LoRA adapter (the trained base "
                            f"modules would be lost), got {settings.modules_to_save!r}. Fix: publish it as a "
                            "talklora_hub model or expert.")
    layers = adapter_layers(model)
    tensors = {}
    for name, layer in layers.items():
        prefix = _peft_name(name)
        tensors[f"{prefix}.lora_A.weight"] = layer.lora_A.detach().contiguous().cpu()
        tensors[f"{prefix}.lora_B.weight"] = layer.lora_B.detach().contiguous().cpu()
    inner_names = [name[len("base."):] for name in layers]
    with staged_directory(folder) as staging:
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": settings.r,
                  "lora_alpha": settings.lora_alpha if settings.lora_alpha is not None else settings.r,
                  "use_rslora": False, "lora_dropout": settings.lora_dropout,
                  "target_modules": _peft_targets(model, inner_names), "bias": "none",
                  "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
                  "base_model_name_or_path": model.config.base_model_name_or_path,
                  "revision": model.config.base_model_revision, "inference_mode": True}
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return Path(folder).resolve()


def _split_tensors(tensors: Dict[str, torch.Tensor], config: Dict[str, Any], source):
    """(module names inside the base model that carry lora_A and lora_B, {base parameter name: saved copy}).

    peft saves a copy of an adapted lm_head's (or a resized embedding's) weight beside the LoRA; such copies are
    checked against the base later. Any other tensor (an embedding or convolution LoRA, a DoRA magnitude, a
    bias, a saved module) is refused."""
    modules: Dict[str, set] = {}
    copies: Dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if config.get("velora_config") and key.endswith(".lora_velora_embed"):
            continue  # VeLoRA's training-time activation projection; the forward does not read it
        module, _, leaf = key.rpartition(".lora_")
        if key.startswith(PEFT_PREFIX) and leaf in ("A.weight", "B.weight"):
            modules.setdefault(module[len(PEFT_PREFIX):], set()).add(leaf[0])
        elif key.startswith(PEFT_PREFIX) and ".lora_" not in key and key.endswith((".weight", ".bias")):
            copies[key[len(PEFT_PREFIX):].replace(".base_layer.", ".")] = tensor
        else:
            raise ArtifactError(f"PEFT adapter {source} saves {key!r}, which is not a LoRA A/B matrix of a linear "
                                "module (an embedding or convolution LoRA, a DoRA magnitude, a bias or a saved "
                                "module). Fix: import adapters of nn.Linear/Conv1D modules only.")
    lonely = sorted(name for name, parts in modules.items() if parts != {"A", "B"})
    if lonely or not modules:
        raise ArtifactError(f"PEFT adapter {source} must save lora_A and lora_B for every adapted module, got "
                            f"{len(modules)} modules, incomplete: {lonely[:3]}. Fix: re-save it with peft.")
    return sorted(modules), copies


def _read_peft(source: Union[str, os.PathLike]):
    """(config, tensors, adapted module names, saved copies of base tensors)."""
    folder = _local_folder(source, None)
    config = json.loads((folder / "adapter_config.json").read_text())
    check_peft_config(config, source)
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise ArtifactError(f"{source} has no adapter_model.safetensors (only safetensors weights are read). "
                            "Fix: re-save it with peft's save_pretrained(..., safe_serialization=True).")
    tensors = load_file(str(weights))
    return (config, tensors, *_split_tensors(tensors, config, source))


def _check_copies(base, copies: Dict[str, torch.Tensor], source) -> None:
    """A base tensor saved with the adapter must be the base's own (else the adapter expects another base)."""
    params = dict(base.named_parameters(remove_duplicate=False))
    for name, saved in copies.items():
        own = params.get(name)
        if own is None or own.shape != saved.shape or not torch.equal(own.detach().cpu(), saved.to(own.dtype)):
            got = "absent" if own is None else f"{tuple(own.shape)}, different values"
            raise ArtifactError(f"PEFT adapter {source} saves its own {name} {tuple(saved.shape)}, which is not the "
                                f"base's ({got}): it was trained on a changed base (e.g. resized embeddings or "
                                "modules_to_save). Fix: pass that base (base=...), or merge with peft first.")


def _settings_targets(base, modules: List[str]) -> List[str]:
    """AdapterSettings.target_modules selecting exactly `modules` of `base`: leaf names if they do, else names."""
    present = {name for name, _ in base.named_modules()}
    missing = [name for name in modules if name not in present]
    if missing:
        raise ArtifactError(f"PEFT adapter adapts {missing[0]!r}, which {type(base).__name__} does not have "
                            f"({len(missing)} of {len(modules)} modules missing). Fix: pass the base the adapter "
                            "was trained on (base=...).")
    unadaptable = [name for name in modules if not is_adaptable(base.get_submodule(name))]
    if unadaptable:
        kind = type(base.get_submodule(unadaptable[0])).__name__
        raise ArtifactError(f"PEFT adapter targets {unadaptable[0]!r}, a {kind}; only nn.Linear and GPT-2's Conv1D "
                            "modules import. Fix: import adapters of linear modules only.")
    return _leaves_or_names(modules, lambda leaves: find_target_modules(base, leaves))


def _load_base(base, config: Dict[str, Any]):
    if base is None:
        base = config.get("base_model_name_or_path")
        if not base:
            raise ArtifactError("`base` must name the model the PEFT adapter was trained on, got None and the "
                                "adapter_config.json names none. Fix: pass base= (a model, folder or repo id).")
    if isinstance(base, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return base


def import_peft_experts(sources: Sequence[Union[str, os.PathLike]], base=None,
                        num_experts_per_tok: Optional[int] = None) -> TalkLoRAForCausalLM:
    """One PEFT LoRA -> a LoRA model computing what PEFT computes; several (same rank, same modules) -> a
    MoELoRA whose expert i is adapter i (A_i, s_i * B_i) with a fresh router to train. `base` (a model, wrapped
    in place, or a folder / repo id; None: the adapter's base_model_name_or_path) must be the adapter's base."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    adapters = [_read_peft(s) for s in sources]
    ranks = {c.get("r", 8) for c, _, _, _ in adapters}
    module_sets = {tuple(m) for _, _, m, _ in adapters}
    if len(ranks) != 1 or len(module_sets) != 1:
        raise ArtifactError(f"PEFT adapters to combine must share rank and adapted modules, got ranks {sorted(ranks)} "
                            f"and {len(module_sets)} different module sets. Fix: import adapters trained alike.")
    rank, modules, count = ranks.pop(), list(module_sets.pop()), len(adapters)
    base = _load_base(base, adapters[0][0])
    for source, (_, _, _, copies) in zip(sources, adapters):
        _check_copies(base, copies, source)
    target = _settings_targets(base, modules)
    if count == 1:
        config = adapters[0][0]
        settings = AdapterSettings(method="lora", r=rank, lora_alpha=equivalent_alpha(peft_scale(config), rank),
                                   lora_dropout=float(config.get("lora_dropout") or 0.0), target_modules=target)
    else:
        settings = AdapterSettings(method="moelora", r=rank * count, num_experts=count, target_modules=target,
                                   num_experts_per_tok=num_experts_per_tok)
    model = TalkLoRAForCausalLM.from_base(base, settings)
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            prefix = _peft_name(name)
            for i, (config, tensors, _, _) in enumerate(adapters):
                a, b = tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]
                expected = ((rank, layer.in_features), (layer.out_features, rank))
                if (tuple(a.shape), tuple(b.shape)) != expected:
                    raise ArtifactError(f"PEFT adapter {sources[i]}: {name} has lora_A {tuple(a.shape)} and lora_B "
                                        f"{tuple(b.shape)}, but r={rank} on this base needs {expected}. Fix: pass the "
                                        "base the adapter was trained on (and an adapter without rank_pattern).")
                if count == 1:
                    layer.lora_A.copy_(a)
                    layer.lora_B.copy_(b)
                else:
                    layer.lora_A[i * rank:(i + 1) * rank].copy_(a)
                    layer.expert_bank[:, i * rank:(i + 1) * rank].copy_(b * peft_scale(config))
    return model


def import_peft(source: Union[str, os.PathLike], base=None) -> TalkLoRAForCausalLM:
    """One PEFT LoRA adapter (folder or repo id) as a talklora_hub LoRA model on `base`."""
    return import_peft_experts([source], base)
