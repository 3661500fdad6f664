"""The quality grid's variants, and LoRA's parameter-matched rank.

A variant is a dict of talklora_hub.train.TrainConfig fields, the adapter's by AdapterSettings' names; every variant
shares the grid's base, targets, data, steps, lr, batch and max_length, and r unless it sets its own.
`lora-matched` has r = "matched": LoRA at the rank whose trainable-parameter count is closest to
`talklora`'s, found by building both adapters on the base on the meta device (no weights are loaded or
allocated, so this is instant even for SmolLM2).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

MATCHED = "matched"
E = 4  # the TalkLoRA paper's number of experts

VARIANTS: Dict[str, Dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora-matched": {"method": "lora", "r": MATCHED},
    "moelora": {"method": "moelora", "num_experts": E},
    # The paper's TalkLoRA: dense routing, B banks shared across layers per projection type (the default).
    "talklora": {"method": "talklora", "num_experts": E},
    # The paper's no-talk ablation: T fixed to the identity, so the router reads the un-mixed chunks.
    "talklora-notalk": {"method": "talklora", "num_experts": E, "talk_init": "identity", "talk_trainable": False},
    "talklora-perlayer": {"method": "talklora", "num_experts": E, "share_expert_banks": False},
    # Our own design: sparse top-2 routing with the Switch/Mixtral load-balancing loss.
    "talklora-top2-balance": {"method": "talklora", "num_experts": E, "num_experts_per_tok": 2,
                              "router_aux_loss_coef": 0.01},
}
ROUTED = {name for name, v in VARIANTS.items() if v["method"] in ("moelora", "talklora")}
QUICK_VARIANTS = ["lora", "talklora"]


def select_variants(spec: str) -> List[str]:
    """"all" or a comma-separated list of names from VARIANTS, in the order given."""
    names = list(VARIANTS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown {unknown or spec!r}; choose 'all' or from {list(VARIANTS)}.")
    return names


def variant_fields(name: str, r: int, matched_rank: Optional[int] = None) -> Dict[str, Any]:
    """The TrainConfig fields of variant `name` at the grid's rank r (lora-matched: matched_rank)."""
    fields = copy.deepcopy(VARIANTS[name])
    if fields.get("r") == MATCHED:
        if matched_rank is None:
            raise ValueError("lora-matched needs its matched rank: call matched_lora_rank() first.")
        fields["r"] = matched_rank
    fields.setdefault("r", r)
    return fields


def _settings(fields: Dict[str, Any], target_modules, lora_dropout: float):
    """The AdapterSettings the variant trains with the grid's targets and dropout (as run_cell's TrainConfig)."""
    from talklora_hub.modeling import AdapterSettings
    from talklora_hub.train.config import split_adapter_fields

    adapter, _ = split_adapter_fields(fields)
    return AdapterSettings(**adapter, target_modules=target_modules, lora_dropout=lora_dropout)


def trainable_count(base_path: str, head: str, fields: Dict[str, Any], target_modules=None,
                    lora_dropout: float = 0.0, num_labels: int = 2, shared: Optional[Dict[str, Any]] = None) -> int:
    """model.parameter_counts()["trainable"] of the variant on the base, built on the meta device.

    head: "classification" (the head over num_labels, which is trained, is counted) or "causal";
    shared: adapter fields every variant of the grid adds (Grid.shared_fields(), e.g. modules_to_save)."""
    fields = {**fields, **(shared or {})}
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from talklora_hub.modeling import TalkLoRAForCausalLM, TalkLoRAForSequenceClassification

    config = AutoConfig.from_pretrained(base_path)
    if head == "classification":
        config.num_labels = num_labels
        auto, wrapper = AutoModelForSequenceClassification, TalkLoRAForSequenceClassification
    else:
        auto, wrapper = AutoModelForCausalLM, TalkLoRAForCausalLM
    with torch.device("meta"):
        base = auto.from_config(config)
        model = wrapper.from_base(base, _settings(fields, target_modules, lora_dropout))
    return model.parameter_counts()["trainable"]


def matched_lora_rank(base_path: str, head: str, r: int, target_modules=None, lora_dropout: float = 0.0,
                      num_labels: int = 2, shared: Optional[Dict[str, Any]] = None) -> Tuple[int, int, int]:
    """(rank, LoRA's count at it, TalkLoRA's count): the LoRA rank whose trainable count is closest to the
    `talklora` variant's at rank r (ties: the smaller rank).

    LoRA's count is affine in its rank (head + rank * sum over targets of D_in + D_out), so two builds
    give the line; the chosen rank and its neighbours are then built to confirm the closest."""
    count = lambda fields: trainable_count(base_path, head, fields, target_modules, lora_dropout, num_labels, shared)  # noqa: E731
    target = count(variant_fields("talklora", r))
    at = {k: count({"method": "lora", "r": k}) for k in (1, 2)}
    slope = at[2] - at[1]
    guess = max(1, round((target - at[1]) / slope) + 1)
    for k in (guess - 1, guess, guess + 1):
        if k >= 1 and k not in at:
            at[k] = count({"method": "lora", "r": k})
    best = min((k for k in at if k >= 1), key=lambda k: (abs(at[k] - target), k))
    return best, at[best], target


def closest_by_brute_force(counts: Sequence[int], target: int) -> int:
    """Index + 1 (a rank) of the count closest to target, ties to the smaller: the test oracle."""
    return min(range(len(counts)), key=lambda i: (abs(counts[i] - target), i)) + 1
