"""A toy fifth adapter method, defined outside the package the way a user would add one: "CodeLoRA", E LoRA
experts whose router reads the low-rank code z = A x instead of the raw input (TalkLoRA with no talk and no
per-expert maps, B per layer).

    z = A x (r);  g = softmax(R z / t) with R (E, r);  h = W0 x + sum_i g_i B_i z_i   (z_i: expert i's d = r/E rows)

t is the method's own setting `code_temperature` (MethodSpec.settings): AdapterSettings(method="codelora",
method_settings={"code_temperature": 0.5}) validates it, config.json saves it and loading reads it back.

Written like a bundle file: it imports only torch and the bundle's own files by single-dot relative imports,
so load_method_file() can import it beside the bundle and save_pretrained can ship it inside a saved model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapter_base import AdaptedLinear, kaiming_init, zero_init
from .methods import MethodSetting, MethodSpec, register_method
from .routing import route


class CodeLoRALinear(AdaptedLinear):
    """lora_A: (r, D_in); code_router: (E, r); lora_B: (D_out, r), expert e owns columns [e*d, (e+1)*d)."""

    method = "codelora"

    def __init__(self, base, name, settings, shared):
        super().__init__(base, name, settings, shared)
        self.lora_A = self.new_parameter(settings.r, self.in_features)
        self.code_router = self.new_parameter(self.num_experts, settings.r)
        self.lora_B = self.new_parameter(self.out_features, settings.r)
        self.reset_adapter_parameters()

    def reset_adapter_parameters(self) -> None:
        kaiming_init(self.lora_A)
        kaiming_init(self.code_router)
        zero_init(self.lora_B)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        z = F.linear(self.input_dropout(x.reshape(-1, self.in_features)), self.lora_A)  # (N, r)
        logits = F.linear(z, self.code_router) / self.settings.method_settings["code_temperature"]  # (N, E)
        probs, weights, top_idx = route(logits, None)
        self.shared.recorder.report(self.module_name, self.layer_index, lead, logits, probs, weights, top_idx)
        gated = z.view(-1, self.num_experts, self.settings.expert_rank) * weights.to(z.dtype).unsqueeze(-1)
        return self.scaled(F.linear(gated.flatten(1), self.lora_B)).view(*lead, self.out_features)


register_method(MethodSpec(
    name="codelora", label="CodeLoRA", layer_class=CodeLoRALinear, routing="token",
    description="E LoRA experts weighed per token by a router on their own code z = A x", default_num_experts=2,
    card_fields=("r", "lora_alpha"),
    settings=(MethodSetting("code_temperature", 1.0, "the router's softmax temperature t (lower: sharper routing)",
                            check=lambda t: t > 0, rule="must be > 0", fix="use e.g. 1.0 (plain softmax) or 0.5."),)))
