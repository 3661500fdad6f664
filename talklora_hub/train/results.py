"""What a finished run yields: its totals over processes (gather_totals), its scores on the eval split
(evaluate_run), the TrainResult (make_result) and the files it leaves in output (save_outputs)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..data.spec import describe_tasks
from .build import MODEL_DIR, Run
from .evaluate import evaluate, headline, router_accuracy

RESULT_NAME = "train_result.json"
EVAL_RESULT_NAME = "eval_result.json"


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


def _count(rows: List[dict], names: List[str]) -> Dict[str, int]:
    return {name: sum(1 for r in rows if r["task_name"] == name) for name in names}
