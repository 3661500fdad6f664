"""TalkLoRA (arXiv 2604.06291): LoRA experts that talk before the router decides.

z = A x (r), chunks z_i (d = r/E); expert i outputs o_i = B_i M_i z_i with M_i (d, d);
the Talking Module T (E, E) mixes the chunks across experts, z~_f = sum_e T[f, e] z_e, and only
the router reads the mixed code: g = softmax(R z~), R (E, r). h = W0 x + s * sum_i g_i o_i.
Dropout on x, on g and on the output. B is shared across layers of one projection type by default.
With T = I it is the no-talk variant; with M_i = I, per-layer B and a router on x it is MoELoRA.

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter_base import AdaptedLinear, is_fresh, kaiming_init, zero_init
from .methods import MethodSpec, register_method
from .routing import ExpertDispatch, grouped_up, jitter, route


class TalkLoRALinear(AdaptedLinear):
    """lora_A: (r, D_in); expert_maps M: (E, d, d); talk T: (E, E); router_weight R: (E, r);
    B: (D_out, r) shared bank (default) or per layer. Init: kaiming-uniform(a=sqrt 5) for A, M, T, R
    (or T = I with talk_init='identity'); B = 0, so delta W = 0 at step 0. With talk_trainable=False, T is a
    buffer fixed at its init (T = I and talk_init='identity': the no-talk ablation)."""

    method = "talklora"

    def __init__(self, base, name, settings, shared):
        super().__init__(base, name, settings, shared)
        E, d = self.num_experts, settings.expert_rank
        self.expert_rank = d
        self.top_k = settings.num_experts_per_tok
        self.lora_A = self.new_parameter(settings.r, self.in_features)
        self.expert_maps = self.new_parameter(E, d, d)
        if settings.talk_trainable:
            self.talk = self.new_parameter(E, E)
        else:
            # A persistent buffer, not a parameter: saved with the model, but never handed to the optimizer
            # (mark_trainable and adapter_parameter_names only see parameters). The no-talk ablation.
            self.register_buffer("talk", self.new_parameter(E, E).data)
        self.router_weight = self.new_parameter(E, settings.r)
        self.init_expert_bank(settings.r)
        self.routing_dropout = nn.Dropout(settings.lora_dropout)
        self.output_dropout = nn.Dropout(settings.lora_dropout)
        self.reset_adapter_parameters()

    @torch.no_grad()
    def reset_adapter_parameters(self) -> None:
        kaiming_init(self.lora_A)
        for e in range(self.num_experts) if is_fresh(self.expert_maps) else ():
            nn.init.kaiming_uniform_(self.expert_maps[e], a=5 ** 0.5)  # each M_i as its own d x d map
        if self.settings.talk_init == "identity":
            if is_fresh(self.talk):
                self.talk.copy_(torch.eye(self.num_experts))
        else:
            kaiming_init(self.talk)
        kaiming_init(self.router_weight)
        zero_init(self.lora_B)  # no-op when B is a shared bank (initialised by SharedAdapterState)

    def folded_router(self) -> torch.Tensor:
        """(E, r): R (T kron I_d), the router with the Talking Module folded in. R z~ = R (T kron I_d) z, so the
        logits need no (N, r) mixed code. R_eff[k, e, j] = sum_f R[k, f, j] T[f, e]."""
        E, d = self.num_experts, self.expert_rank
        return torch.einsum("kfj,fe->kej", self.router_weight.view(E, E, d), self.talk).reshape(E, E * d)

    def router_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, r) -> logits (N, E) = R z~ with z~ the talked code."""
        return F.linear(z, self.folded_router())

    def code_and_logits(self, x: torch.Tensor):
        """x: (N, D_in) -> (z (N, r), router logits (N, E)).

        Inferring, one matmul gives both: [A; R_eff A] (r + E, D_in) is cached, so a decoding token costs one
        down-projection instead of a down-projection, a router and the folds ((R_eff A) x is summed in another
        order than R_eff (A x): equal up to float rounding)."""
        if self.inferring:  # dropout and jitter are off in eval mode
            return self.down_and_router(x, lambda: self.folded_router() @ self.lora_A, self.router_weight, self.talk)
        z = F.linear(self.dropout(self.input_dropout, x), self.lora_A)  # (N, r)
        return z, self.router_logits(jitter(z, self.settings.router_jitter_noise, self.training))

    def expert_up_projection(self) -> torch.Tensor:
        """(D_out, r) with columns [e*d, (e+1)*d) equal to B_e M_e: each expert's M folded into its B,
        a (D_out, r, d) product independent of the number of tokens (cached while inferring)."""
        return self.cached("up", (self.expert_bank, self.expert_maps), self._fold_up_projection)

    def _fold_up_projection(self) -> torch.Tensor:
        E, d = self.num_experts, self.expert_rank
        bank = self.expert_bank.view(self.out_features, E, d)
        return torch.einsum("oek,ekj->oej", bank, self.expert_maps).reshape(self.out_features, E * d)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        z, logits = self.code_and_logits(x.reshape(-1, self.in_features))  # (N, r), (N, E)
        probs, weights, top_idx = route(logits, self.top_k)
        self.shared.recorder.report(self.module_name, self.layer_index, lead, logits, probs, weights, top_idx)
        weights = self.dropout(self.routing_dropout, weights)
        d = self.expert_rank
        if top_idx is None:
            gated = z.view(-1, self.num_experts, d) * weights.to(z.dtype).unsqueeze(-1)  # (N, E, d)
            if torch.compiler.is_compiling():
                # Each M_e applied to the N codes (N E d^2 products) rather than folded into B (D_out E d^2): a
                # compiled graph would refold every decoding step. The same function, summed in another order.
                mapped = torch.einsum("ekj,nej->nek", self.expert_maps, gated)
                out = F.linear(mapped.flatten(1), self.expert_bank)
            else:
                out = F.linear(gated.flatten(1), self.expert_up_projection())
        else:
            up = self.expert_up_projection()
            # The router needed every chunk of z; only the unselected experts' up-projections are skipped.
            dispatch = ExpertDispatch(top_idx, weights)
            codes = dispatch.gather_chunks(z.view(-1, self.num_experts, d))
            out = dispatch.combine(grouped_up(dispatch.gate(codes), up))
        return self.dropout(self.output_dropout, self.scaled(out)).view(*lead, self.out_features)

    def plan_sources(self) -> list:
        return self.own_tensors("lora_A", "expert_maps", "router_weight", "talk") + [self.expert_bank]

    def build_plan(self, dtype: torch.dtype):
        """Dense routing: routed_plan of the folded (M A)^T (D_in, r) and (R_eff A)^T (D_in, E), with the
        up-projection B^T (r, D_out) (the shared bank's one transposed copy); top-k dispatch has no plan. Folding each
        M_e into its rows of A (M A = blockdiag(M_e) A, the size of A) rather than into B (B_e M_e, a per-layer
        (D_out, r) copy of the bank) keeps the bank shared. g_e B_e M_e (A_e x) = B_e (g_e (M_e A_e) x), and
        R_eff (A x) = (R_eff A) x: the same function, summed in another order."""
        if self.top_k is not None:
            return None
        return self.routed_plan(*self._fold_down_projection(), dtype)

    def apply_plan_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        return self.routed_update_(plan, flat, out, lead)

    def _fold_down_projection(self) -> tuple:
        """(M A)^T (D_in, r), columns [e*d, (e+1)*d) the rows of M_e A_e; (R_eff A)^T (D_in, E), the router."""
        E, d = self.num_experts, self.expert_rank
        coded = torch.einsum("eij,ejk->eik", self.expert_maps, self.lora_A.view(E, d, -1)).reshape(E * d, -1)
        return coded.t(), (self.folded_router() @ self.lora_A).t()


register_method(MethodSpec(
    name="talklora", label="TalkLoRA", layer_class=TalkLoRALinear, routing="token", reference="arXiv 2604.06291",
    description="E LoRA experts whose codes talk through a mixing matrix T before the router weighs them per token",
    default_num_experts=4, shares_banks_by_default=True, exclusive_fields=("talk_trainable",),
    card_fields=("r", "lora_alpha", "num_experts_per_tok", "share_expert_banks", "talk_init", "talk_trainable", "router_aux_loss_coef",
                 "router_jitter_noise")))
