"""Should a zoo recipe move to another learning rate? A paired test on the validation split, never on test.

For each entry: its recipe at the recipe's own rate and at each candidate rate, every other field as the
recipe says, the adapter rounded to bf16 as the zoo ships it, scored per example on the task's whole
validation split. The recipe's own rate at the recipe's own seed is the shipped entry itself (zoo/<entry>),
not a retrain. The verdict pools the per-example hits over seeds and takes the paired bootstrap of
candidate − recipe: the zoo adopts a candidate only where that difference's 95% interval lies above 0.

    python benchmarks/quality/zoo_lr_check.py --entries minilm-talklora-spam,minilm-talklora-fortune-topic \
        --lrs 3e-3 --seeds 0 --out docs/zoo-lr-check --threads 1

Each (entry, rate, seed) is a cell written to OUT/cells/ as it finishes (a re-run skips what is there); OUT/REPORT.md
is rewritten from the cells at the end (`--report-only` rewrites it without training).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List

EVAL_BATCH = 16


def cell_path(out: Path, entry: str, lr: float, seed: int) -> Path:
    return out / "cells" / f"{entry}__lr{lr:g}__seed{seed}.json"


def shipped_model(entry: str):
    """(model, tokenizer, head) of the shipped entry: its adapter attached to its offline base."""
    from transformers import AutoTokenizer

    from talklora_hub.data.base_models import base_model_path
    from talklora_hub.zoo.shipped import attach_shipped, default_zoo_dir, read_record

    folder = default_zoo_dir() / entry
    record = read_record(folder)
    return (attach_shipped(folder), AutoTokenizer.from_pretrained(base_model_path(record["base"]["name"])),
            record["head"])


def trained_model(recipe, lr: float, seed: int, runs: Path, progress: bool):
    """(model, tokenizer, head, losses) of the recipe trained at `lr` and `seed`, rounded to bf16 as shipped."""
    from talklora_hub.train import TrainConfig, train
    from talklora_hub.zoo.shipped import round_adapter_to_bf16

    fields = {**recipe.train, "lr": lr, "seed": seed}
    config = TrainConfig(**fields, output=str(runs / f"{recipe.name}__lr{lr:g}__seed{seed}"), resume=True,
                         max_eval_examples=0, progress=progress)
    result = train(config)
    round_adapter_to_bf16(result.model)
    return result.model, result.tokenizer, result.head, result.losses or []


def run_cell(entry: str, lr: float, seed: int, out: Path, runs: Path, progress: bool) -> Dict[str, Any]:
    from talklora_hub.evaluation.scoring import score
    from talklora_hub.zoo.recipes import get_recipe

    recipe = get_recipe(entry)
    started = time.perf_counter()
    shipped = lr == recipe.train["lr"] and seed == recipe.train["seed"]
    if shipped:
        model, tokenizer, head = shipped_model(entry)
        losses: List[float] = []
    else:
        model, tokenizer, head, losses = trained_model(recipe, lr, seed, runs, progress)
    trained = time.perf_counter()
    scores = score(model, tokenizer, recipe.tasks, head, recipe.train["max_length"], EVAL_BATCH, progress=False,
                   split="validation")
    cell = {"entry": entry, "lr": lr, "seed": seed, "source": "shipped entry" if shipped else "retrained",
            "recipe_lr": recipe.train["lr"], "split": "validation", "scores": scores,
            "losses_last": losses[-3:], "seconds": {"train": round(trained - started, 1),
                                                     "score": round(time.perf_counter() - trained, 1)}}
    path = cell_path(out, entry, lr, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell) + "\n")
    os.replace(tmp, path)
    return cell


def verdicts(out: Path) -> List[Dict[str, Any]]:
    """One row per (entry, task, candidate rate): pooled hits over the seeds both rates have."""
    from talklora_hub.evaluation.intervals import paired_difference

    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    rows = []
    for entry in sorted({c["entry"] for c in cells}):
        mine = [c for c in cells if c["entry"] == entry]
        recipe_lr = mine[0]["recipe_lr"]
        base = {c["seed"]: c for c in mine if c["lr"] == recipe_lr}
        for lr in sorted({c["lr"] for c in mine if c["lr"] != recipe_lr}):
            cand = {c["seed"]: c for c in mine if c["lr"] == lr}
            seeds = sorted(set(base) & set(cand))
            if not seeds:
                continue
            for task in base[seeds[0]]["scores"]:
                hits_a = [h for s in seeds for h in cand[s]["scores"][task]["hits"]]
                hits_b = [h for s in seeds for h in base[s]["scores"][task]["hits"]]
                d = paired_difference(hits_a, hits_b)
                rows.append({"entry": entry, "task": task, "recipe_lr": recipe_lr, "lr": lr, "seeds": seeds,
                             "recipe_acc": sum(hits_b) / len(hits_b), "acc": sum(hits_a) / len(hits_a), **d,
                             "adopt": d["low"] > 0})
    return rows


def _p(value: float) -> str:
    """A bootstrap p-value: 0 of 2000 resamples on the other side reads as p < 0.001."""
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def report(out: Path, command: str) -> str:
    lines = ["# Zoo learning-rate check (validation split, paired)", "",
             "Each candidate rate against the recipe's own, every other recipe field unchanged, adapters rounded to "
             "bf16 as shipped, scored per example on the whole validation split (test is never used to choose). "
             "The recipe's own rate at seed 0 is the shipped entry itself. Pooled over the seeds both rates have; "
             "paired bootstrap, 2000 resamples. Rule: adopt only where the interval of candidate − recipe lies above 0.",
             "", f"Command: `{command}`", "",
             "| entry | task | recipe lr → candidate | seeds | recipe | candidate | difference [95%] | p | n | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in verdicts(out):
        lines.append(f"| {r['entry']} | {r['task']} | {r['recipe_lr']:g} → {r['lr']:g} | {','.join(map(str, r['seeds']))} "
                     f"| {r['recipe_acc']:.3f} | {r['acc']:.3f} | {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] "
                     f"| {_p(r['p_value'])} | {r['n']} | {'adopt' if r['adopt'] else 'keep the recipe'} |")
    text = "\n".join(lines) + "\n"
    (out / "REPORT.md").write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", default="minilm-talklora-spam,minilm-talklora-fortune-topic",
                   help="comma-separated zoo entry names (see `talklora-hub zoo recipes`)")
    p.add_argument("--lrs", default="3e-3", help="candidate rates, comma-separated (the recipe's own is added)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--out", default="docs/zoo-lr-check")
    p.add_argument("--runs", default="runs/zoo-lr-check", help="training folders (checkpoints, resumable)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    command = "python benchmarks/quality/zoo_lr_check.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("entries", args.entries), ("lrs", args.lrs), ("seeds", args.seeds),
                                                    ("out", args.out)))
    if not args.report_only:
        from talklora_hub.zoo.recipes import get_recipe

        for entry in args.entries.split(","):
            recipe = get_recipe(entry)
            for lr in [float(recipe.train["lr"])] + [float(x) for x in args.lrs.split(",")]:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    if cell_path(out, entry, lr, seed).is_file():
                        continue
                    cell = run_cell(entry, lr, seed, out, Path(args.runs), not args.no_progress)
                    accs = ", ".join(f"{t} {s['accuracy']:.3f}" for t, s in cell["scores"].items())
                    print(f"[zoo-lr] {entry} lr {lr:g} seed {seed}: validation {accs} ({cell['seconds']})", flush=True)
    print(report(out, command))


if __name__ == "__main__":
    main()
