"""TrainConfig: everything one training run needs, validated before any model or data is loaded.

The adapter is an AdapterSettings (talklora_hub.modeling.adapter_settings), held whole in
`TrainConfig.adapter`: its field names, defaults and validation live there only. For a flat dict of run
and adapter fields (the zoo recipes, the quality grid's variants), TrainConfig(...) also takes
AdapterSettings' fields by their own names and builds `adapter` from them.

Every error names the argument, the rule, the value received and the fix (the same shape as the
adapter settings' errors), so a typo on the command line fails in a second, not after loading 135M
parameters. The user's own data (train_file / dataset) are read and checked in __post_init__, after these
rules and still before any model is loaded (talklora_hub.data.own_data).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..data.own_data import OwnData, check_arguments
from ..modeling.adapter_settings import AdapterSettings, config_error

HEADS = ("auto", "causal", "classification")
SCHEDULERS = ("linear", "cosine", "constant")
ROUTE_BY = ("router", "task")
EVAL_SPLITS = ("train", "validation", "test")

# Fields that do not change what is computed: a resumed run may differ in these.
_NOT_FINGERPRINTED = {"cpu", "output", "resume", "stop_after", "eval_only", "progress", "save_every",
                      "keep_checkpoints", "log_every", "max_eval_examples", "eval_split", "eval_batch_size",
                      "max_new_tokens", "cache_dir", "base_repo_id"}
# The user's-data fields: left out of the fingerprint while at their defaults, so runs from before they
# existed still resume.
# {TrainConfig field: OwnData field}; task_name is TrainConfig's own method, so the field is own_task_name.
OWN_DATA_FIELDS = {("own_task_name" if f.name == "task_name" else f.name): f.name for f in dataclasses.fields(OwnData)}
_OWN_DATA_DEFAULTS = {name: OwnData.__dataclass_fields__[own].default for name, own in OWN_DATA_FIELDS.items()}

ADAPTER_FIELDS = tuple(f.name for f in dataclasses.fields(AdapterSettings))

TaskItem = Union[str, Tuple[str, Any]]


def split_adapter_fields(values: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(AdapterSettings fields, everything else) of a flat dict such as a zoo recipe's `train`."""
    adapter = {k: v for k, v in values.items() if k in ADAPTER_FIELDS}
    return adapter, {k: v for k, v in values.items() if k not in ADAPTER_FIELDS}


def _takes_flat_adapter_fields(cls):
    """Lets TrainConfig(method="lora", r=8, ...) build `adapter` from AdapterSettings' own field names, so a
    flat dict of run and adapter fields stays one call; `adapter=AdapterSettings(...)` is the other way."""
    generated = cls.__init__
    known = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(generated)
    def __init__(self, *args, **values):
        flat, own = split_adapter_fields(values)
        unknown = sorted(set(own) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known | set(ADAPTER_FIELDS)), n=1)
            raise config_error(unknown[0], "is neither a TrainConfig nor an AdapterSettings field", own[unknown[0]],
                               f"use {close[0]!r}." if close else "see TrainConfig's and AdapterSettings' fields.")
        if flat:
            if own.get("adapter") is not None:
                raise config_error("adapter", "cannot be combined with flat AdapterSettings fields", sorted(flat),
                                   "pass adapter=AdapterSettings(...) or the adapter's fields, not both.")
            own["adapter"] = AdapterSettings(**flat)  # AdapterSettings' own defaults and validation
        generated(self, *args, **own)

    cls.__init__ = __init__
    return cls


@_takes_flat_adapter_fields
@dataclasses.dataclass
class TrainConfig:
    """One training run.

    base: a local folder, a Hub id, or a bootstrapped base model name ("smollm2-135m-instruct",
        "all-minilm-l6-v2"). tokenizer: its folder/id when it differs from base.
    tasks: task names and/or (name, DatasetDict) pairs (e.g. from load_task_from_dataset); a
        comma-separated string is split. Several tasks are mixed with talklora_hub.data.mix_tasks.
    train_file (with optional validation_file, test_file) or dataset: your own data, a .csv/.tsv/.json/
        .jsonl/.parquet file or a datasets name or save_to_disk folder, read by text_column and label_column
        (or answer_column; by default the columns "label", else "answer") into a task named own_task_name
        (default: the file's stem), prompted with template (default: "Classify the text as {choices}...").
        It is read and checked here, in __post_init__ (talklora_hub.data.own_data), so every data error comes
        before any model is loaded; the task joins `tasks` as a (name, DatasetDict) pair.
    base_repo_id: the Hub repo id of the base when `base` is a local folder (for the model card's
        base_model; a card never shows a local path).
    adapter: the AdapterSettings to train (method, r, num_experts, num_experts_per_tok, lora_dropout,
        target_modules, ...). Its fields may instead be passed flat, by AdapterSettings' names:
        TrainConfig(method="lora", r=8, ...) is TrainConfig(adapter=AdapterSettings(method="lora", r=8), ...).
        A TT-LoRA MoE stage-2 run (ttlora_experts) composes its experts' settings instead; only its
        method ("ttlora") is read.
    head: "causal" (loss on answer tokens only), "classification" (a head over the task's labels, for
        encoders such as BERT) or "auto" (classification for encoder-only bases, causal otherwise).
    lr, weight_decay, warmup_ratio, lr_scheduler, max_grad_norm: AdamW and its schedule (transformers'
        get_scheduler; the warm-up's first step already trains, at lr / (warm-up steps + 1)).
    epochs / max_steps: length (max_steps wins); batch_size per process, grad_accum micro-batches per
        step; max_length in tokens (long prompts keep their head and their tail).
    bf16: bfloat16 autocast where the hardware runs bf16 natively (a GPU, a CPU with AVX512-BF16 or
        AMX); elsewhere fp32 with a warning, as emulated bf16 is slower; "force" uses it anyway.
        cpu: train on the CPU even where a GPU exists;
        seed: one seed for init, data order and dropout.
    output: run folder (checkpoints/, model/, train_result.json); None writes nothing.
    save_every: checkpoint every N steps (the final step is always saved); keep_checkpoints: how
        many to keep. resume: True (latest checkpoint in output) or a checkpoint folder.
    stop_after: end the run after this many steps (a checkpoint is written, no evaluation), as a
        preemption would; a later run with resume=True continues to max_steps exactly.
    eval_only: skip training and evaluate the adapter in output (latest checkpoint, else the saved
        model, else the fresh adapter).
    max_train_examples / max_eval_examples: per task (a seeded hash picks them); eval_split: which
        split is scored; max_new_tokens: generation budget for generation tasks (GSM8K).
    ttlora_experts: TT-LoRA MoE stage 2: one single-expert TT-LoRA model (folder or model object)
        per task, in task order; they are composed and frozen and only the router trains, with
        router_ce_weight * cross-entropy on the task id plus the task loss. route_by: "router" (the
        paper: the noisy top-1 expert serves the sequence) or "task" (teacher forcing).
    """

    base: str = ""
    tasks: Union[str, Sequence[TaskItem]] = ()
    tokenizer: Optional[str] = None
    adapter: AdapterSettings = dataclasses.field(default_factory=AdapterSettings)
    head: str = "auto"
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "linear"
    max_grad_norm: Optional[float] = 1.0
    epochs: float = 1.0
    max_steps: Optional[int] = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    bf16: Union[bool, str] = False
    cpu: bool = False
    seed: int = 0
    gradient_checkpointing: bool = False
    output: Optional[str] = None
    save_every: Optional[int] = None
    keep_checkpoints: int = 2
    resume: Union[bool, str] = False
    stop_after: Optional[int] = None
    eval_only: bool = False
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = 64
    eval_split: str = "test"
    eval_batch_size: Optional[int] = None
    max_new_tokens: int = 256
    log_every: int = 10
    dead_threshold: float = 0.02
    ttlora_experts: Optional[Sequence[Any]] = None
    router_ce_weight: float = 21.0
    route_by: str = "router"
    progress: bool = True
    cache_dir: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    dataset: Optional[str] = None
    text_column: str = "text"
    label_column: Optional[str] = None
    answer_column: Optional[str] = None
    own_task_name: Optional[str] = None
    template: Optional[str] = None
    base_repo_id: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        else:
            self.tasks = list(self.tasks)
        if self.output is not None:
            self.output = os.fspath(self.output)
        for name in ("resume", "train_file", "validation_file", "test_file", "dataset"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        self.validate()
        if self.own_data.given:
            self._add_own_task()

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """The run's own rules; the adapter's are AdapterSettings' (checked when it was built)."""
        if not self.base or not isinstance(self.base, (str, os.PathLike)):
            raise config_error("base", "must name a base model (a folder, a Hub id or a bootstrapped name)", self.base,
                               "pass e.g. base='smollm2-135m-instruct' or --base PATH.")
        self._validate_tasks()
        self._validate_adapter()
        self._validate_choices()
        self._validate_numbers()
        if (self.resume or self.save_every or self.stop_after) and not self.output:
            raise config_error("output", "must be set to checkpoint or resume (resume/save_every/stop_after given)",
                               self.output, "pass output=DIR (--output DIR).")
        if self.stop_after is not None and self.max_steps is not None and self.stop_after > self.max_steps:
            raise config_error("stop_after", f"must be <= max_steps={self.max_steps}", self.stop_after,
                               "stop earlier, or raise max_steps.")

    def _validate_tasks(self) -> None:
        check_arguments(self.own_data)  # the user's-data arguments among themselves; nothing is read yet
        if not self.tasks and not self.own_data.given:
            raise config_error("tasks", "must name at least one task (or your own data: train_file / dataset)",
                               self.tasks, "pass e.g. tasks=['spam'] or --task spam,gsm8k, or --train-file data.csv.")
        for item in self.tasks:
            if not (isinstance(item, str) or (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str))):
                raise config_error("tasks", "items must be task names or (name, DatasetDict) pairs", item,
                                   "pass a registered task name, or the pair load_task_from_dataset's name and result.")
        names = self.task_names
        if len(set(names)) != len(names):
            raise config_error("tasks", "must name each task once", names, "remove the repeated task names.")

    def _validate_adapter(self) -> None:
        """The adapter against the run: what it is, and the TT-LoRA MoE's two stages."""
        if not isinstance(self.adapter, AdapterSettings):
            raise config_error("adapter", "must be an AdapterSettings", type(self.adapter).__name__,
                               "pass adapter=AdapterSettings(...), or its fields flat (method=..., r=...).")
        method, experts = self.adapter.method, self.adapter.num_experts
        if self.ttlora_experts is None:
            if method == "ttlora" and experts != 1:
                raise config_error("num_experts", "must be 1 for method='ttlora' when training (stage 1 trains one "
                                   "expert per task; stage 2 composes them)", experts,
                                   "train single experts, then pass them as ttlora_experts (or `train ttlora-moe`).")
            return
        if method != "ttlora":
            raise config_error("method", "must be 'ttlora' when ttlora_experts is given (TT-LoRA MoE stage 2)",
                               method, "pass method='ttlora'.")
        if len(self.ttlora_experts) != len(self.tasks) or len(self.tasks) < 2:
            raise config_error("ttlora_experts", f"must hold one expert per task ({len(self.tasks)} tasks: "
                               f"{self.task_names}), at least two", f"{len(self.ttlora_experts)} experts",
                               "train one single-expert TT-LoRA per task first (stage 1), in task order.")

    def _validate_choices(self) -> None:
        if self.head not in HEADS:
            raise config_error("head", f"must be one of {list(HEADS)}", self.head, "use 'auto' unless you must force it.")
        if self.bf16 not in (False, True, "force"):
            raise config_error("bf16", "must be False, True or 'force'", self.bf16,
                               "use True (bf16 where native) or 'force' (even where emulated).")
        if self.lr_scheduler not in SCHEDULERS:
            raise config_error("lr_scheduler", f"must be one of {list(SCHEDULERS)}", self.lr_scheduler, "use 'linear'.")
        if self.route_by not in ROUTE_BY:
            raise config_error("route_by", f"must be one of {list(ROUTE_BY)}", self.route_by,
                               "use 'router' (the paper's noisy top-1) or 'task' (teacher forcing).")
        if self.eval_split not in EVAL_SPLITS:
            raise config_error("eval_split", f"must be one of {list(EVAL_SPLITS)}", self.eval_split, "use 'test'.")

    def _validate_numbers(self) -> None:
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "max_length": self.max_length,
                    "log_every": self.log_every, "keep_checkpoints": self.keep_checkpoints,
                    "max_new_tokens": self.max_new_tokens}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise config_error(name, "must be a positive integer", value, f"use e.g. {name}=8.")
        optional_positive = {"max_steps": self.max_steps, "save_every": self.save_every, "stop_after": self.stop_after,
                             "eval_batch_size": self.eval_batch_size}
        for name, value in optional_positive.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise config_error(name, "must be a positive integer or None", value, f"use e.g. {name}=100, or leave it unset.")
        for name, value in {"max_train_examples": self.max_train_examples,
                            "max_eval_examples": self.max_eval_examples}.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise config_error(name, "must be a non-negative integer or None (all)", value, f"use e.g. {name}=200.")
        if self.max_steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise config_error("epochs", "must be > 0 when max_steps is not set", self.epochs, "use e.g. epochs=1.")
        if not (self.lr > 0):
            raise config_error("lr", "must be > 0", self.lr, "use e.g. lr=3e-4.")
        if not 0 <= self.warmup_ratio < 1:
            raise config_error("warmup_ratio", "must be in [0, 1)", self.warmup_ratio, "use e.g. 0.03.")
        if self.weight_decay < 0:
            raise config_error("weight_decay", "must be >= 0", self.weight_decay, "use 0 or e.g. 0.01.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise config_error("max_grad_norm", "must be > 0 or None (no clipping)", self.max_grad_norm, "use 1.0.")
        if not self.router_ce_weight >= 0:
            raise config_error("router_ce_weight", "must be >= 0", self.router_ce_weight, "use 21 (the paper's weight).")

    def _add_own_task(self) -> None:
        """Reads and checks the user's data (ValueErrors naming --train-file, --text-column, ...) and adds it
        to `tasks` as a (name, DatasetDict) pair, replacing an earlier copy (dataclasses.replace)."""
        from ..data.own_data import load_own_task

        name, splits = load_own_task(self.own_data)
        self.tasks = [item for item in self.tasks if not (isinstance(item, tuple) and item[0] == name)]
        if name in self.task_names:
            raise config_error("--task-name", "must differ from the names in --task (your data become a task of "
                               "their own)", name, "pass --task-name with another name.")
        self.tasks.append((name, splits))

    # ---- derived ------------------------------------------------------------------------------
    @property
    def own_data(self) -> OwnData:
        """The user's-data fields as the data layer's OwnData."""
        return OwnData(**{own: getattr(self, name) for name, own in OWN_DATA_FIELDS.items()})

    @staticmethod
    def task_name(item: TaskItem) -> str:
        return item if isinstance(item, str) else item[0]

    @property
    def task_names(self) -> List[str]:
        return [self.task_name(item) for item in self.tasks]

    @property
    def is_moe_router_stage(self) -> bool:
        return self.ttlora_experts is not None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe: the adapter as its settings' dict, datasets passed in memory by name, experts by path
        or class name."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tasks":
                value = self.task_names
            elif f.name == "adapter":
                value = value.to_dict()
            elif f.name == "ttlora_experts" and value is not None:
                value = [os.fspath(v) if isinstance(v, (str, os.PathLike)) else type(v).__name__ for v in value]
            out[f.name] = value
        return json.loads(json.dumps(out, default=str))

    def fingerprint(self) -> str:
        """A hash of the fields that define the computation (every adapter setting included); a resume
        must match it."""
        values = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED
                  and not (k in _OWN_DATA_DEFAULTS and v == _OWN_DATA_DEFAULTS[k])}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
