"""The inferring fast path every adapter layer shares: in eval mode without autograd a layer adds its update
into the base output in place, from an inference plan (its factors folded, converted and laid out once per
parameter version), with the fewest ops a decoding token can take.

FastPath is mixed into AdaptedLinear (adapter_base.py), whose attributes it reads: in_features, out_features,
num_experts, expert_rank (routed methods), scaling, shared, bank_key and expert_bank. Each method supplies
plan_sources, build_plan and apply_plan_.

Part of the bundle that travels inside every saved model: imports only torch and nothing else.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def version_stamp(tensors: Sequence[torch.Tensor]) -> list:
    """The key every inference cache is checked against: each tensor's data pointer and version counter. The version
    is bumped by every in-place change (an optimizer step, load_state_dict, copy_); a new tensor put in place
    (load_state_dict(assign=True), `param.data = ...`, a dtype or device change outside .to()) is allocated while the
    old one still lives, so its data pointer differs: dtype, device and shape need no check of their own (that check
    cost ~0.2 us a tensor, on every call of every layer)."""
    return [(t.data_ptr(), t._version) for t in tensors]


def laid_out(tensor: torch.Tensor, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """tensor in `dtype`, contiguous (a copy, outside autograd): a small product reads a contiguous right-hand factor
    fastest (one thread, (1, 32) x (32, 1536): 4.4 us from a contiguous (32, 1536) against 6.5 from B^T, the
    transposed view of a (1536, 32) B; 42 against 61 us from cold memory). None where the conversion would round it
    down: only a conversion up to fp32 is made (half-precision factors for a CPU's fp32 products); fp32 factors
    beside a bf16 input on a GPU take the general path, which computes in the adapter's own dtype."""
    if tensor.dtype != dtype and dtype != torch.float32:
        return None
    return tensor.detach().to(dtype).contiguous()


class FastPath:
    """The inferring fast path of AdaptedLinear (see the module docstring)."""

    def up_laid_out(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """B^T (r, D_out), laid_out in `dtype` for the inference plan: the shared bank's one copy (held by the shared
        state for every layer that reads it), or a copy of this layer's own B."""
        if self.bank_key is None:
            return laid_out(self.expert_bank.t(), dtype)
        return self.shared.transposed_bank(self.bank_key, dtype)

    def infer_into(self, x: torch.Tensor, result: torch.Tensor) -> bool:
        """Inferring: adds delta(x) into the base output `result` in place and returns True, or returns False (and
        changes nothing) where the fast path does not apply, so forward takes the general path.

        x: (..., D_in); result: (..., D_out), the fresh output of base_forward (no autograd graph while inferring,
        so writing into it is safe). A decoding token's adapter arithmetic is a few (N, 576) x (576, 32) products,
        cheaper than the dispatch of the ops around them: this path reads the method's inference plan (its factors
        folded, converted and laid out once per parameter version) and adds the update with the fewest ops (mm,
        one addmm_ into the base output instead of a matmul, a scale and an add). It equals the general path up
        to float rounding. A bf16 or fp16 input on a CPU has its update computed in fp32 and then added into the
        output (product_dtype says why). Off under autocast (the ops would mix dtypes); never reached under
        torch.compile (forward calls it only while `inferring`, which is off there)."""
        device_type = x.device.type
        if x.dtype != result.dtype or not result.is_contiguous() or torch.is_autocast_enabled(device_type):
            return False
        dtype = self.product_dtype(x.dtype, device_type)
        plan = self.inference_plan(dtype)
        if plan is None:
            return False
        flat = x.reshape(-1, self.in_features)
        return self.apply_plan_(plan, flat if dtype == x.dtype else flat.to(dtype), result.view(-1, self.out_features),
                                x.shape[:-1])

    @staticmethod
    def product_dtype(dtype: torch.dtype, device_type: str) -> torch.dtype:
        """The dtype the fast path's products run in for an input of `dtype` on a `device_type` device: fp32 for a bf16
        or fp16 input on a CPU, else the input's.
        A decoding token's adapter products are tiny, and on a CPU half precision has no fast kernel for them: one
        thread, (1, 576) x (576, 32) takes 22 us in bf16 against 4.3 us in fp32, and (1, 32) x (32, 1536) 32 against 6
        (docs/speed-epyc/REPORT.md: an AMD EPYC with native AVX512-BF16), while the base's large products do gain from
        bf16. So the update is computed in fp32 from fp32 copies of the factors (in the plan) and added into the
        output."""
        if device_type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            return torch.float32
        return dtype

    def inference_plan(self, dtype: torch.dtype) -> Optional[tuple]:
        """The tensors the method's fast path reads for products in `dtype` (build_plan), cached while inferring as
        `cached` caches (keyed on plan_sources(), the parameters and buffers they come from), so an optimizer step,
        load_state_dict, an in-place edit, .to() or a dtype change rebuilds it. None where the method has no fast
        path (then forward runs its delta()). Written out rather than through cached(): this check is what every
        decoding call of every layer pays, and cached()'s own (the inferring test, the closure) cost ~1 us more."""
        key = version_stamp(self.plan_sources())
        store = self.__dict__.get("_inference_cache")
        hit = None if store is None else store.get(dtype)
        if hit is not None and hit[0] == key:
            return hit[1]
        plan = self.build_plan(dtype)
        self.__dict__.setdefault("_inference_cache", {})[dtype] = (key, plan)
        return plan

    def plan_sources(self) -> list:
        """The tensors the inference plan is computed from (this default: none, as build_plan has no plan)."""
        return []

    def build_plan(self, dtype: torch.dtype) -> Optional[tuple]:
        """Per method: the factors its apply_plan_ reads, in `dtype` and in the layout its products read fastest;
        None where it has no fast path (this default: e.g. a user's own method, which then runs its delta()), or
        where the conversion would round a factor down (fp32 adapter factors beside a bf16 input on a GPU: the
        general path computes in the adapter's own dtype)."""
        return None

    def apply_plan_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        """Per method: out (N, D_out) += delta(flat (N, D_in)) in place from its plan, True; False where it cannot
        serve this call (a TT-LoRA MoE whose experts were not chosen), changing nothing. flat and the plan are in
        the product dtype; out may be in half precision beside them (a CPU's bf16 model): the update is then
        computed in fp32 and added into it, rounded once (add_product_)."""
        raise NotImplementedError

    @staticmethod
    def add_product_(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float) -> None:
        """out (N, D_out) += alpha * left (N, k) @ right (k, D_out) in place: one addmm_ where the dtypes agree; for a
        half-precision out beside fp32 factors, the fp32 product added into it (add_ computes in fp32 and rounds
        once), rather than an fp32 scratch zeroed, filled and added (two ops more a layer)."""
        if out.dtype == left.dtype:
            out.addmm_(left, right, alpha=alpha)
        else:
            out.add_(torch.mm(left, right), alpha=alpha)

    def routed_plan(self, down_t: torch.Tensor, router_t: torch.Tensor, dtype: torch.dtype) -> Optional[tuple]:
        """The plan of dense token routing (MoELoRA, TalkLoRA) from its down-projection (D_in, r) and router map
        (D_in, E), both linear in x: (down_t, router_t, up_t (r, D_out), spread (E, r)), laid_out in `dtype`, or None
        where a factor would be rounded down. spread[e, j] = 1 where column j of the code belongs to expert e: probs
        (N, E) @ spread gives each code column its expert's weight exactly (one 1 and zeros a column), in one op
        where a (N, E, d) view, an unsqueeze and a broadcast multiply take four."""
        spread = torch.repeat_interleave(torch.eye(self.num_experts, device=down_t.device), self.expert_rank, dim=1)
        plan = (laid_out(down_t, dtype), laid_out(router_t, dtype), self.up_laid_out(dtype), spread.to(dtype))
        return None if any(factor is None for factor in plan) else plan

    def routed_update_(self, plan: tuple, flat: torch.Tensor, out: torch.Tensor, lead: torch.Size) -> bool:
        """Dense token routing (MoELoRA, TalkLoRA) inferring: out += s * sum_e g_e up_e z_e in place, from the
        routed_plan (down_t, router_t, up_t, spread).

        flat: (N, D_in); out: (N, D_out), in flat's dtype or in half precision (apply_plan_). The code z = flat down_t
        (N, r), expert e owning columns [e*d, (e+1)*d), is gated column by column with probs @ spread, and up_t
        (expert e owning rows [e*d, (e+1)*d)) adds it into out. Two mm for the code and the logits rather than one
        over [down_t, router_t] and two slices: the slices, and the gating on a strided slice, cost more than the
        second mm (measured, N = 1 and 8). Reports to the recorder only when a trace or the aux loss wants the
        decision."""
        down_t, router_t, up_t, spread = plan
        logits = torch.mm(flat, router_t)  # (N, E)
        # route()'s rule: fp32 weights, dense (softmax's dtype argument costs a conversion op even when it is a no-op)
        probs = torch.softmax(logits, -1) if logits.dtype == torch.float32 else torch.softmax(logits, -1, torch.float32)
        recorder = self.shared.recorder
        if recorder.listening:
            recorder.report(self.module_name, self.layer_index, lead, logits, probs, probs, None)
        gates = torch.mm(probs if probs.dtype == flat.dtype else probs.to(flat.dtype), spread)  # (N, r)
        self.add_product_(out, torch.mm(flat, down_t).mul_(gates), up_t, self.scaling)
        return True
