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

    def inference_update_(self, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        """out (N, D_out) += ((flat A^T) B^T) * s in place (transposed views, nothing cached). Not one addmm_ with
        alpha = s: that rounds otherwise, and a plain LoRA must give exactly the logits peft gives for the same
        adapter (tests/evaluation/test_peft_interop.py); the two extra in-place ops cost about 1 µs a layer."""
        lora_A, lora_B = self.lora_A, self.lora_B
        factors = self.factors_in(flat.dtype, "factors", (lora_A, lora_B), (lora_A.t(), lora_B.t()))
        if factors is None:
            return False
        out.add_(torch.mm(torch.mm(flat, factors[0]), factors[1]).mul_(self.scaling))
        return True

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling


register_method(MethodSpec(
    name="lora", label="LoRA", layer_class=LoRALinear, routing="none", reference="",
    description="one static low-rank update s * B A (mergeable into the base)", single_expert=True,
    card_fields=("r", "lora_alpha")))
