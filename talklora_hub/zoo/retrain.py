"""`talklora-hub zoo retrain`: train, score and ship every zoo entry from its recipe.

Each entry trains under runs/zoo/<entry>/ with checkpoints (an interrupted retrain resumes exactly where it
stopped; a finished run is not trained again), then its adapter is rounded to bf16, scored on its tasks'
whole test splits, compared with the baselines and written to zoo/<entry>/ at once, so what finished is
never lost. The task baselines are computed once into zoo/baselines.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from tqdm.auto import tqdm

from .recipes import RECIPES, ZooRecipe, get_recipe, train_command_line
from .shipped import (BASELINES, UNPUBLISHED, default_zoo_dir, hits_string, load_baselines, machine, round_adapter_to_bf16,
                      shipped_entries, write_entry)

EVAL_BATCH = 16


def _say(message: str) -> None:
    tqdm.write(f"[zoo] {message}")


def compute_baselines(zoo_dir: Path, tasks: Iterable[str], bases: Dict[str, str], progress: bool = True) -> Dict[str, Any]:
    """zoo/baselines.json: per task, majority class, TF-IDF + LR (full training split and 400 examples) and
    the zero-shot base of each base model that has entries on the task; only missing figures are computed."""

    from ..data.base_models import base_model_path
    from ..evaluation import baselines as bl

    found = load_baselines(zoo_dir)
    for task in tasks:
        row = found.setdefault(task, {})
        if "majority" not in row:
            row["majority"] = bl.majority(task).to_dict()
        if "tfidf_lr" not in row:
            row["tfidf_lr"] = bl.tfidf_lr(task).to_dict()
            row["tfidf_lr_400"] = bl.tfidf_lr(task, max_train_examples=400).to_dict()
        zero = row.setdefault("zero_shot", {})
        for base, max_length in bases.items():
            if base in zero:
                continue
            _say(f"zero-shot {base} on {task}")
            if base == "all-minilm-l6-v2":
                zero[base] = bl.zero_shot_encoder(task, str(base_model_path(base))).to_dict()
            else:
                zero[base] = bl.zero_shot_lm(task, str(base_model_path(base)), max_length=max_length).to_dict()
        found = _merge_baselines(zoo_dir, found)
    return found


def _merge_baselines(zoo_dir: Path, found: Dict[str, Any]) -> Dict[str, Any]:
    """Writes baselines.json atomically, merged with what another retrain process wrote meanwhile."""
    import json
    import os

    from filelock import FileLock

    zoo_dir.mkdir(parents=True, exist_ok=True)
    path = zoo_dir / BASELINES
    with FileLock(str(path) + ".lock"):
        merged = load_baselines(zoo_dir)
        for task, row in found.items():
            into = merged.setdefault(task, {})
            for key, value in row.items():
                if isinstance(value, dict) and key in ("zero_shot", "peft_lora"):
                    into.setdefault(key, {}).update(value)
                else:
                    into.setdefault(key, value)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return merged


def peft_baseline(recipe_name: str, zoo_dir: Optional[Path] = None, progress: bool = True) -> Dict[str, Any]:
    """PEFT LoRA trained with a (causal LM) zoo recipe's budget, scored on the same test splits, stored in
    zoo/baselines.json under each task's "peft_lora" by base name."""
    from ..evaluation.peft_lora import train_peft_lora
    from ..evaluation.scoring import score

    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    recipe = get_recipe(recipe_name)
    model, tokenizer, info = train_peft_lora(recipe.train, progress)
    scored = score(model, tokenizer, recipe.tasks, "causal", recipe.train["max_length"], EVAL_BATCH, progress=progress)
    found: Dict[str, Any] = {}
    for task, m in scored.items():
        found[task] = {"peft_lora": {recipe.base: {"value": m["accuracy"], "low": m["low"], "high": m["high"],
                                                   "correct": m["correct"], "n": m["n"], "hits": hits_string(m["hits"]),
                                                   "details": {**info, "recipe": recipe.name}}}}
        _say(f"PEFT LoRA ({recipe.name}'s budget) {task}: {m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}]")
    return _merge_baselines(zoo_dir, found)


def comparison(metrics: Dict[str, Any], baselines: Dict[str, Any], base: str) -> Dict[str, Any]:
    """Per task: the entry's accuracy minus each baseline's, and whether the entry's interval lies above it."""
    out = {}
    for task, m in metrics.items():
        row = baselines.get(task, {})
        against = {"majority class": row.get("majority"), "zero-shot base": row.get("zero_shot", {}).get(base),
                   "TF-IDF + LR": row.get("tfidf_lr"), "PEFT LoRA, same budget": row.get("peft_lora", {}).get(base)}
        out[task] = {name: {"accuracy": b["value"], "low": b["low"], "high": b["high"],
                            "margin": m["accuracy"] - b["value"], "above_interval": m["low"] > b["high"],
                            "below_interval": m["high"] < b["low"]}
                     for name, b in against.items() if b}
    return out


def ship(recipe: ZooRecipe, result, zoo_dir: Path, baselines: Dict[str, Any], progress: bool = True) -> Path:
    """Rounds the trained adapter to bf16, scores it on the whole test splits and writes zoo/<entry>/."""
    from ..evaluation.scoring import score

    model = result.model
    round_adapter_to_bf16(model)  # a router stage trains only the router: that is what gets rounded
    started = time.perf_counter()
    scored = score(model, result.tokenizer, recipe.tasks, result.head, recipe.train["max_length"], EVAL_BATCH,
                   progress=progress)
    eval_seconds = time.perf_counter() - started
    metrics = {task: {**{k: v for k, v in m.items() if k != "hits"}, "hits": hits_string(m["hits"])}
               for task, m in scored.items()}
    losses = result.losses or []
    record = {
        "name": recipe.name, "kind": recipe.kind, "summary": recipe.summary, "recipe": {**recipe.train, "tasks": list(recipe.task_names)},
        "command": recipe.command(), "train_command": train_command_line(recipe),
        "base": {"name": recipe.base}, "head": result.head, "tasks": list(recipe.task_names),
        "steps": result.steps, "seed": recipe.train["seed"],
        "timing": {**(result.timing or {}), "eval_seconds": round(eval_seconds, 1)},
        "machine": machine(), "parameters": result.parameter_counts, "adapter": result.adapter_settings,
        "losses": {"first": losses[:3], "last": losses[-3:]}, "routing": result.routing,
        "metrics": metrics, "split": "test",
        "comparison": comparison(metrics, baselines, recipe.base),
        "weights": "bf16 (the figures above are measured on these bf16 weights)",
    }
    router_experts = None
    if recipe.kind == "router":
        record["moe"] = moe_report(recipe, model, result.tokenizer, zoo_dir, scored, progress)
        record["experts"] = list(recipe.experts)
        router_experts = [{"repo_id": e, "revision": UNPUBLISHED, "task": t}
                          for e, t in zip(recipe.experts, recipe.task_names)]
    folder = write_entry(zoo_dir / recipe.name, model, record, "+".join(recipe.task_names), router_experts)
    for task, m in metrics.items():
        _say(f"{recipe.name} {task}: {m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}] (n={m['n']})")
    return folder


def train_entry(recipe: ZooRecipe, runs_dir: Path, zoo_dir: Path, progress: bool = True):
    from ..train import TrainConfig, train
    from .shipped import attach_shipped

    extra = {}
    if recipe.kind == "router":
        missing = [e for e in recipe.experts if e not in shipped_entries(zoo_dir)]
        if missing:
            raise FileNotFoundError(f"the router {recipe.name} needs its experts {missing} shipped first. Fix: "
                                    f"`talklora-hub zoo retrain --only {' '.join(missing)}`.")
        extra["ttlora_experts"] = [attach_shipped(zoo_dir / e) for e in recipe.experts]
    config = TrainConfig(**recipe.train, **extra, output=str(runs_dir / recipe.name), resume=True,
                         max_eval_examples=0, progress=progress)
    _drop_stale_run(config)
    return train(config)


def _drop_stale_run(config) -> None:
    """A run folder left by an earlier version of the recipe cannot be resumed: set it aside, start afresh."""
    import json
    import shutil

    from ..train import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(config.output)
    if latest is None:
        return
    state = json.loads((latest / "trainer_state.json").read_text())
    if state.get("fingerprint") != config.fingerprint():
        stale = Path(config.output).with_name(Path(config.output).name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        Path(config.output).rename(stale)
        _say(f"{config.output} was trained with another recipe: moved to {stale}, training afresh")


def moe_report(recipe: ZooRecipe, model, tokenizer, zoo_dir: Path, scored: Dict[str, Any], progress: bool) -> Dict[str, Any]:
    """A router entry's extra figures on the whole test splits: the router's task accuracy and confusion
    matrix, the MoE with each task's own expert forced (oracle routing), and beside them each expert
    alone (its own entry) and the entries in compare_with (the multi-task LoRA)."""
    from ..evaluation.scoring import test_rows
    from ..train.evaluate import predict_labels, router_accuracy
    from .shipped import read_record

    data, per_task = test_rows(recipe.tasks, "causal")
    rows = [r for name in data.names for r in per_task[name]]
    router = router_accuracy(model, tokenizer, rows, data.names, recipe.train["max_length"], EVAL_BATCH)
    oracle = {}
    for index, task in enumerate(data.names):  # expert e is task e's (the stage-1 order)
        task_rows = per_task[task]
        predictions = predict_labels(model, tokenizer, data, task, task_rows, "causal", recipe.train["max_length"],
                                     EVAL_BATCH, forced_expert=index)
        oracle[task] = sum(p == int(r["label"]) for p, r in zip(predictions, task_rows)) / len(task_rows)
    per_task_rows = {}
    for index, task in enumerate(data.names):
        expert = read_record(zoo_dir / recipe.experts[index])["metrics"][task]
        row = {"moe": scored[task]["accuracy"], "moe_oracle_routing": oracle[task], "expert_alone": expert["accuracy"],
               "router_accuracy": router["per_task"][task]}
        for other in recipe.compare_with:
            if (zoo_dir / other).is_dir():
                row[other] = read_record(zoo_dir / other)["metrics"].get(task, {}).get("accuracy")
        per_task_rows[task] = row
    return {"router": router, "tasks": per_task_rows}


def retrain(only: Optional[Iterable[str]] = None, zoo_dir: Optional[Path] = None, runs_dir: Path = Path("runs/zoo"),
            force: bool = False, progress: bool = True) -> Dict[str, Path]:
    """Trains (or resumes), scores and ships the selected entries (all by default); entries already in
    zoo/ are skipped unless force. Returns {entry: folder}."""
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    recipes = [get_recipe(n) for n in only] if only else list(RECIPES)
    done = shipped_entries(zoo_dir)
    todo = [r for r in recipes if force or r.name not in done]
    tasks = sorted({t for r in recipes for t in r.task_names})
    bases = {}
    for r in recipes:
        bases[r.base] = max(bases.get(r.base, 0), r.train["max_length"])
    baselines = compute_baselines(zoo_dir, tasks, bases, progress)
    out = {}
    for recipe in tqdm(todo, desc="zoo retrain", unit="entry", disable=not progress):
        _say(f"training {recipe.name}: {recipe.summary}")
        result = train_entry(recipe, Path(runs_dir), zoo_dir, progress)
        out[recipe.name] = ship(recipe, result, zoo_dir, baselines, progress)
    return out
