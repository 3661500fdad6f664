"""A training run's set-up: the base and head it resolves, its accelerator (processes, mixed precision), tokenizer,
tasks, model, optimizer and schedule, gathered in a `Run` by set_up; and what a run continues from (restore:
a checkpoint to resume, or with eval_only the adapter to score). talklora_hub.train.trainer runs the steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..data.base_models import resolve_base
from ..modeling import TalkLoRAForCausalLM, TalkLoRAForSequenceClassification
from ..modeling.adapter_settings import config_error
from ..modeling.compose import compose_ttlora_moe, freeze_experts, load_expert
from . import checkpoint as ckpt, processes
from .config import TrainConfig
from .data import BatchPlan, LazyEncoded, TaskData, pad_id, resolve_tasks
from .evaluate import accepts_logits_to_keep
from .routing_health import RoutingHealth

MODEL_DIR = "model"
LOG_NAME = "train_log.jsonl"

# TrainConfig.lr_scheduler -> transformers' schedule name (our "constant" warms up first).
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}

logger = logging.getLogger("talklora_hub.train.trainer")  # the run's messages keep the logger they always had


def _info(accelerator, message: str) -> None:
    """An INFO message from the main process only (every process runs the same code)."""
    if accelerator.is_main_process:
        logger.info(message)


# Encoder-only families: trained with a classification head ("auto" head).
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert",
                 "mpnet", "modernbert", "camembert", "nomic_bert", "xlm-roberta-xl", "ernie"}


# ---- setup -------------------------------------------------------------------------------------
def resolve_head(head: str, base_path: str) -> str:
    if head != "auto":
        return head
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(base_path)
    model_type = getattr(config, "model_type", "")
    if model_type == "talklora_hub":
        model_type = config.base_config.model_type
    if model_type in ENCODER_TYPES or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "classification"
    return "causal"


def make_accelerator(cfg: TrainConfig, find_unused: bool):
    """An Accelerator; a process that already made one with other settings (e.g. tests, recipes
    running several trainings) gets a fresh accelerator state, keeping the process group."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    cpu = processes.use_cpu(cfg.cpu)  # a launcher's N processes on a machine without a GPU: gloo DDP
    precision, note = bf16_plan(cfg.bf16, on_cpu=cpu or not torch.cuda.is_available())
    kwargs = dict(mixed_precision=precision, cpu=cpu,
                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    if note:
        warnings.warn(note)
    try:
        accelerator = Accelerator(**kwargs)
    except ValueError as error:
        if "already been initialized" not in str(error):
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(**kwargs)
    if alone := processes.fell_back_to_one_process(accelerator.num_processes):
        warnings.warn(alone, RuntimeWarning)  # the launcher meant several processes, this one trains alone
    accelerator.bf16_note = note
    return accelerator


def native_bf16(on_cpu: bool) -> bool:
    """Whether bfloat16 matmuls run natively: AVX512-BF16 or AMX on a CPU, bf16 support on a GPU."""
    if not on_cpu:
        return torch.cuda.is_bf16_supported()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def bf16_plan(bf16, on_cpu: bool):
    """(Accelerator mixed_precision, note). bf16=True uses bf16 autocast where the hardware runs it
    natively and falls back to fp32 (with a note) where it would be emulated, e.g. a CPU without
    AVX512-BF16/AMX, on which bf16 matmuls are several times slower than fp32; "force" uses it anyway.
    False leaves it to the launcher (`accelerate launch --mixed_precision`)."""
    if not bf16:
        return None, None
    if bf16 == "force" or native_bf16(on_cpu):
        return "bf16", None
    where = "this CPU has no AVX512-BF16/AMX" if on_cpu else "this GPU does not support bf16"
    return "no", (f"bf16 requested but {where}: bf16 autocast would be emulated and slower than fp32, so this run "
                  "uses fp32. Pass bf16='force' (--bf16 force) to use it anyway.")


def _load_tokenizer(cfg: TrainConfig, base_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or base_path)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(cfg: TrainConfig, base_path: str, head: str, data: TaskData):
    """The model to train: a fresh adapter on the base, or (stage 2) the composed TT-LoRA MoE with
    only its router trainable."""
    if cfg.is_moe_router_stage:
        if head != "causal":
            raise config_error("head", "must be causal for a TT-LoRA MoE (the experts share the LM head)", head,
                               "train the experts and the router on a decoder base.")
        experts = [load_expert(item) for item in cfg.ttlora_experts]
        model = compose_ttlora_moe(experts, base=base_path)
        freeze_experts(model)
        del experts
        return model
    settings = cfg.adapter
    if head == "classification":
        names = data.label_names
        if not names:
            raise config_error("tasks", "must include a classification task (with a 'label' column) for a "
                               "classification head", data.names, "pick classification tasks for an encoder base.")
        id2label, label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
        # ignore_mismatched_sizes: a base that is already a classifier with another number of labels gets a fresh head.
        model = TalkLoRAForSequenceClassification.from_base(
            base_path, settings, dtype=torch.float32, num_labels=len(names), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True)
        # The base's config gets them from from_pretrained; the saved (top-level) config must carry them too.
        model.config.id2label, model.config.label2id = id2label, label2id
        return model
    return TalkLoRAForCausalLM.from_base(base_path, settings, dtype=torch.float32)


def make_scheduler(optimizer, kind: str, total_steps: int, warmup_steps: int):
    """transformers' learning-rate schedule `kind` ("linear", "cosine" or "constant") for this project's warm-up.

    The schedule (as it always was here): step s < warmup_steps trains at lr * (s + 1) / (warmup_steps + 1), so
    the first step already trains; then linear decay to 0 at total_steps, half a cosine, or constant.
    transformers' warm-up starts at 0 instead, so its schedule with one more warm-up step over one more step
    is read one step ahead: its value at s + 1 is ours at s (tests/train/test_schedule.py checks the two).
    """
    from transformers import get_scheduler

    scheduler = get_scheduler(SCHEDULES[kind], optimizer, num_warmup_steps=warmup_steps + 1,
                              num_training_steps=total_steps + 1)
    with warnings.catch_warnings():
        # A step before the first optimizer.step() skips the schedule's first value: here, that is the point.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()
    return scheduler


# ---- the run -----------------------------------------------------------------------------------
def _fresh_window() -> Dict[str, Any]:
    """The open log window: sums since the last log record."""
    return {"loss": 0.0, "ce": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}


def _fresh_state() -> Dict[str, Any]:
    """Everything a resumed run needs to carry on as if never stopped (the open log window included)."""
    return {"step": 0, "losses": [], "tokens": 0, "answer_tokens": 0, "train_seconds": 0.0,
            "router_hits": 0, "router_seen": 0, "window": _fresh_window()}


@dataclasses.dataclass
class Run:
    """One run's live objects, built by set_up and read by every later step. `model` is the model as the
    accelerator prepared it (DDP-wrapped under several processes), `inner` the model itself; `state` is
    what a checkpoint carries."""

    cfg: TrainConfig
    accelerator: Any
    head: str
    base_path: str
    tokenizer: Any
    data: TaskData
    encoded: LazyEncoded
    plan: BatchPlan
    model: Any
    inner: Any
    optimizer: Any
    scheduler: Any
    trainable: List[torch.nn.Parameter]
    health: RoutingHealth
    parameter_counts: Dict[str, int]
    keep_logits: bool
    pad: int
    total_steps: int
    started: float
    state: Dict[str, Any] = dataclasses.field(default_factory=_fresh_state)

    @property
    def stage2(self) -> bool:
        return self.cfg.is_moe_router_stage

    @property
    def end_step(self) -> int:
        """Where this invocation stops: max steps, or stop_after (a simulated preemption)."""
        cfg = self.cfg
        return self.total_steps if cfg.stop_after is None else min(cfg.stop_after, self.total_steps)

    @property
    def log_path(self) -> Optional[Path]:
        return Path(self.cfg.output) / LOG_NAME if self.cfg.output else None


def set_up(cfg: TrainConfig) -> Run:
    """Resolves the base and head, makes the accelerator, seeds, loads tokenizer, tasks and model, and builds
    the batch plan, optimizer and schedule. The order is fixed: everything after set_seed draws random
    numbers in this order, which a resumed run relies on."""
    from accelerate.utils import set_seed

    started = time.perf_counter()
    base_path = resolve_base(cfg.base)
    head = resolve_head(cfg.head, base_path)
    # Top-k routing leaves some experts without gradient in a step: DDP must be told to look for them.
    accelerator = make_accelerator(cfg, find_unused=cfg.adapter.num_experts_per_tok is not None)
    set_seed(cfg.seed)

    tokenizer = _load_tokenizer(cfg, base_path)
    data = resolve_tasks(cfg.tasks, head, cfg.seed, cfg.max_train_examples, cfg.max_eval_examples, cfg.eval_split,
                         cfg.cache_dir, need_train=not cfg.eval_only)
    model = build_model(cfg, base_path, head, data)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Causal LMs: logits only where an answer token is predicted (the lm_head over a 49k vocabulary is
    # a fifth of SmolLM2's step); the loss is the same mean over answer tokens.
    keep_logits = head == "causal" and accepts_logits_to_keep(model)
    counts = model.parameter_counts()

    encoded = LazyEncoded(data.splits["train"], tokenizer, head, cfg.max_length, data)
    plan = BatchPlan(max(1, len(encoded)), cfg.batch_size, cfg.grad_accum, accelerator.num_processes,
                     accelerator.process_index, cfg.seed)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * plan.steps_per_epoch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, total_steps, int(cfg.warmup_ratio * total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    return Run(cfg=cfg, accelerator=accelerator, head=head, base_path=base_path, tokenizer=tokenizer, data=data,
               encoded=encoded, plan=plan, model=model, inner=accelerator.unwrap_model(model), optimizer=optimizer,
               scheduler=scheduler, trainable=trainable, health=RoutingHealth(cfg.dead_threshold),
               parameter_counts=counts, keep_logits=keep_logits, pad=pad_id(tokenizer), total_steps=total_steps,
               started=started)


def restore(run: Run) -> None:
    """Loads what the run continues from: with eval_only the adapter to score; with resume the latest
    checkpoint (adapter, optimizer, schedule, RNG, counters), refused if it was written with other settings."""
    cfg = run.cfg
    if cfg.eval_only:
        _load_for_eval(cfg, run.inner, run.accelerator)
        return
    resume_from = _resume_path(cfg)
    if resume_from is None:
        if cfg.resume:
            _info(run.accelerator, f"no checkpoint in {ckpt.checkpoint_dir(cfg.output)}; starting from step 0")
        return
    saved = ckpt.load_trainer_state(resume_from)
    if saved.get("fingerprint") != cfg.fingerprint():
        raise config_error("resume", "must continue a run with the same settings (method, rank, tasks, lr, steps, "
                           "seed, ...)", str(resume_from), "resume with the original arguments, or start a new "
                           "--output.")
    loaded = ckpt.load_checkpoint(resume_from, run.inner, run.optimizer, run.scheduler, run.accelerator)
    run.state.update({k: loaded[k] for k in run.state if k in loaded})
    run.health.load_state_dict(loaded.get("routing", {}))
    _info(run.accelerator, f"resumed from {resume_from} at step {run.state['step']}/{run.total_steps}")


def _resume_path(cfg: TrainConfig) -> Optional[Path]:
    """The checkpoint cfg.resume names: None (no resume, or no checkpoint in output yet), the latest in output
    (resume=True), or the given checkpoint folder (or the latest in the given run folder)."""
    if not cfg.resume:
        return None
    if isinstance(cfg.resume, str):
        path = Path(cfg.resume)
        if path.is_dir() and (path / "trainer_state.json").is_file():
            return path
        found = ckpt.latest_checkpoint(path) if path.is_dir() else None
        if found is None:
            raise config_error("resume", "must be True or a checkpoint folder (or a run folder holding checkpoints/)",
                               cfg.resume, "pass --resume alone to continue from the latest checkpoint in --output.")
        return found
    return ckpt.latest_checkpoint(cfg.output)


def _load_for_eval(cfg: TrainConfig, model, accelerator) -> None:
    """eval_only: the adapter of the run in cfg.output (latest checkpoint, else the saved model)."""
    found = _resume_path(cfg) if cfg.resume else (ckpt.latest_checkpoint(cfg.output) if cfg.output else None)
    if found is not None:
        from safetensors.torch import load_file

        ckpt.load_adapter_tensors(model, load_file(str(Path(found) / "adapter.safetensors")))
        _info(accelerator, f"evaluating the adapter of {found}")
        return
    saved = Path(cfg.output) / MODEL_DIR if cfg.output else None
    if saved is not None and (saved / "config.json").is_file():
        from safetensors.torch import load_file

        tensors = {}
        for shard in sorted(saved.glob("*.safetensors")):
            tensors.update(load_file(str(shard)))
        wanted = set(ckpt.adapter_tensor_names(model))
        ckpt.load_adapter_tensors(model, {k: v for k, v in tensors.items() if k in wanted})
        _info(accelerator, f"evaluating the saved model in {saved}")
        return
    warnings.warn("eval_only: no checkpoint or saved model found in output; evaluating the freshly initialised "
                  "adapter (for LoRA and TalkLoRA that is the base model itself).")
