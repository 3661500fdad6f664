"""TT-LoRA MoE's per-sequence routing, as a mixin of the model classes: a first pass of the bare base model feeds
the sequence router, whose top-1 expert then serves the whole sequence (and, in generation, every new token).
Token-routed methods never reach this code.

Part of the bundle that travels inside every saved model: imports only torch and sibling files.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Union

import torch

from .adapter_settings import config_error
from .outputs import CACHE_NAMES


def packed_sequences_error(argument: str, value: Any) -> ValueError:
    """Why a TT-LoRA MoE refuses packed sequences (continuous batching, padding-free batches), and the fix."""
    return config_error(
        argument, "cannot be used with a TT-LoRA MoE (method='ttlora', num_experts > 1): it routes each SEQUENCE to "
        "one expert, chosen on its prompt and held for every new token, but packed batches put the tokens of many "
        "sequences in one row and a decoding step never says which sequence a token belongs to, so no expert can be "
        "held per sequence", value,
        "generate with model.generate() (batched, left-padded prompts each keep their own expert), and serve with "
        "`talklora-hub serve MODEL` (it turns continuous batching off for a TT-LoRA MoE) or `transformers serve` "
        "without --continuous-batching.")


class SequenceRoutingMixin:
    """Needs from the model: adapter_settings, adapter_shared, sequence_router, inner_model, disable_adapter()."""

    def init_continuous_batching(self, *args, **kwargs):
        """transformers' continuous batching (generate_batch, serve --continuous-batching) for token-routed and
        static adapters; a TT-LoRA MoE refuses it up front (see packed_sequences_error)."""
        if self.sequence_router is not None:
            raise packed_sequences_error("init_continuous_batching (generate_batch, serve --continuous-batching)",
                                         f"method='ttlora', num_experts={self.adapter_settings.num_experts}")
        parent = getattr(super(), "init_continuous_batching", None)
        if parent is None:  # a model without GenerationMixin (the bare backbone, a classifier)
            raise AttributeError(f"{type(self).__name__} does not generate: use TalkLoRAForCausalLM.")
        return parent(*args, **kwargs)

    @torch.no_grad()
    def route_sequences(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                        inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """TT-LoRA MoE: the router's logits (batch, E) for these sequences (argmax: the expert that would
        serve each), from one pass of the bare base model; changes no state."""
        if self.sequence_router is None:
            raise ValueError("route_sequences needs a TT-LoRA MoE (method='ttlora', num_experts > 1); this model "
                             f"is method={self.adapter_settings.method!r} with {self.adapter_settings.num_experts} experts.")
        kept = self.adapter_shared.sequence_experts
        args = {k: v for k, v in dict(input_ids=input_ids, attention_mask=attention_mask,
                                      inputs_embeds=inputs_embeds).items() if v is not None}
        try:
            return self._choose_sequence_experts(args)
        finally:
            self.adapter_shared.sequence_experts = kept

    @staticmethod
    def _cache_length(kwargs: Dict[str, Any]) -> Union[int, torch.Tensor]:
        """How many positions the given KV cache (`cache` or `past_key_values`) already holds: 0 with none, an int
        for a dynamic or legacy tuple cache, a 0-dim tensor for an initialized static cache (whose length lives on
        the device, so that one compiled graph serves every decoding step)."""
        for name in CACHE_NAMES:
            cache = kwargs.get(name)
            if cache is None:
                continue
            if hasattr(cache, "get_seq_length"):
                return cache.get_seq_length()
            if isinstance(cache, (tuple, list)):  # a legacy tuple cache
                return cache[0][0].shape[-2] if len(cache) > 0 else 0
        return 0

    @classmethod
    def _decoding_with_cache(cls, kwargs: Dict[str, Any], held: Optional[torch.Tensor],
                             batch: Optional[int]) -> bool:
        """Whether this forward continues a non-empty KV cache, so the experts chosen on the prompt (held) serve it.

        Eager, the cache's length says so. Compiled, a static cache's length is a tensor, and branching on its value
        would break the graph at every decoding step; there the branch is taken on what dynamo can guard on (an
        expert is held for each row of this batch) and the cache's length is asserted inside the graph to agree,
        so a wrong guess (a compiled prefill on a reused cache) raises instead of holding a stale expert."""
        length = cls._cache_length(kwargs)
        if not isinstance(length, torch.Tensor):
            return length > 0
        if not torch.compiler.is_compiling():
            return bool(length > 0)
        continuing = held is not None and (batch is None or held.shape[0] == batch)
        torch._assert_async((length > 0) == continuing, (
            "A compiled TT-LoRA MoE forward guessed whether the KV cache is empty from whether experts are held for "
            "this batch, and guessed wrong (a compiled prefill on a reused cache, or a decoding step without a "
            "routed prompt). Fix: run the prompt uncompiled (generate() does), or call "
            "model.adapter_shared.sequence_experts = None before a new prompt."))
        return continuing

    def _choose_sequence_experts(self, kwargs: Dict[str, Any], sequence_experts: Optional[torch.Tensor] = None,
                                 router_attention_mask: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """TT-LoRA MoE: a first pass of the bare base model (adapters off) feeds the router, whose top-1
        expert then serves the whole sequence (or sequence_experts, when given, serves it: the router's
        logits are still computed and returned, so its cross-entropy can train). The router reads the
        positions router_attention_mask marks (default: attention_mask). In generation the choice is
        made on the prompt and held for every new token: with a non-empty cache nothing is re-routed.
        Returns the router's logits (batch, E), or None when the held choice serves."""
        shared = self.adapter_shared
        if kwargs.get("cu_seq_lens_q") is not None:  # packed sequences (continuous batching, padding-free training)
            raise packed_sequences_error("cu_seq_lens_q", f"{kwargs['cu_seq_lens_q'].numel() - 1} packed sequences")
        reference = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        batch = None if reference is None else reference.shape[0]
        forced = None if sequence_experts is None else self._checked_experts(sequence_experts, batch)
        if self._decoding_with_cache(kwargs, shared.sequence_experts, batch):
            if forced is not None:
                shared.sequence_experts = forced
            held = shared.sequence_experts
            if held is None or (batch is not None and held.shape[0] != batch):
                raise RuntimeError(
                    "A TT-LoRA MoE continuing from a non-empty KV cache serves each sequence with the expert chosen "
                    f"on its prompt, but {'none is' if held is None else f'{held.shape[0]} are'} held for this "
                    f"batch of {batch}. Fix: run the prompt through the model first (generate() does), or pass "
                    "sequence_experts=(batch,) expert indices.")
            return None
        mask = router_attention_mask if router_attention_mask is not None else kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            mask = None  # none, or a prepared 4D mask (or a dict of them): the router reads the last position
        backbone = self.inner_model.base_model if hasattr(self.inner_model, "base_model") else self.inner_model
        backbone_args = {k: kwargs[k] for k in ("input_ids", "inputs_embeds") if k in kwargs}
        if mask is not None:
            backbone_args["attention_mask"] = mask
        positions = kwargs.get("position_ids")
        if positions is None and mask is not None:
            # Padding (left padding, in generation) must not shift the positions the router's pass sees. Without
            # padding this gives 0..S-1, the backbone's own default; computed either way, so no branch on a value.
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
        if positions is not None and "position_ids" in inspect.signature(backbone.forward).parameters:
            backbone_args["position_ids"] = positions
        with self.disable_adapter(), torch.no_grad():  # restores, not sets: inside the user's own block it stays off
            hidden = backbone(**backbone_args, use_cache=False).last_hidden_state
        logits = self.sequence_router(hidden, mask)
        shared.sequence_experts = forced if forced is not None else logits.detach().argmax(dim=-1)
        return logits

    def _checked_experts(self, experts: torch.Tensor, batch: Optional[int]) -> torch.Tensor:
        """sequence_experts as a (batch,) long tensor of valid expert indices, or a config_error."""
        num_experts = self.adapter_settings.num_experts
        experts = torch.as_tensor(experts)
        if experts.dim() == 0:
            experts = experts.expand(batch or 1)
        if experts.dim() != 1 or (batch is not None and experts.shape[0] != batch):
            raise config_error("sequence_experts", f"must be a (batch,) tensor of expert indices (batch={batch})",
                               tuple(experts.shape), "pass one expert index per sequence, e.g. torch.tensor([0, 2]).")
        if experts.is_floating_point() or experts.numel() and not (0 <= int(experts.min()) and
                                                                    int(experts.max()) < num_experts):
            raise config_error("sequence_experts", f"must hold integer expert indices in [0, {num_experts})",
                               experts.tolist(), f"use indices 0..{num_experts - 1}.")
        return experts.to(self.sequence_router.gate.weight.device).long()
