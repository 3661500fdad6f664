"""MoELoRA, the TalkLoRA paper's baseline: E LoRA experts routed by a softmax over the raw input.

z = A x split into E chunks z_i (d = r/E each); g = softmax(R_x x); h = W0 x + s * sum_i g_i B_i z_i.
Dropout p = lora_dropout on x (before A; the router reads the undropped x), on g and on the scaled
output, as the official TalkLoRA repo's MoELoRA baseline (and TalkLoRA here) has it; training only.
Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter_base import AdaptedLinear, kaiming_init, zero_init
from .methods import MethodSpec, register_method
from .routing import ExpertDispatch, grouped_down, grouped_up, jitter, route


class MoELoRALinear(AdaptedLinear):
    """lora_A: (r, D_in), expert e owns rows [e*d, (e+1)*d); router_weight: (E, D_in) reading x;
    B: (D_out, r) per layer (default) or a shared bank, expert e owns columns [e*d, (e+1)*d)."""

    method = "moelora"

    def __init__(self, base, name, settings, shared):
        super().__init__(base, name, settings, shared)
        self.expert_rank = settings.expert_rank
        self.top_k = settings.num_experts_per_tok
        self.lora_A = self.new_parameter(settings.r, self.in_features)
        self.router_weight = self.new_parameter(self.num_experts, self.in_features)
        self.init_expert_bank(settings.r)
        # No parameters: adding them leaves saved state dicts unchanged; identities in eval mode.
        self.routing_dropout = nn.Dropout(settings.lora_dropout)
        self.output_dropout = nn.Dropout(settings.lora_dropout)
        self.reset_adapter_parameters()

    def reset_adapter_parameters(self) -> None:
        kaiming_init(self.lora_A)
        kaiming_init(self.router_weight)
        zero_init(self.lora_B)  # no-op when B is a shared bank (initialised by SharedAdapterState)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        inputs = self.dropout(self.input_dropout, flat)
        if self.inferring and self.top_k is None:  # dense: the code and the router both read x, one matmul
            z, logits = self.down_and_router(flat, lambda: self.router_weight, self.router_weight)
        else:
            z = None  # computed below: per expert with top-k, after the input dropout when dense
            logits = F.linear(jitter(flat, self.settings.router_jitter_noise, self.training), self.router_weight)
        probs, weights, top_idx = route(logits, self.top_k)
        self.shared.recorder.report(self.module_name, self.layer_index, lead, logits, probs, weights, top_idx)
        # After the report: recorded weights (and the aux loss) describe the router, not the dropout mask.
        weights = self.dropout(self.routing_dropout, weights)  # (N, E)
        bank, d = self.expert_bank, self.expert_rank
        if top_idx is None:
            # Dense: scaling each expert's chunk of z by g_i and applying B once equals sum_i g_i B_i z_i.
            z = (F.linear(inputs, self.lora_A) if z is None else z).view(-1, self.num_experts, d)
            out = F.linear((z * weights.to(z.dtype).unsqueeze(-1)).flatten(1), bank)
        else:
            # The router reads x, so even the down-projection runs only on each expert's own tokens.
            dispatch = ExpertDispatch(top_idx, weights)
            codes = grouped_down(dispatch.gather(inputs), self.lora_A)
            out = dispatch.combine(grouped_up(dispatch.gate(codes), bank))
        return self.dropout(self.output_dropout, self.scaled(out)).view(*lead, self.out_features)

    def plan_sources(self) -> list:
        return self.own_tensors("lora_A", "router_weight") + [self.expert_bank]

    def build_plan(self, dtype: torch.dtype):
        """Dense routing: routed_plan of A^T (D_in, r) and R_x^T (D_in, E), with B^T (r, D_out): contiguous copies (so
        the layer holds its factors twice while inferring; the adapter is ~5% of the base's size, r = 32 on
        SmolLM2); top-k dispatch has no plan."""
        if self.top_k is not None:
            return None
        return self.routed_plan(self.lora_A.t(), self.router_weight.t(), dtype)

    def apply_plan_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        return self.routed_update_(plan, flat, out, lead)

register_method(MethodSpec(
    name="moelora", label="MoELoRA", layer_class=MoELoRALinear, routing="token",
    description="E LoRA experts weighed per token by a router on the raw input", default_num_experts=4,
    card_fields=("r", "lora_alpha", "num_experts_per_tok", "share_expert_banks", "router_aux_loss_coef", "router_jitter_noise")))
