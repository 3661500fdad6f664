"""`train(TrainConfig) -> TrainResult`: the one training entry point, for every method, base and task.

Design: a plain loop on `accelerate.Accelerator`, not the transformers Trainer. The same script runs
alone, under `accelerate launch` (DDP on CPU/gloo or GPU/NCCL; mixed precision from the launch
config or --bf16) or under `torchrun`, with no code change; Accelerator only wraps the model and the
optimizer. Owning the loop is what the rest of this package needs and the Trainer makes awkward:
routing health is read from every step's routing weights; the loss is on answer tokens only with our
own collation; and checkpoints are a documented safetensors + json layout whose resume is bit-exact
(data order is a pure function of seed and step, RNG states per process). The TT-LoRA MoE stage 2
needs no loop of its own: what the router reads (router_attention_mask: the prompt), which expert
serves each sequence (sequence_experts, with route_by="task") and the router's cross-entropy target
(sequence_labels) are plain forward arguments of the model, so transformers' Trainer trains it too.
DeepSpeed/FSDP are reachable through `accelerate launch --config_file` (Accelerator.prepare hands
the model over); they are untested here.

One step = grad_accum micro-batches of batch_size sequences per process, then one AdamW step
(gradients averaged over processes by DDP), gradient clipping, and one LR-schedule step (transformers'
get_scheduler). train() runs the named steps in order: set_up, restore (resume), then per step
train_step, record_step (progress bar, log) and checkpoint_if_due; then gather_totals, evaluate_run,
make_result and save_outputs. Messages go to the `logging` module (INFO, main process only); progress
bars are tqdm's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..modeling import TalkLoRAForCausalLM, TalkLoRAForSequenceClassification
from ..data.spec import describe_tasks
from ..modeling.adapter_settings import config_error
from . import checkpoint as ckpt, processes
from ..modeling.compose import compose_ttlora_moe, freeze_experts, load_expert, sequence_routing_args
from .config import TrainConfig
from .data import BatchPlan, LazyEncoded, TaskData, collate, pad_id, resolve_tasks
from .evaluate import accepts_logits_to_keep, evaluate, headline, router_accuracy
from .routing_health import RoutingHealth

RESULT_NAME = "train_result.json"
EVAL_RESULT_NAME = "eval_result.json"
MODEL_DIR = "model"
LOG_NAME = "train_log.jsonl"

# TrainConfig.lr_scheduler -> transformers' schedule name (our "constant" warms up first).
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}

logger = logging.getLogger(__name__)


def _info(accelerator, message: str) -> None:
    """An INFO message from the main process only (every process runs the same code)."""
    if accelerator.is_main_process:
        logger.info(message)

# Encoder-only families: trained with a classification head ("auto" head).
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert",
                 "mpnet", "modernbert", "camembert", "nomic_bert", "xlm-roberta-xl", "ernie"}


@dataclasses.dataclass
class TrainResult:
    """What a run produced. `to_dict()` is what train_result.json holds; model, tokenizer and task_data
    (the resolved tasks and examples) are the live objects, for further use in the same process."""

    metrics: Dict[str, Any]
    headline: Dict[str, float]
    router: Optional[Dict[str, Any]]
    routing: Dict[str, Any]
    parameter_counts: Dict[str, int]
    config: Dict[str, Any]
    adapter_settings: Dict[str, Any]
    data: Dict[str, Any]
    timing: Dict[str, Any]
    losses: List[Dict[str, Any]]
    steps: int
    total_steps: int
    stopped_early: bool
    head: str
    base: str
    output_dir: Optional[str] = None
    model_dir: Optional[str] = None
    result_path: Optional[str] = None
    checkpoint: Optional[str] = None
    model: Any = dataclasses.field(default=None, repr=False)
    tokenizer: Any = dataclasses.field(default=None, repr=False)
    task_data: Any = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "tokenizer", "task_data")}
        out["versions"] = _versions()
        return json.loads(json.dumps(out, default=str))


def _versions() -> Dict[str, str]:
    import accelerate
    import transformers

    try:
        from importlib.metadata import version

        own = version("talklora_hub")
    except Exception:  # not installed as a distribution
        own = "unknown"
    return {"talklora_hub": own, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": sys.version.split()[0]}


# ---- setup -------------------------------------------------------------------------------------
def resolve_base(base: str) -> str:
    """A bootstrapped base model name becomes its folder; anything else is passed on as is."""
    from ..data.base_models import BASE_MODELS, base_model_path

    if base in BASE_MODELS:
        return str(base_model_path(base))
    return os.fspath(base)


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


def train_step(run: Run) -> Tuple[float, float, float]:
    """One optimizer step: grad_accum micro-batches (gradients synchronised across processes on the last
    only), clipping, AdamW and the schedule. Returns (task loss, router cross-entropy, seconds), the losses
    as means over the micro-batches (the cross-entropy is 0 outside a TT-LoRA MoE stage 2)."""
    cfg, accelerator = run.cfg, run.accelerator
    started = time.perf_counter()
    micro = run.plan.micro_batches(run.state["step"])
    step_loss = step_ce = 0.0
    for index, indices in enumerate(micro):
        loss, ce = _micro_batch(run, indices, sync=index == len(micro) - 1, count=len(micro))
        step_loss += loss / len(micro)
        step_ce += ce / len(micro)
    if cfg.max_grad_norm is not None:
        accelerator.clip_grad_norm_(run.trainable, cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state["step"] += 1
    return step_loss, step_ce, time.perf_counter() - started


def _micro_batch(run: Run, indices: List[int], sync: bool, count: int) -> Tuple[float, float]:
    """Forward and backward of one micro-batch (its loss scaled by 1 / count), and its token and routing
    counts; returns (task loss, router cross-entropy or 0)."""
    cfg, accelerator, inner, state = run.cfg, run.accelerator, run.inner, run.state
    batch = collate([run.encoded[i] for i in indices], run.head, run.pad)
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    # Stage 2: the router reads the prompt only; with route_by="task" each task's expert is forced.
    routing = sequence_routing_args(inner, prompt_mask=batch.get("prompt_mask"),
                                    experts=batch.get("task") if cfg.route_by == "task" else None)
    settings = inner.adapter_settings
    context = contextlib.nullcontext() if sync else accelerator.no_sync(run.model)
    with context:
        with accelerator.autocast():
            out, loss = forward_loss(run.model, batch, run.head, run.keep_logits, settings.is_routed,
                                     settings.router_aux_loss_coef, routing)
        ce = F.cross_entropy(out.sequence_router_logits.float(), batch["task"]) if run.stage2 else None
        accelerator.backward((loss if ce is None else loss + cfg.router_ce_weight * ce) / count)
    tokens = int(batch["attention_mask"].sum())
    state["tokens"] += tokens
    state["window"]["tokens"] += tokens
    if run.head == "causal":
        state["answer_tokens"] += int((batch["labels"] != -100).sum())
    if settings.is_routed and out.routing_weights:
        run.health.update_tokens(out.routing_weights, out.router_module_names, batch["attention_mask"])
    if run.stage2 and out.sequence_router_logits is not None:
        run.health.update_sequences(out.sequence_router_logits, inner.adapter_shared.sequence_experts)
        picked = out.sequence_router_logits.detach().argmax(-1)
        state["router_hits"] += int((picked == batch["task"]).sum())
        state["router_seen"] += int(batch["task"].numel())
    return float(loss.detach()), float(ce.detach()) if ce is not None else 0.0


def record_step(run: Run, bar, loss: float, ce: float, seconds: float) -> None:
    """Adds a finished step to the counters and the progress bar; every log_every steps (and at the last)
    closes the log window into a record, kept in the result and appended to train_log.jsonl."""
    state, window = run.state, run.state["window"]
    state["train_seconds"] += seconds
    window["loss"] += loss
    window["ce"] += ce
    window["steps"] += 1
    window["seconds"] += seconds
    bar.set_postfix({"loss": f"{loss:.3f}", **({"ce": f"{ce:.3f}"} if run.stage2 else {}), **run.health.postfix()},
                    refresh=False)
    bar.update(1)
    if state["step"] % run.cfg.log_every and state["step"] != run.total_steps:
        return
    record = _log_record(state, window, run.scheduler, run.health, run.accelerator, run.stage2)
    state["losses"].append(record)
    if run.log_path is not None and run.accelerator.is_main_process:
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(run.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
    run.health.window.reset()
    state["window"] = _fresh_window()


def checkpoint_if_due(run: Run) -> None:
    """Writes a checkpoint every save_every steps and at the run's last step (every process takes part)."""
    cfg, step = run.cfg, run.state["step"]
    if not cfg.output or not (step == run.end_step or (cfg.save_every and step % cfg.save_every == 0)):
        return
    trainer_state = {**run.state, "fingerprint": cfg.fingerprint(), "total_steps": run.total_steps,
                     "routing": run.health.state_dict(), "config": cfg.to_dict()}
    ckpt.save_checkpoint(cfg.output, step, run.inner, run.optimizer, run.scheduler, trainer_state, run.accelerator,
                         cfg.keep_checkpoints)


def gather_totals(run: Run) -> Dict[str, int]:
    """The run's counts summed over processes (routing health included, reduced in place)."""
    run.health.reduce(run.accelerator)
    keys = ("tokens", "answer_tokens", "router_hits", "router_seen")
    totals = torch.tensor([run.state[k] for k in keys], dtype=torch.float64)
    if run.accelerator.num_processes > 1:
        totals = run.accelerator.reduce(totals.to(run.accelerator.device), reduction="sum").cpu()
    return {k: int(v) for k, v in zip(keys, totals)}


def evaluate_run(run: Run, totals: Dict[str, int]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], float]:
    """Scores the adapter on the eval split: (per-task metrics, the TT-LoRA MoE router's accuracy or None,
    seconds). A run stopped early is not scored."""
    cfg, accelerator, inner = run.cfg, run.accelerator, run.inner
    run.model.eval()
    started = time.perf_counter()
    metrics: Dict[str, Any] = {}
    router: Optional[Dict[str, Any]] = None
    eval_rows = run.data.splits[cfg.eval_split]
    if not _stopped_early(run) and eval_rows:
        eval_bs = cfg.eval_batch_size or cfg.batch_size
        metrics = evaluate(inner, run.tokenizer, run.data, eval_rows, run.head, cfg.max_length, cfg.max_new_tokens,
                           eval_bs, accelerator.autocast, accelerator,
                           progress=cfg.progress and accelerator.is_main_process, dead_threshold=cfg.dead_threshold)
        if inner.sequence_router is not None:
            router = router_accuracy(inner, run.tokenizer, eval_rows, run.data.names, cfg.max_length, eval_bs,
                                     accelerator.autocast, accelerator)
            seen = totals["router_seen"]
            router["train_accuracy"] = totals["router_hits"] / seen if seen else None
    return metrics, router, time.perf_counter() - started


def _stopped_early(run: Run) -> bool:
    return not run.cfg.eval_only and run.state["step"] < run.total_steps


def make_result(run: Run, totals: Dict[str, int], metrics: Dict[str, Any], router: Optional[Dict[str, Any]],
                eval_seconds: float, checkpoint: Optional[Path]) -> TrainResult:
    """The TrainResult of the run (not yet written anywhere)."""
    cfg, accelerator, data, state = run.cfg, run.accelerator, run.data, run.state
    train_seconds, tokens = state["train_seconds"], totals["tokens"]
    timing = {"train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
              "total_seconds": round(time.perf_counter() - run.started, 3), "tokens": tokens,
              "answer_tokens": totals["answer_tokens"],
              "tokens_per_second": round(tokens / train_seconds, 2) if train_seconds > 0 else None,
              "steps_per_second": round(state["step"] / train_seconds, 4) if train_seconds > 0 else None,
              "num_processes": accelerator.num_processes, "device": str(accelerator.device),
              "mixed_precision": accelerator.mixed_precision, "bf16_note": getattr(accelerator, "bf16_note", None),
              "torch_threads": torch.get_num_threads()}
    eval_rows = data.splits[cfg.eval_split]
    return TrainResult(
        metrics=metrics, headline=headline(metrics), router=router, routing=run.health.summary(),
        parameter_counts=run.parameter_counts, config=cfg.to_dict(),
        adapter_settings=run.inner.adapter_settings.to_dict(),
        data={"tasks": data.names, "kinds": data.kinds, "train": _count(data.splits["train"], data.names),
              "eval": _count(eval_rows, data.names), "eval_split": cfg.eval_split,
              "train_examples_tokenized": len(run.encoded.cache),
              "task_details": describe_tasks(data.specs, data.splits, cfg.eval_split)},
        timing=timing, losses=state["losses"], steps=state["step"], total_steps=run.total_steps,
        stopped_early=_stopped_early(run), head=run.head, base=run.base_path, output_dir=cfg.output,
        checkpoint=str(checkpoint) if checkpoint else None,
        model=accelerator.unwrap_model(run.model, keep_fp32_wrapper=False), tokenizer=run.tokenizer, task_data=data)


def save_outputs(run: Run, result: TrainResult) -> None:
    """Writes what a finished run leaves in output: model/ (weights, tokenizer, train_result.json) and a copy of
    train_result.json beside it; an eval_only run writes eval_result.json only, keeping the run's own record.
    A run stopped early leaves its checkpoint only. Sets result.model_dir and result.result_path."""
    cfg, accelerator = run.cfg, run.accelerator
    if not cfg.output or result.stopped_early:
        return
    output = Path(cfg.output)
    if cfg.eval_only:
        result.result_path = str(output / EVAL_RESULT_NAME)
        if accelerator.is_main_process:
            output.mkdir(parents=True, exist_ok=True)
            Path(result.result_path).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    model_dir = output / MODEL_DIR
    result.model_dir = str(model_dir)
    result.result_path = str(model_dir / RESULT_NAME)
    if accelerator.is_main_process:
        result.model.save_pretrained(model_dir)
        run.tokenizer.save_pretrained(model_dir)
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        (model_dir / RESULT_NAME).write_text(text)
        (output / RESULT_NAME).write_text(text)
    accelerator.wait_for_everyone()


def train(config: TrainConfig) -> TrainResult:
    """Trains (or with eval_only, only evaluates) the adapter of `config`; see TrainConfig."""
    from tqdm.auto import tqdm

    run = set_up(config)
    restore(run)
    cfg = run.cfg
    bar = tqdm(total=run.total_steps, initial=run.state["step"], desc=f"train {model_label(cfg)}", unit="step",
               disable=cfg.eval_only or not cfg.progress or not run.accelerator.is_main_process, dynamic_ncols=True)
    run.model.train()
    while not cfg.eval_only and run.state["step"] < run.end_step:
        record_step(run, bar, *train_step(run))
        checkpoint_if_due(run)
    bar.close()
    checkpoint = ckpt.latest_checkpoint(cfg.output) if cfg.output else None
    totals = gather_totals(run)
    metrics, router, eval_seconds = evaluate_run(run, totals)
    result = make_result(run, totals, metrics, router, eval_seconds, checkpoint)
    save_outputs(run, result)
    return result


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


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions p whose next token (p + 1) is an answer token in some row: (K,) long."""
    return (labels[:, 1:] != -100).any(0).nonzero().flatten()


def forward_loss(model, batch: Dict[str, torch.Tensor], head: str, keep_logits: bool, routed: bool, aux_coef: float,
                 routing: Optional[Dict[str, torch.Tensor]] = None):
    """(model output, task loss): mean cross-entropy over answer tokens (causal LM) or over labels.

    With keep_logits the model returns logits only at answer positions and the loss is computed here
    (the router's load-balancing term added as the model itself would). routing: a TT-LoRA MoE's
    per-sequence routing arguments (compose.sequence_routing_args), passed to the model as they are."""
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_router_logits=True if routed else None, **(routing or {}))
    if not keep_logits:
        out = model(**kwargs, labels=batch["labels"])
        return out, out.loss.float()
    positions = answer_positions(batch["labels"])
    if positions.numel() == 0:  # no answer token at all (cannot happen with join_causal): the model's own loss
        out = model(**kwargs, labels=batch["labels"])
        return out, out.loss.float()
    out = model(**kwargs, logits_to_keep=positions)
    targets = batch["labels"][:, positions + 1]
    loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    if aux_coef > 0 and out.aux_loss is not None:
        loss = loss + aux_coef * out.aux_loss.float()
    return out, loss


def model_label(cfg: TrainConfig) -> str:
    if cfg.is_moe_router_stage:
        return "ttlora-moe router"
    return cfg.adapter.method


def _count(rows: List[dict], names: List[str]) -> Dict[str, int]:
    return {name: sum(1 for r in rows if r["task_name"] == name) for name in names}


def _log_record(state, window, scheduler, health, accelerator, stage2) -> Dict[str, Any]:
    steps, seconds = max(1, window["steps"]), window["seconds"]
    values = torch.tensor([window["loss"] / steps, window["ce"] / steps, float(window["tokens"])], dtype=torch.float64)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values.to(accelerator.device), reduction="sum").cpu()
        values[:2] /= accelerator.num_processes
    record = {"step": state["step"], "loss": round(float(values[0]), 6), "lr": scheduler.get_last_lr()[0],
              "tokens_per_second": round(float(values[2]) / seconds, 2) if seconds > 0 else None}
    if stage2:
        record["router_ce"] = round(float(values[1]), 6)
    window_summary = health.summary("window")
    overall = window_summary["overall"]
    if overall:
        record["routing"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in overall.items()}
        record["routing_layers"] = {layer: {"normalized_entropy": round(v["normalized_entropy"], 4),
                                            "load_cv": round(v["load_cv"], 4), "dead_experts": v["dead_experts"]}
                                    for layer, v in window_summary["layers"].items()}
    return record


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

