"""What "the adapter" of a wrapped model is, by name: every tensor the adapter adds to the base (adapter
layers' parameters and fixed buffers, the shared expert banks, a TT-LoRA MoE's sequence router) plus the
base modules it trains (a classifier's head, AdapterSettings.modules_to_save).

Defined by names, never by requires_grad: a model loaded for inference has nothing trainable and a TT-LoRA
MoE router stage trains only its router, yet both have the same adapter. Expert files, cards, pushes and
adapter-only saves all read this one definition.

Part of the bundle that travels inside every saved model: imports only torch and sibling files.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from .adapter_base import adapter_layers
from .injection import mark_trainable

# Top-level modules of a wrapped model that belong to the adapter as a whole.
ADAPTER_ROOTS = ("adapter_shared.", "sequence_router.")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def adapter_tensor_names(model: nn.Module, trained_prefixes: Sequence[str]) -> List[str]:
    """Full names (as in model.state_dict()) of the adapter's tensors, sorted.

    trained_prefixes: full names of base modules the adapter trains and carries (e.g. "base.classifier")."""
    return _adapter_names(model, model.state_dict(keep_vars=True), trained_prefixes)


def _adapter_names(model: nn.Module, state: Dict[str, torch.Tensor], trained_prefixes: Sequence[str]) -> List[str]:
    names = set()
    for layer_name, layer in adapter_layers(model).items():
        names.update(f"{layer_name}.{p}" for p in layer.adapter_parameter_names() + layer.adapter_buffer_names())
    names.update(n for n in state if n.startswith(ADAPTER_ROOTS) or _under(n, trained_prefixes))
    return sorted(names)


def adapter_state_dict(model: nn.Module, trained_prefixes: Sequence[str]) -> Dict[str, torch.Tensor]:
    """{full name: detached tensor} of the adapter (see adapter_tensor_names)."""
    state = model.state_dict(keep_vars=True)
    return {name: state[name].detach() for name in _adapter_names(model, state, trained_prefixes)}


def set_adapter_trainable(model: nn.Module, trainable: bool, trained_prefixes: Sequence[str]) -> None:
    """trainable: the base frozen, the adapter's parameters (and trained base modules) trainable, as after
    from_base. Otherwise nothing trainable (inference: no autograd graph is built)."""
    if trainable:
        mark_trainable(model, list(trained_prefixes) + [r.rstrip(".") for r in ADAPTER_ROOTS])
    else:
        for param in model.parameters():
            param.requires_grad_(False)


def count_parameters(model: nn.Module, trained_prefixes: Sequence[str]) -> Dict[str, int]:
    """{"adapter": the adapter's parameter count (by name), "trainable": requires_grad now, "total": all}."""
    names = set(adapter_tensor_names(model, trained_prefixes))
    params = dict(model.named_parameters())
    return {"adapter": sum(p.numel() for n, p in params.items() if n in names),
            "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
            "total": sum(p.numel() for p in params.values())}
