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

    def plan_sources(self) -> list:
        return self.own_tensors("lora_A", "lora_B")

    def build_plan(self, dtype: torch.dtype):
        """(A^T (D_in, r), B^T (r, D_out)): transposed views of the parameters themselves, not laid_out copies, so the
        products are the ones peft runs and a plain LoRA gives exactly the logits peft gives for the same adapter
        (tests/evaluation/test_peft_interop.py; a contiguous B^T is faster but rounds otherwise for one token); for
        a half-precision model on a CPU, fp32 copies of them."""
        lora_A, lora_B = self.lora_A.detach(), self.lora_B.detach()
        if lora_A.dtype != dtype and dtype != torch.float32:
            return None  # fp32 factors beside a bf16 input on a GPU: the general path
        return lora_A.t().to(dtype), lora_B.t().to(dtype)

    def apply_plan_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        """out (N, D_out) += ((flat A^T) B^T) * s in place (a half-precision out takes the fp32 update rounded once).
        Not one addmm_ with alpha = s: that rounds otherwise than peft; the scale is skipped where it is exactly 1
        (x * 1 == x)."""
        down_t, up_t = plan
        update = torch.mm(torch.mm(flat, down_t), up_t)
        out.add_(update if self.scaling == 1.0 else update.mul_(self.scaling))
        return True

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling


register_method(MethodSpec(
    name="lora", label="LoRA", layer_class=LoRALinear, routing="none", reference="",
    description="one static low-rank update s * B A (mergeable into the base)", single_expert=True,
    card_fields=("r", "lora_alpha")))
