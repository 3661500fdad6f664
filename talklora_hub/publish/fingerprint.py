"""A fingerprint of a base model's weights, recorded with every expert so it is only ever re-attached to
the base it was trained on.

The hash covers every base tensor's name, shape and values rounded to bfloat16: the same checkpoint
loaded in fp32 or bf16 gives the same fingerprint, a different base (or a fine-tuned one) does not.
Adapter tensors are excluded, so a wrapped model and its bare base fingerprint alike; so is a sequence
classifier's head (a fresh base's head is random, a trained expert's head travels in the expert's own
tensors): what is pinned is the pretrained backbone the head sits on.
"""

from __future__ import annotations

import hashlib
from typing import Dict

import torch
import torch.nn as nn

from ..modeling.injection import base_state_dict


def base_fingerprint(model: nn.Module) -> str:
    """sha256 hex digest (prefixed "bf16-sha256:") of the base weights of a base or wrapped model."""
    digest = hashlib.sha256()
    seen: Dict[int, str] = {}
    head = _classifier_head_prefixes(model)
    for name, tensor in sorted(base_state_dict(model).items()):
        if any(name == p or name.startswith(p + ".") for p in head):
            continue
        if tensor.data_ptr() in seen:  # tied weights: count the storage once
            continue
        seen[tensor.data_ptr()] = name
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        values = tensor.detach().to("cpu")
        if values.is_floating_point():
            values = values.to(torch.bfloat16).view(torch.int16)
        digest.update(values.contiguous().numpy().tobytes())
    return "bf16-sha256:" + digest.hexdigest()


def _classifier_head_prefixes(model: nn.Module):
    """Names of a sequence-classification model's head modules (every child but the backbone)."""
    inner = getattr(model, "inner_model", model)
    if not type(inner).__name__.endswith("ForSequenceClassification"):
        return ()
    prefix = getattr(inner, "base_model_prefix", "")
    return tuple(name for name, _ in inner.named_children() if name != prefix)
