"""TrainConfig: everything one training run needs, validated before any model or data is loaded.

Every error names the argument, the rule, the value received and the fix (the same shape as the
adapter settings' errors), so a typo on the command line fails in a second, not after loading 135M
parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..modeling.adapter_settings import METHODS, AdapterSettings, config_error

HEADS = ("auto", "causal", "classification")
SCHEDULERS = ("linear", "cosine", "constant")
ROUTE_BY = ("router", "task")
EVAL_SPLITS = ("train", "validation", "test")

# Fields that do not change what is computed: a resumed run may differ in these.
_NOT_FINGERPRINTED = {"cpu", "output", "resume", "stop_after", "eval_only", "push", "progress", "save_every",
                      "keep_checkpoints", "log_every", "max_eval_examples", "eval_split", "eval_batch_size",
                      "max_new_tokens", "cache_dir"}

TaskItem = Union[str, Tuple[str, Any]]


@dataclasses.dataclass
class TrainConfig:
    """One training run.

    base: a local folder, a Hub id, or a bootstrapped base model name ("smollm2-135m-instruct",
        "all-minilm-l6-v2"). tokenizer: its folder/id when it differs from base.
    tasks: task names and/or (name, DatasetDict) pairs (e.g. from load_task_from_dataset); a
        comma-separated string is split. Several tasks are mixed with talklora_hub.data.mix_tasks.
    method, r, num_experts, top_k (num_experts_per_tok), lora_alpha, lora_dropout, target_modules,
        router_aux_loss_coef, tt_rank, tt_alpha: the adapter (AdapterSettings); adapter_overrides
        sets any other AdapterSettings field.
    head: "causal" (loss on answer tokens only), "classification" (a head over the task's labels, for
        encoders such as BERT) or "auto" (classification for encoder-only bases, causal otherwise).
    lr, weight_decay, warmup_ratio, lr_scheduler, max_grad_norm: AdamW and its schedule.
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
    push: a Hub repo id to publish the trained model and its train_result.json to.
    """

    base: str = ""
    tasks: Union[str, Sequence[TaskItem]] = ()
    tokenizer: Optional[str] = None
    method: str = "talklora"
    r: int = 32
    num_experts: Optional[int] = None
    top_k: Optional[int] = None
    lora_alpha: Optional[float] = None
    lora_dropout: float = 0.05
    target_modules: Optional[Union[List[str], str]] = None
    router_aux_loss_coef: float = 0.0
    tt_rank: int = 5
    tt_alpha: float = 16.0
    adapter_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
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
    push: Optional[str] = None
    progress: bool = True
    cache_dir: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        else:
            self.tasks = list(self.tasks)
        if self.output is not None:
            self.output = os.fspath(self.output)
        if isinstance(self.resume, os.PathLike):
            self.resume = os.fspath(self.resume)
        self.validate()

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        if not self.base or not isinstance(self.base, (str, os.PathLike)):
            raise config_error("base", "must name a base model (a folder, a Hub id or a bootstrapped name)", self.base,
                               "pass e.g. base='smollm2-135m-instruct' or --base PATH.")
        if not self.tasks:
            raise config_error("tasks", "must name at least one task", self.tasks,
                               "pass e.g. tasks=['spam'] or --task spam,gsm8k.")
        for item in self.tasks:
            if not (isinstance(item, str) or (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str))):
                raise config_error("tasks", "items must be task names or (name, DatasetDict) pairs", item,
                                   "pass a registered task name, or the pair load_task_from_dataset's name and result.")
        names = [self.task_name(item) for item in self.tasks]
        if len(set(names)) != len(names):
            raise config_error("tasks", "must name each task once", names, "remove the repeated task names.")
        if self.method not in METHODS:
            raise config_error("method", f"must be one of {list(METHODS)}", self.method,
                               "pick one of the listed adapter methods, e.g. --method talklora.")
        self.adapter_settings()  # AdapterSettings' own rules (r divisible by E, top-k range, ...)
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
        if (self.resume or self.save_every or self.stop_after) and not self.output:
            raise config_error("output", "must be set to checkpoint or resume (resume/save_every/stop_after given)",
                               self.output, "pass output=DIR (--output DIR).")
        if self.stop_after is not None and self.max_steps is not None and self.stop_after > self.max_steps:
            raise config_error("stop_after", f"must be <= max_steps={self.max_steps}", self.stop_after,
                               "stop earlier, or raise max_steps.")
        if self.ttlora_experts is not None:
            if self.method != "ttlora":
                raise config_error("method", "must be 'ttlora' when ttlora_experts is given (TT-LoRA MoE stage 2)",
                                   self.method, "pass method='ttlora'.")
            if len(self.ttlora_experts) != len(self.tasks) or len(self.tasks) < 2:
                raise config_error("ttlora_experts", f"must hold one expert per task ({len(self.tasks)} tasks: "
                                   f"{names}), at least two", f"{len(self.ttlora_experts)} experts",
                                   "train one single-expert TT-LoRA per task first (stage 1), in task order.")
        if self.push is not None and (not isinstance(self.push, str) or "/" not in self.push):
            raise config_error("push", "must be a Hub repo id 'owner/name'", self.push, "pass e.g. --push me/talklora-spam.")

    # ---- derived ------------------------------------------------------------------------------
    @staticmethod
    def task_name(item: TaskItem) -> str:
        return item if isinstance(item, str) else item[0]

    @property
    def task_names(self) -> List[str]:
        return [self.task_name(item) for item in self.tasks]

    @property
    def is_moe_router_stage(self) -> bool:
        return self.ttlora_experts is not None

    def adapter_settings(self) -> AdapterSettings:
        """The AdapterSettings this run trains (a stage-2 run composes its experts' settings instead)."""
        values = dict(method=self.method, r=self.r, num_experts=self.num_experts, num_experts_per_tok=self.top_k,
                      lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, target_modules=self.target_modules,
                      router_aux_loss_coef=self.router_aux_loss_coef, tt_rank=self.tt_rank, tt_alpha=self.tt_alpha)
        values.update(self.adapter_overrides)
        if self.method == "ttlora" and self.ttlora_experts is None and values.get("num_experts") not in (None, 1):
            raise config_error("num_experts", "must be 1 for method='ttlora' when training (stage 1 trains one expert "
                               "per task; stage 2 composes them)", values["num_experts"],
                               "train single experts, then pass them as ttlora_experts (or `train ttlora-moe`).")
        try:
            return AdapterSettings(**values)
        except TypeError as error:
            raise config_error("adapter_overrides", "must only name AdapterSettings fields",
                               sorted(self.adapter_overrides), f"remove the unknown keys ({error}).") from None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe: datasets passed in memory are recorded by name, experts by path or class name."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tasks":
                value = self.task_names
            elif f.name == "ttlora_experts" and value is not None:
                value = [v if isinstance(v, (str, os.PathLike)) else type(v).__name__ for v in value]
                value = [os.fspath(v) for v in value]
            out[f.name] = value
        return json.loads(json.dumps(out, default=str))

    def fingerprint(self) -> str:
        """A hash of the fields that define the computation; a resume must match it."""
        values = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
