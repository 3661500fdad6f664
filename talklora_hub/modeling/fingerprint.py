"""A fingerprint of a base model's weights, recorded with every expert so it is only ever re-attached to
the base it was trained on.

The hash covers every base tensor's name, shape and values rounded to bfloat16: the same checkpoint
loaded in fp32 or bf16 gives the same fingerprint, a different base (or a fine-tuned one) does not.
Adapter tensors are excluded, so a wrapped model and its bare base fingerprint alike; so is a sequence
classifier's head (a fresh base's head is random, a trained expert's head travels in the expert's own
tensors), and so are the base modules an adapter trains with it (AdapterSettings.modules_to_save, e.g. BERT's
pooler: they too travel in the expert's tensors): what is pinned is the frozen pretrained backbone.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from .injection import base_state_dict


def base_fingerprint(model: nn.Module, trained_modules: Optional[Sequence[str]] = None) -> str:
    """sha256 hex digest (prefixed "bf16-sha256:") of the base weights of a base or wrapped model.

    trained_modules: base module names (as in the unwrapped base) the artifact trains and carries, left out of
    the hash; a wrapped model adds its own modules_to_save, so pass an expert's list when fingerprinting the bare
    base it is to be attached to."""
    digest = hashlib.sha256()
    seen: Dict[int, str] = {}
    skip = _classifier_head_prefixes(model) + tuple(trained_modules or ()) + _own_trained_modules(model)
    for name, tensor in sorted(base_state_dict(model).items()):
        if any(name == p or name.startswith(p + ".") for p in skip):
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


def _own_trained_modules(model: nn.Module):
    """A wrapped model's modules_to_save (a bare base has none)."""
    settings = getattr(getattr(model, "config", None), "adapter_settings", None)
    return tuple(getattr(settings, "modules_to_save", None) or ())
