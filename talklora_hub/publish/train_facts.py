"""The publisher's producer of CardFacts: a talklora_hub.train result (TrainResult.to_dict(), the
train_result.json a run writes) read into the facts its card shows. Its twin for the zoo is
talklora_hub.jobs.zoo_build.card_result.
"""

from __future__ import annotations

import dataclasses
from pathlib import PurePath
from typing import Any, Dict, List, Optional

from .card_facts import CardFacts
from .cards import base_label, is_hub_id

# The recipe figures every Training table shows: a result without them is not a train result.
_NEEDED = ("lr", "batch_size", "max_length")
# Keys of a task's metrics that are not metrics of their own (the sample size is each row's count).
_NOT_METRICS = {"n", "count", "examples", "correct", "low", "high", "split"}


def facts_from_train_result(result: Dict[str, Any]) -> CardFacts:
    """The card facts of a finished talklora_hub.train run. Extra keys "datasets" (Hub dataset repos) and
    "comparison" (baselines per task) are taken where a caller added them to the result."""
    config = result.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"`result['config']` must be the run's TrainConfig as a dict, got {config!r}. Fix: pass the "
                         "dict TrainResult.to_dict() returns (the run's train_result.json), or build CardFacts(...).")
    for key in _NEEDED:
        if config.get(key) is None:
            raise ValueError(f"`result['config']['{key}']` is needed for the card's Training table, got None. Fix: "
                             "pass the whole train_result.json the run wrote (TrainResult.to_dict()).")
    data = result.get("data") or {}
    facts = CardFacts(tasks=data.get("tasks") or config.get("tasks") or [], training={},
                      evaluation=_metric_rows(result), task_details=data.get("task_details") or {},
                      head=result.get("head"), base_name=config.get("base"), base_repo_id=config.get("base_repo_id"),
                      datasets=result.get("datasets") or None, comparison=result.get("comparison"), result=result)
    # The table names the base the way the card does, which needs the base facts above.
    return dataclasses.replace(facts, training=_training_table(result, base_label(result.get("base"), facts)))


def _metric_rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    split = (result.get("data") or {}).get("eval_split")
    rows = []
    for task, metrics in (result.get("metrics") or {}).items():
        count = metrics.get("n", metrics.get("count", metrics.get("examples", "")))
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in _NOT_METRICS:
                rows.append({"task": task, "split": split or metrics.get("split", "test"), "metric": metric,
                             "value": value, "count": count, "dataset": None})
    return rows


def _training_table(result: Dict[str, Any], base: Optional[str]) -> Dict[str, Any]:
    """The run's figures: learning rate, batch size, sequence length, steps, ... (local paths are dropped when
    the card renders them)."""
    config, data, timing = result["config"], result.get("data") or {}, result.get("timing") or {}
    processes = timing.get("num_processes") or 1
    per_step = config["batch_size"] * config.get("grad_accum", 1) * processes
    batch = str(config["batch_size"])
    if per_step != config["batch_size"]:
        batch += f" x {config.get('grad_accum', 1)} accumulated x {processes} processes = {per_step} per step"
    train_examples = sum((data.get("train") or {}).values())
    steps = result.get("steps")
    return {
        "tasks": ", ".join(data.get("tasks") or config.get("tasks") or []),
        "training data": _data_source(config),
        "base model": base,
        "head": result.get("head"),
        "learning rate": config["lr"],
        "schedule": f"{config.get('lr_scheduler')}, warm-up {config.get('warmup_ratio', 0):.0%} of the steps",
        "batch size": batch,
        "sequence length (tokens)": config["max_length"],
        "steps": steps,
        "training examples": train_examples or None,
        "epochs (approx.)": round(steps * per_step / train_examples, 2) if train_examples and steps else None,
        "weight decay": config.get("weight_decay") or None,
        "seed": config.get("seed"),
        "precision": "bf16 autocast" if timing.get("mixed_precision") == "bf16" else "fp32",
        "train time (s)": timing.get("train_seconds"),
        "tokens / s": timing.get("tokens_per_second"),
    }


def _data_source(config: Dict[str, Any]) -> Optional[str]:
    """Own data by file or dataset name only (never its folder): 'data.csv (sentence -> topic)'."""
    if config.get("train_file"):
        files = [PurePath(config[key]).name for key in ("train_file", "validation_file", "test_file") if config.get(key)]
        source = " + ".join(f"`{name}`" for name in files)
    elif config.get("dataset"):
        dataset = config["dataset"]
        source = f"`{dataset}`" if is_hub_id(dataset) else f"a local dataset `{PurePath(dataset.rstrip('/')).name}`"
    else:
        return None
    target = config.get("label_column") or config.get("answer_column") or "label"
    return f"{source} (column `{config.get('text_column', 'text')}` -> `{target}`)"
