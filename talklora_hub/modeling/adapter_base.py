"""What every adapter layer shares: the frozen base map it wraps, its dropout, its place in the model,
and the model-wide state (shared expert banks, the routing recorder, the chosen sequence experts).

Part of the bundle that travels inside every saved model: imports only torch, transformers and
sibling files.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from .adapter_settings import AdapterSettings
from .routing import RoutingRecorder

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def is_adaptable(module: nn.Module) -> bool:
    """Adapters wrap dense maps: nn.Linear, or GPT-2's Conv1D (a linear map with a transposed weight)."""
    return isinstance(module, (nn.Linear, Conv1D))


def layer_index_of(name: str) -> int:
    """The transformer block a module belongs to: the first integer path component, or -1."""
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else -1


def is_fresh(param: Optional[torch.Tensor]) -> bool:
    """False for tensors transformers' loader already filled from a checkpoint: never re-initialise those."""
    return param is not None and not getattr(param, "_is_hf_initialized", False)


@torch.no_grad()
def kaiming_init(param: torch.Tensor) -> None:
    """nn.Linear's default init (kaiming-uniform with a = sqrt(5)), as the papers' code uses."""
    if is_fresh(param):
        nn.init.kaiming_uniform_(param, a=math.sqrt(5))


@torch.no_grad()
def zero_init(param: torch.Tensor) -> None:
    if is_fresh(param):
        param.zero_()


def laid_out(tensor: torch.Tensor, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """tensor in `dtype`, contiguous (a copy, outside autograd): a small product reads a contiguous right-hand factor
    fastest (one thread, (1, 32) x (32, 1536): 4.4 us from a contiguous (32, 1536) against 6.5 from B^T, the
    transposed view of a (1536, 32) B; 42 against 61 us from cold memory). None where the conversion would round it
    down: only a conversion up to fp32 is made (half-precision factors for a CPU's fp32 products); fp32 factors
    beside a bf16 input on a GPU take the general path, which computes in the adapter's own dtype."""
    if tensor.dtype != dtype and dtype != torch.float32:
        return None
    return tensor.detach().to(dtype).contiguous()


class SharedAdapterState(nn.Module):
    """Model-wide adapter state, registered once at the top of the model.

    banks: the expert up-projections shared by all layers of one projection type (TalkLoRA's setting),
    each (D_out, r); expert e owns columns [e*d, (e+1)*d). Registered here exactly once so that
    saving never sees one tensor under several names.
    recorder: collects routing decisions (see routing.RoutingRecorder).
    sequence_experts: (batch,) expert index per sequence for a TT-LoRA MoE, or None.
    adapters_enabled: False runs the bare base model (the TT-LoRA MoE router's first pass).
    """

    def __init__(self):
        super().__init__()
        self.banks = nn.ParameterDict()
        self.recorder = RoutingRecorder()
        self.sequence_experts: Optional[torch.Tensor] = None
        self.adapters_enabled = True

    def bank(self, key: str, out_features: int, rank: int, device: torch.device, dtype: torch.dtype) -> str:
        """Creates (once) the bank for `key` and returns the key under which it is stored."""
        if key in self.banks:
            if tuple(self.banks[key].shape) != (out_features, rank):
                key = f"{key}_{out_features}"  # same projection name, other width: its own bank
                return self.bank(key, out_features, rank, device, dtype)
            return key
        self.banks[key] = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        zero_init(self.banks[key])
        return key

    def reset_parameters(self) -> None:
        for bank in self.banks.values():
            zero_init(bank)

    def transposed_bank(self, key: str, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """B^T (r, D_out) of bank `key`, laid_out in `dtype`, for the inference plans of the layers that share it:
        built once per bank version (keyed as AdaptedLinear.cached keys) and held once, not once per layer. Each
        layer's plan is keyed on the bank too, so a changed bank rebuilds the plans, and the first of them this."""
        bank = self.banks._parameters[key]
        stamp = (bank.data_ptr(), bank._version, dtype)
        store = self.__dict__.setdefault("_transposed_banks", {})
        hit = store.get(key)
        if hit is None or hit[0] != stamp:
            hit = store[key] = (stamp, laid_out(bank.t(), dtype))
        return hit[1]

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_transposed_banks", None)
        return super()._apply(fn, *args, **kwargs)

    def unchosen_experts(self, num_experts: int, device: torch.device) -> Optional[torch.Tensor]:
        """(B, 1, E, 1) bool, True at the experts that do NOT serve each sequence (sequence_experts (B,)), or None
        when none is chosen.

        Built once per forward and shared by every TT-LoRA MoE layer: keyed on the very tensor object (held here,
        so its id cannot be reused by another), its version counter (an in-place change; tensors made under
        inference_mode have none), the recorder's forward count (so every model forward rebuilds it), E and the
        device."""
        chosen = self.sequence_experts
        if chosen is None:
            return None
        version = None if chosen.is_inference() else chosen._version
        key = (version, self.recorder.forwards, num_experts, device)
        hit = self.__dict__.get("_expert_mask")
        if hit is not None and hit[0] is chosen and hit[1] == key:
            return hit[2]
        mask = F.one_hot(chosen.to(device).long(), num_experts).view(-1, 1, num_experts, 1) == 0
        self.__dict__["_expert_mask"] = (chosen, key, mask)
        return mask


class AdaptedLinear(nn.Module):
    """A frozen dense map y = W0 x + b plus a trainable update: forward(x) = base(x) + delta(x).

    x: (..., D_in) -> (..., D_out). The base weight and bias stay under their original names
    (`weight`, `bias`), so a model's state dict is the base's plus the adapter's tensors.
    weight: (D_out, D_in) for nn.Linear, (D_in, D_out) for GPT-2's Conv1D (fan_in_fan_out).
    """

    method = ""
    base_parameter_names = ("weight", "bias")

    def __init__(self, base: nn.Module, name: str, settings: AdapterSettings, shared: SharedAdapterState):
        super().__init__()
        self.fan_in_fan_out = isinstance(base, Conv1D)
        rows, cols = base.weight.shape
        self.in_features, self.out_features = (rows, cols) if self.fan_in_fan_out else (cols, rows)
        # A quantized base (bitsandbytes Linear8bitLt / Linear4bit: integer or packed weights) computes W0 x with
        # its own forward; a plain float map is computed here, bit for bit as nn.Linear / Conv1D would.
        self.quantized = type(base) not in (nn.Linear, Conv1D) or not base.weight.dtype.is_floating_point
        if self.quantized:
            self.in_features = getattr(base, "in_features", self.in_features)
            self.out_features = getattr(base, "out_features", self.out_features)
        # The same parameter objects as the base module's (not copies), under the base's names.
        self.weight = base.weight
        self.bias = base.bias
        # A plain attribute (its tensors are registered above, once), kept only where its own forward is needed.
        self.__dict__["base_layer"] = base if self.quantized else None
        self.module_name = name
        self.layer_index = layer_index_of(name)
        self.settings = settings
        self.num_experts = settings.num_experts
        self.scaling = settings.scaling
        self.input_dropout = nn.Dropout(settings.lora_dropout)
        # A plain attribute, not a submodule: the state is registered once, at the model's top.
        self.__dict__["shared"] = shared

    # ---- construction helpers -------------------------------------------------------------
    @property
    def new_parameter_dtype(self) -> torch.dtype:
        """The base weight's dtype, or for a quantized base its compute dtype (fp32 when it has none)."""
        if self.weight.dtype.is_floating_point:
            return self.weight.dtype
        compute = getattr(self.base_layer, "compute_dtype", None)
        return compute if isinstance(compute, torch.dtype) and compute.is_floating_point else torch.float32

    def new_parameter(self, *shape: int) -> nn.Parameter:
        """An adapter tensor on the base weight's device, in its dtype (fp32 if the base is quantized)."""
        return nn.Parameter(torch.empty(*shape, device=self.weight.device, dtype=self.new_parameter_dtype))

    def init_expert_bank(self, rank: int) -> None:
        """The up-projection B (D_out, rank): this layer's own, or the shared bank of its projection type."""
        if self.settings.share_expert_banks:
            leaf = self.module_name.rsplit(".", 1)[-1]
            self.bank_key = self.shared.bank(leaf, self.out_features, rank, self.weight.device,
                                             self.new_parameter_dtype)
            self.register_parameter("lora_B", None)
            holder, name = self.shared.banks, self.bank_key
        else:
            self.bank_key = None
            self.lora_B = self.new_parameter(self.out_features, rank)
            holder, name = self, "lora_B"
        # The dict B lives in and its name there (plain attributes): expert_bank reads B on every decoding call of
        # every layer (it keys the inference plan), and Module.__getattr__ / ParameterDict lookups cost ~1.5 us.
        # The dict is the holder's own, updated in place by load_state_dict, .to() and assignments.
        self.__dict__["_bank_slot"] = (holder._parameters, name)

    def up_laid_out(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """B^T (r, D_out), laid_out in `dtype` for the inference plan: the shared bank's one copy (held by the shared
        state for every layer that reads it), or a copy of this layer's own B."""
        if self.bank_key is None:
            return laid_out(self._parameters["lora_B"].t(), dtype)
        return self.shared.transposed_bank(self.bank_key, dtype)

    @property
    def expert_bank(self) -> torch.Tensor:
        """B: (D_out, r)."""
        store, name = self.__dict__["_bank_slot"]
        return store[name]

    # ---- inference cache ----------------------------------------------------------------------
    @property
    def inferring(self) -> bool:
        """Eval mode without autograd (generate(), scoring under no_grad), eager: parameter-only products (folds,
        boundary factors) are computed once and cached. Not inside torch.compile: a compiled graph cannot keep the
        cache, so it would recompute each fold on every decoding step, which costs more than the per-token
        arithmetic the fold saves; compiled, the layers run the training arithmetic, which inductor fuses."""
        return not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def cached(self, name, tensors, compute):
        """compute() (a product of parameters only), cached under `name` (any hashable) across forwards while
        inferring.

        The cache is keyed on each tensor's data pointer and version counter (bumped by every in-place change: an
        optimizer step, load_state_dict, copy_), and dropped by .to()/.half()/.cuda() (_apply), so it is never
        stale; in training or with grad enabled nothing is cached (the parameters change every step). A new
        tensor put in place (load_state_dict(assign=True), `param.data = ...`, a dtype or device change outside
        .to()) is allocated while the old one still lives, so its data pointer differs: dtype, device and shape
        need no check of their own (that check cost ~0.2 us a tensor, on every call of every layer)."""
        if not self.inferring:  # training, or a traced graph (which must not branch on data_ptr)
            return compute()
        key = [(t.data_ptr(), t._version) for t in tensors]
        store = self.__dict__.setdefault("_inference_cache", {})
        hit = store.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute()
        store[name] = (key, value)
        return value

    def own_tensors(self, *names: str) -> list:
        """This layer's own parameters or buffers `names`, read from the module's dicts: nn.Module.__getattr__
        costs ~0.6 us a name, paid on every decoding call of every layer when they key a cache."""
        params, buffers = self._parameters, self._buffers
        return [params[name] if name in params else buffers[name] for name in names]

    def down_and_router(self, x: torch.Tensor, router_rows, *router_tensors: torch.Tensor):
        """Inferring, for adapters with a down-projection lora_A (r, D_in) whose router is linear in x: one matmul
        with the cached [A; router_rows()] ((r + E), D_in) gives the code z (N, r) and the router logits (N, E)
        together, instead of one matmul each (equal up to float rounding)."""
        fused = self.cached("down_and_router", (self.lora_A,) + router_tensors,
                            lambda: torch.cat([self.lora_A, router_rows()]))
        both = F.linear(x, fused)
        return both[:, :self.settings.r], both[:, self.settings.r:]

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_inference_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def dropout(self, module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        """module(x) while training; x itself in eval mode, without the module call (which costs more than the
        arithmetic of a decoding token's small tensors: dropout is the identity there)."""
        return module(x) if self.training and module.p > 0 else x

    # ---- forward ----------------------------------------------------------------------------
    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return self.base_layer(x)
        if self.fan_in_fan_out:  # exactly GPT-2 Conv1D's arithmetic, so a zero update is bit-exact
            out_shape = x.shape[:-1] + (self.out_features,)
            flat = x.reshape(-1, self.in_features)
            y = torch.addmm(self.bias, flat, self.weight) if self.bias is not None else flat @ self.weight
            return y.view(out_shape)
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_forward(x)
        if not self.shared.adapters_enabled:
            return result
        if self.inferring and not self.quantized and self.infer_into(x, result):
            return result
        return result + self.delta(x.to(self.adapter_dtype)).to(result.dtype)

    # ---- the inferring fast path --------------------------------------------------------------
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
        key = [(t.data_ptr(), t._version) for t in self.plan_sources()]
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

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype of the adapter's tensors, read from its first own parameter (found once by name: walking
        named_parameters on every forward cost more than a decoding token's adapter arithmetic)."""
        name = self.__dict__.get("_dtype_source")
        if name is None:
            name = next(n for n, _ in self.named_parameters() if n not in self.base_parameter_names)
            self.__dict__["_dtype_source"] = name
        return self.get_parameter(name).dtype

    def scaled(self, out: torch.Tensor) -> torch.Tensor:
        """out * scaling, skipping the pass over (N, D_out) when the scale is exactly 1 (the default)."""
        return out if self.scaling == 1.0 else out * self.scaling

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update's output, (..., D_out)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The static update as a matrix (D_out, D_in); only for input-independent adapters."""
        raise ValueError(
            f"{type(self).__name__} ({self.method}) cannot be merged into the base weights: its routing "
            "weights g(x) depend on each token, so the update sum_i g_i(x) B_i A_i changes with the input and "
            "no single matrix equals it. Save the full model (save_pretrained) instead.")

    def reset_adapter_parameters(self) -> None:
        raise NotImplementedError

    def adapter_parameter_names(self) -> List[str]:
        """Names (relative to this layer) of its own trainable tensors: everything but the base map."""
        return [n for n, _ in self.named_parameters() if n not in self.base_parameter_names]

    def adapter_buffer_names(self) -> List[str]:
        """Names of its own fixed tensors (e.g. a frozen Talking Module): part of the adapter, not the base."""
        return [n for n, _ in self.named_buffers()]

    def extra_repr(self) -> str:
        return (f"method={self.method}, in_features={self.in_features}, out_features={self.out_features}, "
                f"r={self.settings.r}, num_experts={self.num_experts}")


def merged_base_module(layer: AdaptedLinear) -> nn.Module:
    """A plain nn.Linear / Conv1D holding W0 + delta W (static adapters only)."""
    if layer.quantized:
        raise ValueError(f"{layer.module_name}: a quantized base ({type(layer.base_layer).__name__}) cannot take a "
                         "merged update without losing the quantization. Fix: load the base unquantized to merge, or "
                         "keep the adapter unmerged.")
    delta = layer.delta_weight().to(layer.weight.dtype)
    if layer.fan_in_fan_out:
        module = Conv1D(layer.out_features, layer.in_features)
        weight = layer.weight.detach() + delta.T
    else:
        module = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        weight = layer.weight.detach() + delta
    module.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
        if layer.bias is not None:
            module.bias.copy_(layer.bias.detach())
    return module


def adapter_layers(model: nn.Module) -> Dict[str, AdaptedLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedLinear)}
