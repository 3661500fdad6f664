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
bars are tqdm's. The steps live in build (set_up, restore: the Run), steps (train_step, record_step,
checkpoint_if_due, forward_loss) and results (gather_totals ... save_outputs, TrainResult); their names stay
importable from here.
"""

from __future__ import annotations

from . import checkpoint as ckpt
from .build import (ENCODER_TYPES, LOG_NAME, MODEL_DIR, SCHEDULES, Run, bf16_plan, build_model,  # noqa: F401
                    make_accelerator, make_scheduler, native_bf16, resolve_base, resolve_head, restore, set_up)
from .config import TrainConfig
from .results import (EVAL_RESULT_NAME, RESULT_NAME, TrainResult, evaluate_run, gather_totals,  # noqa: F401
                      make_result, save_outputs)
from .steps import answer_positions, checkpoint_if_due, forward_loss, record_step, train_step  # noqa: F401


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


def model_label(cfg: TrainConfig) -> str:
    if cfg.is_moe_router_stage:
        return "ttlora-moe router"
    return cfg.adapter.method
