"""A fingerprint of a base model's weights, recorded with every expert so it is only ever re-attached to
the base it was trained on.

The hash covers every base tensor's name, shape and values rounded to bfloat16: the same checkpoint
loaded in fp32 or bf16 gives the same fingerprint, a different base (or a fine-tuned one) does not.
Adapter tensors are excluded, so a wrapped model and its bare base fingerprint alike.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, Tuple

import torch
import torch.nn as nn

from ..modeling.adapter_base import adapter_layers


def _base_tensors(model: nn.Module) -> Iterable[Tuple[str, torch.Tensor]]:
    """(name, tensor) of the base weights, named as in the unwrapped base model."""
    inner = getattr(model, "inner_model", model)
    skip = set()
    for name, layer in adapter_layers(inner).items():
        skip.update(f"{name}.{p}" for p in layer.adapter_parameter_names())
    for name, tensor in inner.state_dict().items():
        if name not in skip:
            yield name, tensor


def base_fingerprint(model: nn.Module) -> str:
    """sha256 hex digest (prefixed "bf16-sha256:") of the base weights of a base or wrapped model."""
    digest = hashlib.sha256()
    seen: Dict[int, str] = {}
    for name, tensor in sorted(_base_tensors(model), key=lambda item: item[0]):
        if tensor.data_ptr() in seen:  # tied weights: count the storage once
            continue
        seen[tensor.data_ptr()] = name
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        values = tensor.detach().to("cpu")
        if values.is_floating_point():
            values = values.to(torch.bfloat16).view(torch.int16)
        digest.update(values.contiguous().numpy().tobytes())
    return "bf16-sha256:" + digest.hexdigest()
