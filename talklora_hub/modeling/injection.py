"""Putting adapters into any transformers model: find the target modules by name or regex, replace
each with its adapter layer, freeze the base, and (for static adapters) merge back.

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .adapter_base import AdaptedLinear, SharedAdapterState, adapter_layers, is_adaptable, merged_base_module
from .adapter_settings import AdapterSettings, config_error, default_targets


def candidate_module_names(model: nn.Module) -> List[str]:
    """Distinct trailing names of the modules an adapter can wrap (nn.Linear, Conv1D)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if is_adaptable(m)})


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_target_modules(model: nn.Module, targets, model_type: str = "") -> List[str]:
    """Dotted names of the modules to adapt.

    targets: a list of names (each matching a module's dotted name or its dotted suffix, e.g.
    "q_proj" or "mlp.c_proj"), one regex string (full match on the dotted name), or None for the
    architecture's default. Every named target must match at least one adaptable module.
    """
    if targets is None:
        targets = default_targets(model_type)
    adaptable = [name for name, m in model.named_modules() if is_adaptable(m)]
    if isinstance(targets, str):
        pattern = re.compile(targets)
        found = [name for name in adaptable if pattern.fullmatch(name)]
        if not found:
            raise config_error("target_modules", f"(a regex) must fully match at least one nn.Linear/Conv1D "
                               f"module name of {type(model).__name__}", targets,
                               f"match one of the dotted names, e.g. {adaptable[:3]}; candidate leaf names: "
                               f"{candidate_module_names(model)}.")
        return found
    found = []
    for target in targets:
        hits = [name for name in adaptable if _matches(name, target)]
        if not hits:
            others = [n for n, m in model.named_modules() if _matches(n, target)]
            rule = ("names a module that is not nn.Linear/Conv1D" if others
                    else f"must name nn.Linear/Conv1D modules of {type(model).__name__}")
            raise config_error("target_modules", rule, target,
                               f"choose among the candidate module names {candidate_module_names(model)}.")
        found.extend(h for h in hits if h not in found)
    return found


def inject_adapters(model: nn.Module, settings: AdapterSettings, shared: SharedAdapterState,
                    model_type: str = "", name_prefix: str = "") -> Dict[str, AdaptedLinear]:
    """Replaces every target module of `model` in place with its adapter layer.

    name_prefix: the path of `model` inside the top model, so recorded routing names are full names.
    Returns {dotted name inside `model`: adapter layer}.
    """
    spec = settings.spec  # the method's layer class and its per-target arguments (methods.py)
    layers = {}
    for name in find_target_modules(model, settings.target_modules, model_type):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, leaf)
        full_name = f"{name_prefix}.{name}" if name_prefix else name
        extra = spec.layer_arguments(name, settings) if spec.layer_arguments is not None else {}
        layer = spec.layer_class(base, full_name, settings, shared, **extra)
        setattr(parent, leaf, layer)
        layers[name] = layer
    return layers


def mark_trainable(model: nn.Module, extra_trainable_prefixes: Optional[List[str]] = None) -> None:
    """Freezes everything, then unfreezes the adapters' own tensors, the shared banks and any
    module named in extra_trainable_prefixes (e.g. a classification head)."""
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in adapter_layers(model).values():
        for name in layer.adapter_parameter_names():
            layer.get_parameter(name).requires_grad_(True)
    for module in model.modules():
        if isinstance(module, SharedAdapterState):
            for param in module.parameters():
                param.requires_grad_(True)
    for prefix in extra_trainable_prefixes or ():
        for name, param in model.named_parameters():
            if name == prefix or name.startswith(prefix + "."):
                param.requires_grad_(True)


def base_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The base weights of a wrapped (or plain) model, named as in the unwrapped base model: the adapter
    layers keep `weight`/`bias` under the base's names, so this is the state dict minus adapter tensors."""
    inner = getattr(model, "inner_model", model)
    adapter = {f"{name}.{p}" for name, layer in adapter_layers(inner).items()
               for p in layer.adapter_parameter_names() + layer.adapter_buffer_names()}
    return {name: tensor for name, tensor in inner.state_dict().items() if name not in adapter}


def merge_adapters(model: nn.Module) -> nn.Module:
    """Folds every static adapter into its base weights, in place; returns the model."""
    for name, layer in adapter_layers(model).items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, merged_base_module(layer))
    return model
