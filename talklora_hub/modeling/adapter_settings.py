"""Adapter settings: which method, which rank, which modules, and the MoE options, validated once.

Part of the bundle that travels inside every saved model: standard library only.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, List, Optional, Union

METHODS = ("lora", "moelora", "talklora", "ttlora")
ROUTED_METHODS = ("moelora", "talklora")
TALK_INITS = ("kaiming", "identity")

# Default experts per method: the TalkLoRA paper's E = 4 for the mixtures, one for the static adapters.
DEFAULT_NUM_EXPERTS = {"lora": 1, "moelora": 4, "talklora": 4, "ttlora": 1}

# Default targets per architecture (the TalkLoRA paper's q, k, v, up, down where the names exist).
DEFAULT_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
}


def config_error(argument: str, rule: str, value: Any, fix: str) -> ValueError:
    """The one shape of every configuration error: argument, rule, received value, fix."""
    return ValueError(f"`{argument}` {rule}, got {value!r}. Fix: {fix}")


@dataclasses.dataclass
class AdapterSettings:
    """Everything that defines an adapter, independent of the base model.

    method: "lora" | "moelora" | "talklora" | "ttlora".
    r: total rank; the E experts each own d = r / E of it.
    num_experts: E (None: the method's default, 4 for the mixtures, 1 otherwise). For "ttlora",
        E > 1 is a TT-LoRA MoE: E frozen experts and a per-sequence top-1 router.
    num_experts_per_tok: top-k sparse routing; None is dense softmax routing (the papers' setting).
    lora_alpha: scale alpha / r on the update; None means no scale (1.0), as in the TalkLoRA code.
    lora_dropout: dropout p on the adapter input (and, for TalkLoRA, on routing weights and output).
    target_modules: module names (matched as the name or its dotted suffix) or one regex string
        (full match on the dotted name); None: the architecture's default.
    share_expert_banks: one B bank per projection type shared by all layers (TalkLoRA's setting,
        the default there) instead of one per layer.
    talk_init: "kaiming" (paper) or "identity" (start as the no-talk variant).
    router_aux_loss_coef: weight of the Switch/Mixtral load-balancing loss (0: off, the papers').
    router_jitter_noise: multiplicative uniform noise on the router input while training (0: off).
    tt_rank: inner tensor-train rank; tt_alpha: its plain multiplier; tt_factors: optional
        {target name: [input factors, output factors]} overriding the automatic factorization.
    modules_to_save: extra base modules to train (None: a classification head is trained).
    """

    method: str = "talklora"
    r: int = 32
    num_experts: Optional[int] = None
    num_experts_per_tok: Optional[int] = None
    lora_alpha: Optional[float] = None
    lora_dropout: float = 0.0
    target_modules: Optional[Union[List[str], str]] = None
    share_expert_banks: Optional[bool] = None
    talk_init: str = "kaiming"
    router_aux_loss_coef: float = 0.0
    router_jitter_noise: float = 0.0
    tt_rank: int = 5
    tt_alpha: float = 16.0
    tt_factors: Optional[Dict[str, List[List[int]]]] = None
    modules_to_save: Optional[List[str]] = None

    def __post_init__(self):
        if self.num_experts is None and self.method in DEFAULT_NUM_EXPERTS:
            self.num_experts = DEFAULT_NUM_EXPERTS[self.method]
        if self.share_expert_banks is None:
            self.share_expert_banks = self.method == "talklora"
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        self.validate()

    @property
    def is_routed(self) -> bool:
        """Token-level routing (MoELoRA, TalkLoRA)."""
        return self.method in ROUTED_METHODS

    @property
    def is_sequence_routed(self) -> bool:
        """TT-LoRA MoE: several frozen TT experts, one chosen per sequence by a router on the base's states."""
        return self.method == "ttlora" and self.num_experts > 1

    @property
    def is_mergeable(self) -> bool:
        """A static update (same delta W for every input) can be folded into the base weights."""
        return not (self.is_routed or self.is_sequence_routed)

    @property
    def expert_rank(self) -> int:
        """d = r / E, the rank each expert owns."""
        return self.r // self.num_experts

    @property
    def scaling(self) -> float:
        return 1.0 if self.lora_alpha is None else self.lora_alpha / self.r

    def validate(self) -> None:
        if self.method not in METHODS:
            raise config_error("method", f"must be one of {list(METHODS)}", self.method,
                               "pick one of the listed adapter methods.")
        if not isinstance(self.r, int) or self.r < 1:
            raise config_error("r", "must be a positive integer", self.r, "use e.g. r=32.")
        if not isinstance(self.num_experts, int) or self.num_experts < 1:
            raise config_error("num_experts", "must be a positive integer", self.num_experts,
                               "use e.g. num_experts=4.")
        if self.method in ("lora",) and self.num_experts != 1:
            raise config_error("num_experts", "must be 1 for method='lora' (one static update)",
                               self.num_experts, "use method='moelora' or 'talklora' for experts.")
        if self.method != "ttlora" and self.r % self.num_experts != 0:
            raise config_error("r", f"must be divisible by num_experts={self.num_experts} (each expert owns r/E)",
                               self.r, f"use r={self.num_experts * max(1, round(self.r / self.num_experts))} "
                               "or another multiple of num_experts.")
        k = self.num_experts_per_tok
        if k is not None:
            if not self.is_routed:
                raise config_error("num_experts_per_tok", f"only applies to routed methods {list(ROUTED_METHODS)}",
                                   k, "leave it None for method=" + repr(self.method) + ".")
            if not isinstance(k, int) or not 1 <= k <= self.num_experts:
                raise config_error("num_experts_per_tok", f"must be in [1, num_experts={self.num_experts}]", k,
                                   "choose k between 1 and num_experts, or None for dense routing.")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise config_error("lora_alpha", "must be > 0 (or None for no scaling)", self.lora_alpha,
                               "use e.g. lora_alpha=2*r, or None.")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise config_error("lora_dropout", "must be in [0, 1)", self.lora_dropout, "use e.g. 0.05.")
        if self.talk_init not in TALK_INITS:
            raise config_error("talk_init", f"must be one of {list(TALK_INITS)}", self.talk_init,
                               "use 'kaiming' (paper) or 'identity'.")
        if not self.router_aux_loss_coef >= 0:
            raise config_error("router_aux_loss_coef", "must be >= 0", self.router_aux_loss_coef,
                               "use 0 to disable, or e.g. 0.01.")
        if not 0 <= self.router_jitter_noise < 1:
            raise config_error("router_jitter_noise", "must be in [0, 1)", self.router_jitter_noise,
                               "use 0 to disable, or e.g. 0.01.")
        if not isinstance(self.tt_rank, int) or self.tt_rank < 1:
            raise config_error("tt_rank", "must be a positive integer", self.tt_rank, "use e.g. tt_rank=5.")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise config_error("target_modules", "must not be empty", self.target_modules,
                               "name at least one module, or None for the architecture's default.")
        if self.tt_factors is not None:
            for name, pair in self.tt_factors.items():
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or not all(isinstance(f, int) and f > 1 for side in pair for f in side)):
                    raise config_error(f"tt_factors[{name!r}]", "must be [input factors, output factors], "
                                       "each a list of integers > 1", pair, "e.g. {'q_proj': [[8, 8, 9], [8, 8, 9]]}.")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "AdapterSettings":
        """Builds settings from a dict, ignoring (with a warning) keys this version does not know,
        so that repos written by newer versions keep loading."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(f"Ignoring unknown adapter settings {unknown} (written by another version?).")
        return cls(**{k: v for k, v in values.items() if k in known})


def default_targets(model_type: str) -> List[str]:
    """The default target module names for an architecture, or an error naming the fix."""
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    raise config_error("target_modules", f"has no default for model_type={model_type!r}", None,
                       "pass target_modules explicitly (the error for an unknown target lists the candidates).")
