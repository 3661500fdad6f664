"""The quality grid of issue 9: TalkLoRA vs MoELoRA vs LoRA (and ablations), measured at small scale.

    python benchmarks/quality/run_grid.py --base all-minilm-l6-v2 --tasks spam,sotu_era --seeds 0,1,2 \
        --steps 150 --max-length 64 --batch-size 16 --variants all [--lrs 1e-3,3e-3] [--out DIR]
    python benchmarks/quality/run_grid.py --quick          # tiny random BERT, synthetic tasks (CI, < 2 min)
    python benchmarks/quality/report.py DIR                 # DIR/REPORT.md and its plots

A cell is (variant, task, seed): one training run of talklora_hub.train.train on that task alone (every
variant shares base, targets, data, steps, lr, batch and max_length), then scoring on the WHOLE test split
(talklora_hub.evaluation.scoring.score: accuracy, Wilson 95% interval, per-example hits), and for routed variants
routing balance and routing stability on the first --routing-examples test examples (grid_measures).
Each cell is one JSON file, DIR/cells/<variant>__<task>__seed<seed>.json, written atomically when the cell
ends; a re-run skips finished cells, so an interrupted grid resumes where it stopped.

--lrs a,b,...: a learning-rate search. Each variant trains at every lr with seed 0 and is scored on each
task's validation split; the lr with the best mean validation accuracy over tasks is chosen for that
variant (DIR/lr_choice.json) and all seeds then run at it (the seed-0 search run at the chosen lr IS the
seed-0 cell: its test score was computed alongside, never used for the choice). Search runs are cells
too: DIR/lr_search/<variant>__<task>__lr<lr>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_measures import probe_batches, routing_figures, routing_over_training, routing_stability  # noqa: E402
from grid_variants import QUICK_VARIANTS, ROUTED, matched_lora_rank, select_variants, variant_fields  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Settings that define what a cell computes: a re-run into the same folder must keep them.
FIXED = ("base", "head", "steps", "max_length", "batch_size", "r", "lrs", "targets", "lora_dropout",
         "max_train_examples", "routing_examples", "sigmas", "modules_to_save")


@dataclasses.dataclass
class Grid:
    """One grid: its shared training settings, the cells' axes and where the cells go."""

    base: str                 # as given: a bootstrapped name, a folder, or "quick:<arch>"
    base_path: str            # the folder it resolves to
    head: str                 # "classification" or "causal" (resolved from the base)
    tasks: List[Any]          # task names or (name, DatasetDict) pairs
    variants: List[str]
    seeds: List[int]
    steps: int
    max_length: int
    batch_size: int
    r: int
    lrs: List[float]
    out: Path
    targets: Optional[List[str]] = None
    lora_dropout: float = 0.05
    max_train_examples: Optional[int] = None
    routing_examples: int = 128
    sigmas: List[float] = dataclasses.field(default_factory=lambda: [0.01, 0.05])
    modules_to_save: Optional[List[str]] = None  # base modules every variant trains too (e.g. BERT's pooler)
    matched: Optional[Dict[str, int]] = None  # lora-matched: {"rank", "lora_count", "talklora_count"}

    def shared_fields(self) -> Dict[str, Any]:
        """Adapter fields every variant shares besides targets and dropout."""
        return {"modules_to_save": list(self.modules_to_save)} if self.modules_to_save else {}

    @property
    def task_names(self) -> List[str]:
        return [t if isinstance(t, str) else t[0] for t in self.tasks]

    def settings(self) -> Dict[str, Any]:
        keys = FIXED + ("variants", "seeds")
        return {**{k: getattr(self, k) for k in keys}, "tasks": self.task_names, "lora_matched": self.matched}


# ---- files -------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Written to a temporary file beside it, then renamed: a killed run never leaves half a cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=1)
        stream.write("\n")
    os.replace(tmp, path)


def cell_path(out: Path, variant: str, task: str, seed: int) -> Path:
    return out / "cells" / f"{variant}__{task}__seed{seed}.json"


def search_path(out: Path, variant: str, task: str, lr: float) -> Path:
    return out / "lr_search" / f"{variant}__{task}__lr{lr:g}.json"


def check_grid_file(grid: Grid) -> None:
    """grid.json records the settings; a re-run into the same folder must not change what cells mean
    (more seeds, tasks or variants are fine: they are new cells)."""
    path = grid.out / "grid.json"
    settings = grid.settings()
    if path.is_file():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if k in FIXED and old.get(k) != v}
        if changed:
            raise SystemExit(f"--out {grid.out} holds a grid with other settings {changed} (old, new). Fix: keep "
                             "the settings, or pass another --out.")
        for axis in ("variants", "seeds", "tasks"):  # the folder holds the union of every run's cells
            settings[axis] = old.get(axis, []) + [x for x in settings[axis] if x not in old.get(axis, [])]
    write_json_atomic(path, settings)


# ---- one cell ----------------------------------------------------------------------------------
def _validation_record(model, tokenizer, task: str, task_item: Any, head: str, max_length: int) -> Dict[str, Any]:
    """The cell's accuracy on the whole validation split, in the record shape the lr search reads
    ({value, low, high, correct, n}), scored by the same evaluation.scoring.score as the test split."""
    from talklora_hub.evaluation.scoring import score

    try:
        scored = score(model, tokenizer, [task_item], head, max_length, progress=False, split="validation")[task]
    except ValueError as error:
        raise SystemExit(f"{error} The lr search needs a validation split: pass one --lr value (no search) "
                         "instead.") from error
    return {"value": scored["accuracy"], **{k: scored[k] for k in ("low", "high", "correct", "n")}}


def run_cell(grid: Grid, variant: str, task_item: Any, seed: int, lr: float, validation: bool = False) -> Dict[str, Any]:
    """Trains one cell and measures it; returns its JSON-able record (hits: one 0/1 per test example)."""
    from talklora_hub.train import TrainConfig, train
    from talklora_hub.evaluation.scoring import score

    task = task_item if isinstance(task_item, str) else task_item[0]
    fields = {**variant_fields(variant, grid.r, grid.matched["rank"] if grid.matched else None), **grid.shared_fields()}
    cfg = TrainConfig(base=grid.base_path, tasks=[task_item], head=grid.head, target_modules=grid.targets,
                      lora_dropout=grid.lora_dropout, lr=lr, max_steps=grid.steps, batch_size=grid.batch_size,
                      max_length=grid.max_length, seed=seed, max_train_examples=grid.max_train_examples,
                      max_eval_examples=0, log_every=max(1, grid.steps // 30), progress=False, **fields)
    clock = [time.perf_counter()]
    result = train(cfg)
    clock.append(time.perf_counter())
    model, tokenizer = result.model, result.tokenizer
    scored = score(model, tokenizer, [task_item], result.head, grid.max_length, progress=False)[task]
    scored["hits"] = [int(h) for h in scored["hits"]]
    clock.append(time.perf_counter())
    record: Dict[str, Any] = {
        "variant": variant, "task": task, "seed": seed, "lr": lr, "fields": fields,
        "adapter_settings": result.adapter_settings, "parameter_counts": result.parameter_counts,
        "test": scored, "losses": [{k: r[k] for k in ("step", "loss", "lr") if k in r} for r in result.losses],
        "routing_train": result.routing or None,
        "routing_over_training": routing_over_training(result.losses),
        "routing_over_training_note": ("window summaries of the training log (every log_every steps): overall "
                                       "normalised per-token entropy, load CV, max share, dead experts"),
        "train_timing": result.timing}
    if validation:
        record["validation"] = _validation_record(model, tokenizer, task, task_item, result.head, grid.max_length)
    if variant in ROUTED:
        batches = probe_batches(model, tokenizer, task_item, result.head, grid.max_length, grid.routing_examples)
        record["routing_test"] = routing_figures(model, batches)
        record["stability"] = routing_stability(model, batches, grid.sigmas, seed=seed)
    clock.append(time.perf_counter())
    # train: the train() call (model loading included); score: the whole test split; measures: the
    # validation split, routing and stability probes.
    record["seconds"] = {"train": round(clock[1] - clock[0], 3), "score": round(clock[2] - clock[1], 3),
                         "measures": round(clock[3] - clock[2], 3), "total": round(clock[3] - clock[0], 3)}
    del result, model
    gc.collect()
    return record


# ---- the grid ----------------------------------------------------------------------------------
def choose_lrs(grid: Grid) -> Dict[str, Dict[str, Any]]:
    """{variant: {"lr", "validation": {lr: mean validation accuracy over tasks}}} from the search cells."""
    choice = {}
    for variant in grid.variants:
        means = {}
        for lr in grid.lrs:
            accs = [json.loads(search_path(grid.out, variant, t, lr).read_text())["validation"]["value"]
                    for t in grid.task_names]
            means[f"{lr:g}"] = sum(accs) / len(accs)
        best = max(grid.lrs, key=lambda lr: means[f"{lr:g}"])  # ties: the first in --lrs order
        choice[variant] = {"lr": best, "validation": means}
    return choice


SEARCH_POLL_SECONDS = 20.0


def wait_for_search(grid: Grid) -> None:
    """A shard waits until the other shards have written every lr-search cell (the choice needs them all)."""
    missing = [search_path(grid.out, v, t, lr) for v in grid.variants for t in grid.task_names for lr in grid.lrs]
    while any(not path.is_file() for path in missing):
        time.sleep(SEARCH_POLL_SECONDS)


def run_grid(grid: Grid, progress: bool = True, shard: Sequence[int] = (0, 1)) -> Dict[str, Any]:
    """Runs every missing cell (lr search first when there are several lrs); returns what it did.

    shard (k, n): this process runs the k-th of every n cells, so n processes share one folder (each
    cell is still one atomic file); after the search each shard waits for the others' search cells."""
    from tqdm.auto import tqdm

    check_grid_file(grid)
    k, n = shard
    search = [(v, t, lr) for v in grid.variants for t in grid.tasks for lr in grid.lrs] if len(grid.lrs) > 1 else []
    # Seed-major: a grid stopped part-way leaves whole seeds (every variant on every task), so a partial
    # grid still compares the variants on equal terms.
    main = [(v, t, s) for s in grid.seeds for t in grid.tasks for v in grid.variants]
    search, main = search[k::n], main[k::n]
    name = lambda t: t if isinstance(t, str) else t[0]  # noqa: E731
    done = {"trained": 0, "skipped": 0, "reused": 0}
    bar = tqdm(total=len(search) + len(main), desc="grid", unit="cell", disable=not progress, dynamic_ncols=True)
    for variant, task, lr in search:
        path = search_path(grid.out, variant, name(task), lr)
        bar.set_postfix_str(f"lr search {variant} {name(task)} lr={lr:g}")
        if path.is_file():
            done["skipped"] += 1
        else:
            write_json_atomic(path, run_cell(grid, variant, task, 0, lr, validation=True))
            done["trained"] += 1
        bar.update(1)
    if len(grid.lrs) > 1:
        if n > 1:
            bar.set_postfix_str("waiting for the other shards' lr search")
            wait_for_search(grid)
        chosen = choose_lrs(grid)
        write_json_atomic(grid.out / "lr_choice.json", chosen)
    else:
        chosen = {v: {"lr": grid.lrs[0], "validation": None} for v in grid.variants}
    for variant, task, seed in main:
        path = cell_path(grid.out, variant, name(task), seed)
        lr = chosen[variant]["lr"]
        bar.set_postfix_str(f"{variant} {name(task)} seed {seed}")
        if path.is_file():
            done["skipped"] += 1
        elif len(grid.lrs) > 1 and seed == 0:  # the search already trained exactly this run
            record = json.loads(search_path(grid.out, variant, name(task), lr).read_text())
            record["lr_source"] = "search"
            write_json_atomic(path, record)
            done["reused"] += 1
        else:
            record = run_cell(grid, variant, task, seed, lr)
            record["lr_source"] = "search" if len(grid.lrs) > 1 else "fixed"
            write_json_atomic(path, record)
            done["trained"] += 1
        bar.update(1)
    bar.close()
    return {**done, "out": str(grid.out), "lr_choice": chosen}


# ---- command line ------------------------------------------------------------------------------
QUICK = dict(steps=80, max_length=32, batch_size=8, r=8, lrs="2e-2", seeds="0", routing_examples=64)
FULL = dict(steps=150, max_length=64, batch_size=16, r=32, lrs="1e-3", seeds="0,1,2", routing_examples=128)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="folder or bootstrapped name (all-minilm-l6-v2, smollm2-135m-instruct)")
    p.add_argument("--tasks", help="comma-separated task names, e.g. spam,sotu_era")
    p.add_argument("--variants", help="'all' or a comma-separated list (default: all; --quick: lora,talklora)")
    p.add_argument("--seeds", help=f"comma-separated (default {FULL['seeds']})")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--r", type=int, help=f"the shared rank (default {FULL['r']}; lora-matched finds its own)")
    p.add_argument("--lr", help="one learning rate (no search)")
    p.add_argument("--lrs", help="several: a search on the validation split with seed 0, e.g. 1e-3,3e-3")
    p.add_argument("--targets", help="comma-separated target modules (default: the architecture's)")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--modules-to-save", help="comma list of base modules every variant trains too, e.g. bert.pooler")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--routing-examples", type=int, help="test examples probed for routing and stability (128)")
    p.add_argument("--sigmas", default="0.01,0.05", help="embedding noise levels of the stability measure")
    p.add_argument("--out", help="results folder (default benchmarks/quality/results/<grid name>)")
    p.add_argument("--quick", action="store_true", help="tiny random base + synthetic tasks (CI smoke run)")
    p.add_argument("--quick-arch", choices=["bert", "llama"], default="bert")
    p.add_argument("--report", action="store_true", help="write REPORT.md at the end (always with --quick)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; --quick: 1, as tiny "
                   "models only lose to thread hand-offs on a busy machine)")
    p.add_argument("--dry-run", action="store_true", help="print the grid (settings, matched rank, cells to run) "
                   "and stop")
    p.add_argument("--shard", default="0/1", help="K/N: run the K-th of every N cells, so N processes share one "
                   "--out folder (e.g. 0/2 and 1/2 on two cores, each with --threads 1)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _floats(text: str) -> List[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_shard(text: str) -> tuple:
    """'K/N' -> (K, N) with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise SystemExit(f"--shard: must be K/N with 0 <= K < N (e.g. 0/2); got {text!r}. Fix: pass 0/2 to one "
                         "process and 1/2 to the other.")
    return k, n


def grid_from_args(args: argparse.Namespace, scratch: Path) -> Grid:
    from talklora_hub.train.trainer import resolve_base, resolve_head

    defaults = QUICK if args.quick else FULL
    pick = lambda key, value: defaults[key] if value is None else value  # noqa: E731
    if args.quick:
        from grid_quick import quick_base, quick_tasks

        base = f"quick:{args.quick_arch}"
        base_path = quick_base(scratch / "base", args.quick_arch)
        tasks: List[Any] = quick_tasks()
        variants = select_variants(args.variants) if args.variants else list(QUICK_VARIANTS)
    else:
        if not args.base or not args.tasks:
            raise SystemExit("--base and --tasks are required (or --quick).")
        base, base_path = args.base, resolve_base(args.base)
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        variants = select_variants(args.variants or "all")
    lrs = _floats(args.lrs or args.lr or defaults["lrs"])
    steps, max_length = pick("steps", args.steps), pick("max_length", args.max_length)
    modules = [m.strip() for m in args.modules_to_save.split(",") if m.strip()] if args.modules_to_save else None
    name = "quick-" + args.quick_arch if args.quick else f"{Path(base).name}-{steps}steps-len{max_length}"
    if modules:
        name += "-train-" + "-".join(m.replace(".", "-") for m in modules)
    grid = Grid(base=base, base_path=base_path, head=resolve_head("auto", base_path), tasks=tasks, variants=variants,
                seeds=[int(s) for s in pick("seeds", args.seeds).split(",")], steps=steps, max_length=max_length,
                batch_size=pick("batch_size", args.batch_size), r=pick("r", args.r), lrs=lrs,
                out=Path(args.out) if args.out else RESULTS / name,
                targets=[t.strip() for t in args.targets.split(",")] if args.targets else None,
                lora_dropout=args.lora_dropout, max_train_examples=args.max_train_examples,
                routing_examples=pick("routing_examples", args.routing_examples), sigmas=_floats(args.sigmas),
                modules_to_save=modules)
    if "lora-matched" in variants:
        rank, lora_count, talk_count = matched_lora_rank(base_path, grid.head, grid.r, grid.targets, grid.lora_dropout,
                                                         shared=grid.shared_fields())
        grid.matched = {"rank": rank, "lora_count": lora_count, "talklora_count": talk_count}
    return grid


def dry_run(grid: Grid) -> Dict[str, Any]:
    """What run_grid would do, without training: the settings and the cells not yet in the folder."""
    cells = [cell_path(grid.out, v, t, s) for v in grid.variants for t in grid.task_names for s in grid.seeds]
    search = ([search_path(grid.out, v, t, lr) for v in grid.variants for t in grid.task_names for lr in grid.lrs]
              if len(grid.lrs) > 1 else [])
    summary = {"settings": grid.settings(), "out": str(grid.out), "cells": len(cells),
               "cells_missing": sum(not p.is_file() for p in cells), "lr_search_runs": len(search),
               "lr_search_missing": sum(not p.is_file() for p in search)}
    print(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    import torch

    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    threads = args.threads or (1 if args.quick else None)
    try:
        if threads:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="quality-grid-") as scratch:
            grid = grid_from_args(args, Path(scratch))
            if args.dry_run:
                return dry_run(grid)
            started = time.perf_counter()
            summary = run_grid(grid, progress=not args.no_progress, shard=parse_shard(args.shard))
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside a longer process (the tests)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: summary[k] for k in ("trained", "reused", "skipped", "seconds", "out")}))
    if args.report or args.quick:
        from report import write_report

        print(f"report: {write_report(grid.out)}")
    return summary


if __name__ == "__main__":
    main()
