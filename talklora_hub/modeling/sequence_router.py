"""The TT-LoRA MoE router (arXiv 2504.21190): one expert per sequence, chosen from the frozen base
model's own representation of the input.

    logits = W_g h_last + eps * softplus(W_n h_mean (+ b_n)),   eps ~ N(0, 1),   expert = argmax(logits)

h_last is the base's final hidden state at the last real token (the last 1 of the router's mask, so
left and right padding both work). Two noise variants, chosen by AdapterSettings.router_noise and
saved in config.json:

- "masked-train" (the default): W_n has no bias, h_mean is the mean over the real tokens only (padding
  never moves the noise scale), and the noise is added in training only, so eval mode is
  deterministic and the expert chosen for a sequence does not depend on its padding or its batch.
- "official": as the paper's code has it: the noise layer has a bias (b_n), h_mean is the mean over ALL
  positions (padding included), and the noise is added in evaluation too, so repeated eval passes
  may pick different experts for an ambiguous sequence.

The chosen expert is a hard one-hot (argmax), so the task loss gives the router no gradient; it learns
from the cross-entropy of its logits against the task id (weight SEQUENCE_ROUTER_CE_WEIGHT = 21 in the
paper's recipe).

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter_base import is_fresh, kaiming_init

ROUTER_NOISE = ("masked-train", "official")

# The weight of the router's cross-entropy in the TT-LoRA MoE paper's stage-2 loss.
SEQUENCE_ROUTER_CE_WEIGHT = 21.0


def last_token_states(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """hidden: (B, S, H), attention_mask: (B, S) -> (B, H) at each row's last real token (works for
    left and right padding: the position of the last 1)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask.to(hidden.device).bool() * (positions + 1)).argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_token_states(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, S, H) -> (B, H), the mean over real tokens."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class SequenceRouter(nn.Module):
    """gate: (E, H) reads the last-token state; noise: (E, H) (+ bias (E,) for "official") scales
    Gaussian noise (see the module docstring for the two variants)."""

    def __init__(self, hidden_size: int, num_experts: int, noise: str = "masked-train"):
        super().__init__()
        if noise not in ROUTER_NOISE:
            raise ValueError(f"`router_noise` must be one of {list(ROUTER_NOISE)}, got {noise!r}. Fix: use "
                             "'masked-train' (default) or 'official'.")
        self.noise_variant = noise
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.noise = nn.Linear(hidden_size, num_experts, bias=noise == "official")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kaiming_init(self.gate.weight)
        kaiming_init(self.noise.weight)
        if is_fresh(self.noise.bias):  # nn.Linear's default bias init
            bound = 1.0 / math.sqrt(self.noise.in_features)
            with torch.no_grad():
                self.noise.bias.uniform_(-bound, bound)

    @property
    def adds_noise(self) -> bool:
        """Whether this forward adds noise: always for "official", in training only for the default."""
        return self.noise_variant == "official" or self.training

    def forward(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """hidden (B, S, H), attention_mask (B, S) or None -> router logits (B, E); the chosen expert is
        their argmax."""
        hidden = hidden.to(self.gate.weight.dtype)
        logits = self.gate(last_token_states(hidden, attention_mask))
        if self.adds_noise:
            mean = hidden.mean(dim=1) if self.noise_variant == "official" else mean_token_states(hidden, attention_mask)
            scale = F.softplus(self.noise(mean))
            logits = logits + torch.randn_like(logits) * scale
        return logits
