"""One optimizer step of a run (train_step: grad_accum micro-batches, clipping, AdamW, the schedule) and its
loss (forward_loss); then its record (record_step: progress bar, log window, train_log.jsonl) and its
checkpoint (checkpoint_if_due)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..modeling.compose import sequence_routing_args
from . import checkpoint as ckpt
from .build import Run, _fresh_window
from .data import collate


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
