"""PEFT interop: a plain LoRA trained here exports as a PEFT adapter folder, and PEFT LoRA adapters
(local folders or Hub repos) import as a LoRA model or as the experts of a MoELoRA.

Tensor layouts agree: PEFT's lora_A.weight is (r, D_in) and lora_B.weight (D_out, r), as here; PEFT's
scale alpha/r is kept (export) or folded into B (import), so outputs are unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence, Union

import torch
from safetensors.torch import load_file, save_file

from ..modeling import AdapterSettings, TalkLoRAForCausalLM
from ..modeling.adapter_base import adapter_layers
from ..modeling.modeling_talklora import staged_directory
from .artifacts import ArtifactError, _local_folder


def _peft_name(full_name: str) -> str:
    """"base.model.layers.0.self_attn.q_proj" -> "base_model.model.model.layers.0.self_attn.q_proj"."""
    inner_name = full_name[len("base."):] if full_name.startswith("base.") else full_name
    return f"base_model.model.{inner_name}"


def export_peft(model: TalkLoRAForCausalLM, folder: Union[str, os.PathLike]) -> Path:
    """Writes adapter_config.json + adapter_model.safetensors that peft.PeftModel.from_pretrained loads."""
    settings = model.adapter_settings
    if settings.method != "lora":
        raise ArtifactError(f"only method='lora' exports as a PEFT LoRA adapter, got {settings.method!r}. "
                            "Fix: export a LoRA model, or publish this one as a talklora_hub expert or full model.")
    layers = adapter_layers(model)
    tensors = {}
    for name, layer in layers.items():
        prefix = _peft_name(name)
        tensors[f"{prefix}.lora_A.weight"] = layer.lora_A.detach().contiguous().cpu()
        tensors[f"{prefix}.lora_B.weight"] = layer.lora_B.detach().contiguous().cpu()
    with staged_directory(folder) as staging:
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        leaves = sorted({name.rsplit(".", 1)[-1] for name in layers})
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": settings.r,
                  "lora_alpha": settings.lora_alpha if settings.lora_alpha is not None else settings.r,
                  "lora_dropout": settings.lora_dropout, "target_modules": leaves, "bias": "none",
                  "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
                  "base_model_name_or_path": model.config.base_model_name_or_path,
                  "revision": model.config.base_model_revision, "inference_mode": True}
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return Path(folder).resolve()


def _read_peft(source: Union[str, os.PathLike]):
    folder = _local_folder(source, None)
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA").upper() != "LORA":
        raise ArtifactError(f"{source} is a {config.get('peft_type')} adapter; only PEFT LoRA adapters import.")
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise ArtifactError(f"{source} has no adapter_model.safetensors (only safetensors weights are read).")
    return config, load_file(str(weights))


def import_peft_experts(sources: Sequence[Union[str, os.PathLike]], base,
                        num_experts_per_tok=None) -> TalkLoRAForCausalLM:
    """One PEFT LoRA -> a LoRA model; several (same rank, same targets) -> a MoELoRA whose expert i is
    adapter i (A_i, s_i * B_i) with a fresh router to train. `base` is wrapped in place."""
    adapters = [_read_peft(s) for s in sources]
    ranks = {c["r"] for c, _ in adapters}
    targets = {tuple(sorted(c["target_modules"])) if isinstance(c["target_modules"], list) else c["target_modules"]
               for c, _ in adapters}
    if len(ranks) != 1 or len(targets) != 1:
        raise ArtifactError(f"PEFT adapters to combine must share rank and target_modules, got ranks {sorted(ranks)} "
                            f"and targets {sorted(map(str, targets))}. Fix: import adapters trained alike.")
    rank, target = ranks.pop(), targets.pop()
    target = list(target) if isinstance(target, tuple) else target
    count = len(adapters)
    if count == 1:
        settings = AdapterSettings(method="lora", r=rank, lora_alpha=adapters[0][0].get("lora_alpha", rank),
                                   target_modules=target)
    else:
        settings = AdapterSettings(method="moelora", r=rank * count, num_experts=count, target_modules=target,
                                   num_experts_per_tok=num_experts_per_tok)
    model = TalkLoRAForCausalLM.from_base(base, settings)
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            prefix = _peft_name(name)
            for i, (config, tensors) in enumerate(adapters):
                key_a, key_b = f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"
                if key_a not in tensors:
                    raise ArtifactError(f"PEFT adapter {sources[i]} has no tensors for {name} ({key_a}).")
                scale = config.get("lora_alpha", rank) / rank
                if count == 1:
                    layer.lora_A.copy_(tensors[key_a])
                    layer.lora_B.copy_(tensors[key_b])
                else:
                    layer.lora_A[i * rank:(i + 1) * rank].copy_(tensors[key_a])
                    layer.expert_bank[:, i * rank:(i + 1) * rank].copy_(tensors[key_b] * scale)
    return model
