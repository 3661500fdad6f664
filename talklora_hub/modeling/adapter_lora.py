"""Plain LoRA: h = W0 x + s * B A x (Hu et al.), the baseline every mixture is compared with.

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapter_base import AdaptedLinear, kaiming_init, zero_init
from .methods import MethodSpec, register_method


class LoRALinear(AdaptedLinear):
    """lora_A: (r, D_in) kaiming-uniform; lora_B: (D_out, r) zeros, so delta W = 0 at step 0."""

    method = "lora"

    def __init__(self, base, name, settings, shared):
        super().__init__(base, name, settings, shared)
        self.lora_A = self.new_parameter(settings.r, self.in_features)
        self.lora_B = self.new_parameter(self.out_features, settings.r)
        self.reset_adapter_parameters()

    def reset_adapter_parameters(self) -> None:
        kaiming_init(self.lora_A)
        zero_init(self.lora_B)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled(F.linear(F.linear(self.dropout(self.input_dropout, x), self.lora_A), self.lora_B))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling


register_method(MethodSpec(
    name="lora", label="LoRA", layer_class=LoRALinear, routing="none", reference="",
    description="one static low-rank update s * B A (mergeable into the base)", single_expert=True,
    card_fields=("r", "lora_alpha")))
