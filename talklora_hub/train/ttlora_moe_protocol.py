"""The TT-LoRA MoE protocol (arXiv 2504.21190) as one multi-run experiment built from train() (the zoo's own
recipes, one per shipped entry, are talklora_hub/zoo/recipes.py).

ttlora_moe_recipe reproduces the TT-LoRA MoE protocol (arXiv 2504.21190) on our tasks:
  1. stage 1: one single-expert TT-LoRA per task (method "ttlora", num_experts=1), each saved;
  2. stage 2: the experts composed (compose_ttlora_moe) and frozen, only the router trained on the
     frozen base's state at the last prompt token: noisy top-1, loss = task loss + 21 * CE(router,
     task id). The argmax choice has no gradient, so the task loss does not reach the router: the
     router learns from the cross-entropy alone (the task loss is still computed and logged);
  3. a baseline: one multi-task LoRA trained on the same mixture;
and compares, per task: the MoE (routing on its own), each expert alone on its task, the MoE with
oracle routing (its task's expert forced: must equal the expert alone), and the multi-task LoRA,
plus the router's accuracy. Writes comparison.json and comparison.md into the output folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from .config import TrainConfig
from .trainer import TrainResult, train


@dataclasses.dataclass
class RecipeSettings:
    """Knobs of the TT-LoRA MoE comparison (steps per stage, learning rates, sizes). lora_dropout: the
    dropout of the stage-1 experts and of the LoRA baseline (the router stage composes the experts')."""

    expert_steps: int = 200
    router_steps: int = 100
    lora_steps: Optional[int] = None  # None: expert_steps * number of tasks (the experts' total)
    expert_lr: float = 2e-3
    router_lr: float = 1e-3
    lora_lr: float = 3e-4
    lora_r: int = 8
    tt_rank: int = 5
    tt_alpha: float = 16.0
    lora_dropout: float = 0.05
    router_ce_weight: float = 21.0
    batch_size: int = 8
    max_length: int = 256
    bf16: Union[bool, str] = False
    seed: int = 0
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = 64
    max_new_tokens: int = 256
    include_lora: bool = True
    oracle: bool = True
    progress: bool = True


def ttlora_moe_recipe(base: str, tasks: Sequence[Any], output: Optional[str] = None,
                      settings: Optional[RecipeSettings] = None) -> Dict[str, Any]:
    """Runs the three trainings and returns the comparison (also written to output, if given)."""
    s = settings or RecipeSettings()
    names = [TrainConfig.task_name(t) for t in tasks]
    common = dict(base=base, batch_size=s.batch_size, max_length=s.max_length, bf16=s.bf16, seed=s.seed,
                  max_train_examples=s.max_train_examples, max_eval_examples=s.max_eval_examples,
                  max_new_tokens=s.max_new_tokens, progress=s.progress)
    out = Path(output) if output else None

    experts: Dict[str, TrainResult] = {}
    for item, name in zip(tasks, names):
        experts[name] = train(TrainConfig(tasks=[item], method="ttlora", num_experts=1, tt_rank=s.tt_rank,
                                          tt_alpha=s.tt_alpha, lora_dropout=s.lora_dropout, lr=s.expert_lr,
                                          max_steps=s.expert_steps,
                                          output=str(out / "experts" / name) if out else None, **common))
        if experts[name].model_dir:  # saved: reload it for composing, free the memory now
            experts[name].model = None
    expert_refs = [experts[n].model_dir or experts[n].model for n in names]
    moe = train(TrainConfig(tasks=list(tasks), method="ttlora", ttlora_experts=expert_refs, lr=s.router_lr,
                            max_steps=s.router_steps, router_ce_weight=s.router_ce_weight,
                            output=str(out / "moe") if out else None, **common))
    oracle = evaluate_oracle(moe, common["max_length"], s) if s.oracle else None
    lora = None
    if s.include_lora:
        lora = train(TrainConfig(tasks=list(tasks), method="lora", r=s.lora_r, lora_dropout=s.lora_dropout,
                                 lr=s.lora_lr,
                                 max_steps=s.lora_steps or s.expert_steps * len(names),
                                 output=str(out / "lora_multitask") if out else None, **common))
    comparison = compare_ttlora_moe(moe, experts, lora, oracle)
    comparison["settings"] = dataclasses.asdict(s)
    comparison["base"] = base
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
        (out / "comparison.md").write_text(comparison_table(comparison) + "\n")
    return comparison


def evaluate_oracle(moe: TrainResult, max_length: int, s: RecipeSettings) -> Dict[str, Any]:
    """The MoE with each task's own expert forced (oracle routing), on the MoE run's eval examples."""
    from .evaluate import evaluate, headline

    data = moe.task_data
    rows = data.splits[moe.data["eval_split"]]
    scores = {}
    for index, name in enumerate(data.names):
        task_rows = [r for r in rows if r["task_name"] == name]
        metrics = evaluate(moe.model, moe.tokenizer, data, task_rows, "causal", max_length, s.max_new_tokens,
                           s.batch_size, forced_expert=index)
        scores.update(headline(metrics))
    return scores


def compare_ttlora_moe(moe: TrainResult, experts: Dict[str, TrainResult], lora: Optional[TrainResult] = None,
                       oracle: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Per task: MoE, expert alone, oracle-routed MoE, multi-task LoRA; router accuracy; sizes."""
    router = moe.router or {}
    per_task = {}
    for name in moe.data["tasks"]:
        per_task[name] = {
            "moe": moe.headline.get(name),
            "expert_alone": experts[name].headline.get(name) if name in experts else None,
            "moe_oracle_routing": (oracle or {}).get(name),
            "lora_multitask": lora.headline.get(name) if lora else None,
            "router_accuracy": router.get("per_task", {}).get(name),
        }

    def mean(key):
        values = [v[key] for v in per_task.values() if v[key] is not None]
        return sum(values) / len(values) if values else None

    return {
        "tasks": per_task,
        "mean": {key: mean(key) for key in ("moe", "expert_alone", "moe_oracle_routing", "lora_multitask")},
        "router": {"accuracy": router.get("accuracy"), "train_accuracy": router.get("train_accuracy"),
                   "confusion": router.get("confusion"), "n": router.get("n")},
        "parameters": {"expert_trainable_each": {n: r.parameter_counts["trainable"] for n, r in experts.items()},
                       "router_trainable": moe.parameter_counts["trainable"],
                       "lora_trainable": lora.parameter_counts["trainable"] if lora else None},
        "timing": {"experts": {n: r.timing for n, r in experts.items()}, "router": moe.timing,
                   "lora": lora.timing if lora else None},
    }


def comparison_table(comparison: Dict[str, Any]) -> str:
    """A markdown table of the comparison."""
    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    lines = ["| task | MoE | expert alone | MoE, oracle routing | multi-task LoRA | router acc. |",
             "|---|---|---|---|---|---|"]
    for name, row in comparison["tasks"].items():
        lines.append(f"| {name} | {fmt(row['moe'])} | {fmt(row['expert_alone'])} | {fmt(row['moe_oracle_routing'])} "
                     f"| {fmt(row['lora_multitask'])} | {fmt(row['router_accuracy'])} |")
    m = comparison["mean"]
    lines.append(f"| **mean** | {fmt(m['moe'])} | {fmt(m['expert_alone'])} | {fmt(m['moe_oracle_routing'])} "
                 f"| {fmt(m['lora_multitask'])} | {fmt(comparison['router']['accuracy'])} |")
    return "\n".join(lines)
