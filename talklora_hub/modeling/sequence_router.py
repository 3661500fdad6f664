"""The TT-LoRA MoE router (arXiv 2504.21190): one expert per sequence, chosen from the frozen base
model's own representation of the input.

logits = W_g h_last (+ eps * softplus(W_n h_mean) while training), top-1. h_last is the base's final
hidden state at the last real token, h_mean its mean over real tokens.
Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter_base import kaiming_init


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
    """gate: (E, H) reads the last-token state; noise: (E, H) scales Gaussian noise while training."""

    def __init__(self, hidden_size: int, num_experts: int):
        super().__init__()
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.noise = nn.Linear(hidden_size, num_experts, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kaiming_init(self.gate.weight)
        kaiming_init(self.noise.weight)

    def forward(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """hidden (B, S, H) -> router logits (B, E); the chosen expert is their argmax."""
        hidden = hidden.to(self.gate.weight.dtype)
        logits = self.gate(last_token_states(hidden, attention_mask))
        if self.training:
            scale = F.softplus(self.noise(mean_token_states(hidden, attention_mask)))
            logits = logits + torch.randn_like(logits) * scale
        return logits
