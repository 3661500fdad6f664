"""Adapter settings: which method, which rank, which modules, and the MoE options, validated once.

Part of the bundle that travels inside every saved model: standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

from .methods import method_names, method_spec

TALK_INITS = ("kaiming", "identity")

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


PRESETS = ("ttlora-paper",)

# The TT-LoRA paper's hand-set factors (official code lanl/TTLoRAMoE, per model in its training script),
# keyed by the layer's (D_in, D_out): (input factors m, output factors n), as its config writes them. Its cores
# run over m then n REVERSED (tt_shape = m + n[::-1], e.g. [16, 8, 4, 4, 4, 4, 8, 16]), which is the core-order
# list `tt_factors` takes. Shapes not listed get paper_factors().
PAPER_TT_FACTORS: Dict[Tuple[int, int], Tuple[List[int], List[int]]] = {
    (768, 768): ([64, 4, 3], [64, 4, 3]),  # roberta-base query / value
    (2048, 2048): ([16, 8, 4, 4], [16, 8, 4, 4]),  # Llama-3.2-1B q_proj
    (2048, 512): ([16, 16, 4, 2], [16, 16, 2]),  # Llama-3.2-1B v_proj
    (3072, 3072): ([16, 4, 4, 3, 2, 2], [16, 4, 4, 3, 2, 2]),  # Llama-3.2-3B q_proj
    (3072, 1024): ([16, 4, 4, 3, 2, 2], [16, 4, 4, 2, 2]),  # Llama-3.2-3B v_proj
    (4096, 4096): ([16, 4, 4, 4, 2, 2], [16, 4, 4, 4, 2, 2]),  # Llama-3.1-8B q_proj
    (4096, 1024): ([16, 4, 4, 4, 2, 2], [16, 4, 4, 2, 2]),  # Llama-3.1-8B v_proj
}

# The paper adapts the attention query and value maps only; their names per architecture.
PAPER_QV_TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"]}
FUSED_QKV_TYPES = ("gpt2", "phi3")


def config_error(argument: str, rule: str, value: Any, fix: str) -> ValueError:
    """The one shape of every configuration error: argument, rule, received value, fix."""
    return ValueError(f"`{argument}` {rule}, got {value!r}. Fix: {fix}")


def _type_name(kind) -> str:
    """'bool', 'int or None', 'list of str', ... for an AdapterSettings annotation."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        return " or ".join(_type_name(option) for option in args)
    if origin in (list, List):
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Dict):
        return f"dict of {_type_name(args[0])} to {_type_name(args[1])}"
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def _matches_type(value: Any, kind) -> bool:
    """Whether value (as read from JSON or given in Python) fits a field annotation of AdapterSettings."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin is Union:
        return any(_matches_type(value, option) for option in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if origin in (list, List):
        return isinstance(value, (list, tuple)) and all(_matches_type(v, args[0]) for v in value)
    if origin in (dict, Dict):
        return isinstance(value, dict) and all(_matches_type(k, args[0]) and _matches_type(v, args[1])
                                               for k, v in value.items())
    return isinstance(value, kind)


def check_type(name: str, value: Any, kind) -> None:
    if not _matches_type(value, kind):
        raise config_error(name, f"must be a {_type_name(kind)}", value,
                           f"give {name} a value of that type (see AdapterSettings' docstring).")


def _setting(default: Any, help: str) -> Any:
    """A field with its help text in the metadata: the one home of what each setting means (the class docstring
    and `talklora-hub train --help` are both built from it)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class AdapterSettings:
    method: str = _setting("talklora", "the adapter method: a registered name (methods.py); built in: lora, moelora, "
                           "talklora, ttlora")
    r: int = _setting(32, "total rank; the E experts each own d = r / E of it")
    num_experts: Optional[int] = _setting(None, "E (None: the method's default, 4 for the mixtures, 1 otherwise); for "
                                          "ttlora, E > 1 is a TT-LoRA MoE: E frozen experts and a per-sequence top-1 "
                                          "router")
    num_experts_per_tok: Optional[int] = _setting(None, "top-k sparse routing; None is dense softmax routing (the "
                                                  "papers' setting)")
    lora_alpha: Optional[float] = _setting(None, "scale alpha / r on the update; None means no scale (1.0), as in "
                                           "the TalkLoRA code")
    lora_dropout: float = _setting(0.0, "dropout p on the adapter input (and, for TalkLoRA and MoELoRA, on the routing "
                                   "weights and the adapter output)")
    target_modules: Optional[Union[List[str], str]] = _setting(
        None, "module names (matched as the name or its dotted suffix) or one regex string (full match on the dotted "
        "name); None: the architecture's default")
    share_expert_banks: Optional[bool] = _setting(None, "one B bank per projection type shared by all layers instead "
                                                  "of one per layer (None: the method's default, true for TalkLoRA)")
    talk_init: str = _setting("kaiming", "TalkLoRA's Talking Module init: 'kaiming' (paper) or 'identity' (start as "
                              "the no-talk variant)")
    router_aux_loss_coef: float = _setting(0.0, "weight of the Switch/Mixtral load-balancing loss (0: off, the "
                                           "papers')")
    router_jitter_noise: float = _setting(0.0, "multiplicative uniform noise on the router input while training (0: "
                                          "off)")
    tt_rank: int = _setting(5, "TT-LoRA: the inner tensor-train rank")
    tt_alpha: float = _setting(16.0, "TT-LoRA: the update's plain multiplier")
    tt_factors: Optional[Dict[str, List[List[int]]]] = _setting(
        None, "TT-LoRA: {target name: [input factors, output factors]} overriding the automatic factorization; both "
        "lists in core order (input core 1 takes the least significant input digit, output core 1 the most "
        "significant output digit: the official TT-LoRA convention, see adapter_ttlora)")
    modules_to_save: Optional[List[str]] = _setting(None, "extra base modules to train (None: a classification head "
                                                    "is trained)")
    router_noise: str = _setting("masked-train", "TT-LoRA MoE router noise: 'masked-train' (no bias, mean over real "
                                 "tokens, training only) or 'official' (the paper's code: noise layer with bias, mean "
                                 "over all positions, noise at evaluation too); see sequence_router")
    talk_trainable: bool = _setting(True, "TalkLoRA only: false freezes the Talking Module T at its init (a buffer, "
                                    "saved but never trained); with talk_init='identity' this is the paper's no-talk "
                                    "ablation (the router then reads the un-mixed chunks, g = softmax(R z))")
    # Not a field: the method's own settings, {name: value} for the MethodSettings its spec declares (a plugin's;
    # the built-in methods declare none). An init-only value here, held as an attribute after __post_init__,
    # so the fields stay the settings every method shares (the CLI's options, TrainConfig's flat fields).
    method_settings: dataclasses.InitVar[Optional[Dict[str, Any]]] = None

    def __post_init__(self, method_settings: Optional[Dict[str, Any]] = None):
        for field in dataclasses.fields(self):  # types first: the rules below compare and hash the values
            check_type(field.name, getattr(self, field.name), _FIELD_TYPES[field.name])
        check_type("method_settings", method_settings, Optional[Dict[str, Any]])
        spec = method_spec(self.method)
        given = dict(method_settings or {})
        # A declared setting left out takes its default, so config.json always holds every one of them.
        self.method_settings = {**{m.name: m.default for m in (spec.settings if spec else ())}, **given}
        if self.num_experts is None and spec is not None:
            self.num_experts = spec.default_num_experts
        if self.share_expert_banks is None:
            self.share_expert_banks = spec is not None and spec.shares_banks_by_default
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        self.validate()

    @property
    def spec(self):
        """The method's MethodSpec (methods.py)."""
        return method_spec(self.method)

    @property
    def routing(self) -> str:
        """"none", "token" or "sequence": how this adapter routes (its method's spec, given num_experts)."""
        return self.spec.routing_of(self.num_experts)

    @property
    def is_routed(self) -> bool:
        """Token-level routing (MoELoRA, TalkLoRA)."""
        return self.routing == "token"

    @property
    def is_sequence_routed(self) -> bool:
        """TT-LoRA MoE: several frozen TT experts, one chosen per sequence by a router on the base's states."""
        return self.routing == "sequence"

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
        spec = method_spec(self.method)
        if spec is None:
            raise config_error("method", f"must be one of {method_names()}", self.method,
                               "pick one of the listed adapter methods (or import the file that registers yours: "
                               "talklora_hub.modeling.methods.load_method_file).")
        if self.r < 1:  # types were checked first (check_type)
            raise config_error("r", "must be a positive integer", self.r, "use e.g. r=32.")
        if not isinstance(self.num_experts, int) or self.num_experts < 1:
            raise config_error("num_experts", "must be a positive integer", self.num_experts,
                               "use e.g. num_experts=4.")
        if spec.single_expert and self.num_experts != 1:
            raise config_error("num_experts", f"must be 1 for method={self.method!r} (one static update)",
                               self.num_experts, "use method='moelora' or 'talklora' for experts.")
        if spec.experts_split_rank and self.r % self.num_experts != 0:
            raise config_error("r", f"must be divisible by num_experts={self.num_experts} (each expert owns r/E)",
                               self.r, f"use r={self.num_experts * max(1, round(self.r / self.num_experts))} "
                               "or another multiple of num_experts.")
        k = self.num_experts_per_tok
        if k is not None:
            if not self.is_routed:
                routed = [name for name in method_names() if method_spec(name).routing == "token"]
                raise config_error("num_experts_per_tok", f"only applies to routed methods {routed}",
                                   k, "leave it None for method=" + repr(self.method) + ".")
            if not 1 <= k <= self.num_experts:
                raise config_error("num_experts_per_tok", f"must be in [1, num_experts={self.num_experts}]", k,
                                   "choose k between 1 and num_experts, or None for dense routing.")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise config_error("lora_alpha", "must be > 0 (or None for no scaling)", self.lora_alpha,
                               "use e.g. lora_alpha=2*r, or None.")
        if not 0.0 <= self.lora_dropout < 1.0:
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
        if self.tt_rank < 1:
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
        if self.router_noise not in ("masked-train", "official"):
            raise config_error("router_noise", "must be one of ['masked-train', 'official']", self.router_noise,
                               "use 'masked-train' (default: training-only noise) or 'official' (the paper's code).")
        self._check_exclusive_fields()
        self._check_method_settings(spec)
        if spec.check is not None:
            spec.check(self)

    def _check_method_settings(self, spec) -> None:
        """Only the settings the method declares, each of its default's type and passing its check."""
        declared = {m.name: m for m in spec.settings}
        unknown = sorted(set(self.method_settings) - set(declared))
        if unknown:
            raise config_error("method_settings", f"takes only the settings method={self.method!r} declares "
                               f"({sorted(declared) or 'none'})", unknown,
                               "drop the others (a typo? the method's MethodSpec.settings lists its own).")
        for name, setting in declared.items():
            value, argument = self.method_settings[name], f"method_settings[{name!r}]"
            if setting.default is not None:  # the default's type is the setting's (an int passes for a float)
                check_type(argument, value, type(setting.default))
            if setting.check is not None and not setting.check(value):
                raise config_error(argument, setting.rule, value, setting.fix)

    def _check_exclusive_fields(self) -> None:
        """A field only another method reads (its spec's exclusive_fields) must keep its default here."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in method_names():
            if name == self.method:
                continue
            for field in method_spec(name).exclusive_fields:
                value = getattr(self, field)
                if value != defaults[field]:
                    raise config_error(field, f"only applies to method={name!r} (method={self.method!r} does not "
                                       "read it)", value, f"leave it {defaults[field]!r} for this method.")

    def to_dict(self) -> Dict[str, Any]:
        """The fields, plus method_settings where the method has any (a built-in method's dict is as before)."""
        values = dataclasses.asdict(self)
        if self.method_settings:
            values["method_settings"] = dict(self.method_settings)
        return values

    def __eq__(self, other: Any) -> bool:  # the generated one compares the fields only, not method_settings
        return self.to_dict() == other.to_dict() if isinstance(other, AdapterSettings) else NotImplemented

    @classmethod
    def preset(cls, name: str, model_config: Any, **overrides: Any) -> "AdapterSettings":
        """Settings of a named published setup for a base model. Presets: "ttlora-paper" (see
        ttlora_paper_settings). model_config: the base's transformers config or its dict; overrides:
        any other field (e.g. num_experts=3 for a TT-LoRA MoE)."""
        if name == "ttlora-paper":
            return ttlora_paper_settings(model_config, **overrides)
        raise config_error("name", f"must be one of {list(PRESETS)}", name,
                           "use a listed preset, or build AdapterSettings(...) directly.")

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "AdapterSettings":
        """Builds settings from a dict, ignoring (with a warning) keys this version does not know,
        so that repos written by newer versions keep loading."""
        known = {f.name for f in dataclasses.fields(cls)} | {"method_settings"}
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


def paper_factors(n: int) -> List[int]:
    """Factors of n in the TT-LoRA paper's style (it writes 2048 as [16, 8, 4, 4]), largest first.

    Rule: if 16 divides n (and n > 16), a leading 16 and n / 16 split into three balanced factors;
    otherwise n split into four balanced factors. Balanced: primes placed largest first into the currently
    smallest factor; factors of 1 are dropped, so small n get fewer factors. 576 -> [16, 4, 3, 3],
    192 -> [16, 3, 2, 2], 32 -> [16, 2], 16 -> [2, 2, 2, 2], 105 -> [7, 5, 3].
    """
    if n < 2:
        return [n]
    lead, rest, count = ([16], n // 16, 3) if n % 16 == 0 and n > 16 else ([], n, 4)
    return lead + sorted((b for b in balanced_bins(prime_factors(rest), count) if b > 1), reverse=True)


def prime_factors(n: int) -> List[int]:
    """The prime factors of n >= 1, with multiplicity, smallest first (12 -> [2, 2, 3])."""
    primes, p = [], 2
    while p * p <= n:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    if n > 1:
        primes.append(n)
    return primes


def balanced_bins(primes: List[int], count: int) -> List[int]:
    """count products of the primes kept close: each prime, largest first, joins the smallest product so far."""
    bins = [1] * count
    for prime in sorted(primes, reverse=True):
        bins[bins.index(min(bins))] *= prime
    return bins


def _paper_layer_factors(d_in: int, d_out: int) -> List[List[int]]:
    """[input factors, output factors in core order] for one (D_in, D_out) layer.

    The output factors are reversed into core order, as the official tt_shape has them: the largest
    factors then sit on the first and last cores, whose rank-1 side makes each of their entries cost r
    parameters instead of r^2 (and the output digit order matches the official contraction's)."""
    m, n = PAPER_TT_FACTORS.get((d_in, d_out), (paper_factors(d_in), paper_factors(d_out)))
    return [list(m), list(n)[::-1]]


def ttlora_paper_settings(model_config: Any, **overrides: Any) -> AdapterSettings:
    """The TT-LoRA paper's setting (arXiv 2504.21190 / lanl/TTLoRAMoE) for a base model.

    method "ttlora"; target_modules the attention query and value maps (["q_proj", "v_proj"], or
    ["query", "value"] for BERT/RoBERTa); tt_rank 5; tt_alpha 16; lora_dropout 0 (the official TT-LoRA
    has no dropout); tt_factors per target from the layer's (D_in, D_out): the paper's own factors where it
    published them (PAPER_TT_FACTORS: Llama-3.2-1B q [16, 8, 4, 4] x [16, 8, 4, 4], v [16, 16, 4, 2] x
    [16, 16, 2], ...), else paper_factors() on each side; output factors stored in core order (reversed).
    On Llama-3.2-1B that is 33,920 parameters, the paper's count.

    model_config: the base's transformers config (or a dict) with model_type, hidden_size and
    num_attention_heads (num_key_value_heads, head_dim optional). overrides: any other AdapterSettings field.
    """
    get = model_config.get if isinstance(model_config, dict) else (lambda key: getattr(model_config, key, None))
    model_type = get("model_type") or ""
    hidden, heads = get("hidden_size"), get("num_attention_heads")
    if model_type in FUSED_QKV_TYPES or not isinstance(hidden, int) or not isinstance(heads, int):
        raise config_error("model_config", "must describe separate query and value projections (model_type, "
                           "hidden_size, num_attention_heads)", {"model_type": model_type, "hidden_size": hidden,
                                                                 "num_attention_heads": heads},
                           "pass the base model's config (model.config); for fused-qkv architectures build "
                           "AdapterSettings(method='ttlora', tt_factors=...) by hand.")
    head_dim = get("head_dim") or hidden // heads
    kv_heads = get("num_key_value_heads") or heads
    q_name, v_name = PAPER_QV_TARGETS.get(model_type, ["q_proj", "v_proj"])
    values: Dict[str, Any] = dict(
        method="ttlora", target_modules=[q_name, v_name], tt_rank=5, tt_alpha=16.0, lora_dropout=0.0,
        tt_factors={q_name: _paper_layer_factors(hidden, heads * head_dim),
                    v_name: _paper_layer_factors(hidden, kv_heads * head_dim)})
    values.update(overrides)
    return AdapterSettings(**values)


_FIELD_TYPES = typing.get_type_hints(AdapterSettings)
AdapterSettings.__doc__ = "\n".join([
    "Everything that defines an adapter, independent of the base model.", "",
    *(f"{f.name}: {f.metadata['help']}." for f in dataclasses.fields(AdapterSettings)),
    "method_settings: the method's own settings {name: value}, as its MethodSpec.settings declares them (a plugin's; "
    "missing ones take their defaults).", "",
    "TT-LoRA: the DEFAULT here (AdapterSettings(method='ttlora')) is the project's own setting: the architecture's "
    "default targets (q, k, v, up, down), automatic factors (factorize(): about three balanced factors per side), "
    "lora_dropout as given (0 by default; the zoo's recipes state 0.05). The PAPER's setting is the preset "
    "AdapterSettings.preset('ttlora-paper', model_config) (see ttlora_paper_settings): q and v only, tt_rank 5, "
    "tt_alpha 16, no dropout, the paper's hand-set factors."])
