"""The outputs of talklora_hub models: the base model's fields plus routing (router logits, routing weights, the
load-balancing loss and, for a TT-LoRA MoE, the per-sequence router's logits and loss), and their documentation.

Part of the bundle that travels inside every saved model: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

# The KV cache's keyword and output field: `cache` in newer transformers 5.x, `past_key_values` before
# (newer versions still accept the old name, with a deprecation warning). The forwards below take it
# through **kwargs and pass it on under the name the caller used, so any 5.x version gets its own name.
CACHE_FIELD = "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"
CACHE_NAMES = ("cache", "past_key_values")


ROUTING_OUTPUTS_DOC = """
    Routing fields (token-routed methods, MoELoRA and TalkLoRA, when output_router_logits=True):
    router_logits: one (batch * seq, E) tensor per routed module, in execution order: Mixtral's layout
        (rows in (batch, seq) row-major order), the router's pre-softmax logits, with their autograd
        graph. transformers' `load_balancing_loss_func(out.router_logits, E, k, attention_mask)` (from
        transformers.models.mixtral.modeling_mixtral) reads them; it is 1.0 for a uniform router.
        Its definition differs from aux_loss's in two ways: it pools the tokens of all modules before
        taking E * sum_i f_i P_i, and it counts each of a token's k selections fully; aux_loss is the MEAN
        over modules of each module's own loss, with selection shares divided by k (dense routing counts
        as top-1). So the two are equal for one routed module with k = 1 (dense routing: pass top_k=1),
        the Mixtral value is k times aux_loss for one module with top-k, and with several modules both
        are near 1 when routing is balanced but not equal.
    routing_weights: one (batch, seq, E) tensor per routed module (detached; they sum to 1 per token in
        eval mode, zero off the chosen experts with top-k).
    router_module_names: the dotted names of those modules, in the same order.
    aux_loss: the mean load-balancing loss over routed modules (computed when output_router_logits=True,
        or in training with router_aux_loss_coef > 0), see routing.load_balancing_loss.
    TT-LoRA MoE (per-sequence routing):
    sequence_router_logits: (batch, E) the router's logits on the prompt pass (None while decoding with
        a non-empty cache: the experts chosen on the prompt are held).
    sequence_router_loss: cross-entropy of sequence_router_logits against sequence_labels (when given).
"""


SEQUENCE_ARGS_DOC = """
        TT-LoRA MoE arguments (per-sequence routing; an error for other methods):
        sequence_experts: (batch,) long, the expert that serves each sequence (teacher forcing, or scoring
            "each expert alone"); the router still runs and returns sequence_router_logits.
        router_attention_mask: (batch, seq), the positions the router reads (default: attention_mask), e.g.
            the prompt only, so the router never sees the answer tokens of a training example. The base
            pass it reads is causal, so the prompt positions' states are those of a prompt-only pass.
        sequence_labels: (batch,) long, the expert each sequence should be routed to (e.g. its task id):
            sequence_router_loss = CE(sequence_router_logits, sequence_labels) is returned and added to
            loss with weight sequence_router_ce_weight (default 21, the paper's).
        With a non-empty KV cache (generation after the prompt) the experts chosen on the prompt are held.
"""


# Each output is its own leading fields, then the routing fields both share. Plain dataclasses hold the fields so
# that each is written once: a dataclass lists the fields of its bases first (the last base's first), so the
# outputs below keep their field order, and with it to_tuple() and integer indexing, as before the split.
@dataclass
class _RoutingFields:
    """The fields every talklora_hub output has after its leading ones (see ROUTING_OUTPUTS_DOC)."""

    if CACHE_FIELD == "cache":
        cache: Optional[Any] = None
    else:
        past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    aux_loss: Optional[torch.Tensor] = None
    router_logits: Optional[Tuple[torch.Tensor, ...]] = None
    routing_weights: Optional[Tuple[torch.Tensor, ...]] = None
    router_module_names: Optional[Tuple[str, ...]] = None
    sequence_router_logits: Optional[torch.Tensor] = None
    sequence_router_loss: Optional[torch.Tensor] = None


@dataclass
class _BaseModelFields:
    """The bare model's leading fields."""

    last_hidden_state: Optional[torch.Tensor] = None
    pooler_output: Optional[torch.Tensor] = None


@dataclass
class _HeadFields:
    """A head's leading fields."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


@dataclass
class TalkLoRAModelOutput(ModelOutput, _RoutingFields, _BaseModelFields):
    pass


TalkLoRAModelOutput.__doc__ = ("The base model's outputs (last_hidden_state, cache, ...) plus routing.\n"
                               + ROUTING_OUTPUTS_DOC)


@dataclass
class TalkLoRAHeadOutput(ModelOutput, _RoutingFields, _HeadFields):
    pass


TalkLoRAHeadOutput.__doc__ = (
    "A head's outputs (causal LM or classification) plus routing. loss: the head's loss (given labels) "
    "+ router_aux_loss_coef * aux_loss (given labels) + sequence_router_ce_weight * sequence_router_loss "
    "(given sequence_labels).\n" + ROUTING_OUTPUTS_DOC)
