"""What every adapter layer shares: the frozen base map it wraps, its dropout, its place in the model,
and the model-wide state (shared expert banks, the routing recorder, the chosen sequence experts). The inferring
fast path the layers share lives in fast_path.py.

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
from .fast_path import FastPath, laid_out, version_stamp
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
        stamp = (version_stamp([bank]), dtype)
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


class AdaptedLinear(FastPath, nn.Module):
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

        The cache is keyed on the tensors' version_stamp (fast_path.py says why that suffices), and dropped by
        .to()/.half()/.cuda() (_apply), so it is never stale; in training or with grad enabled nothing is cached
        (the parameters change every step)."""
        if not self.inferring:  # training, or a traced graph (which must not branch on data_ptr)
            return compute()
        key = version_stamp(tensors)
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
