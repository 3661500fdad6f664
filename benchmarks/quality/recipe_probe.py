"""Probe a change to a zoo recipe before retraining the zoo with it (issue 8: can a setting make an entry learn
a task it does not?).

    python benchmarks/quality/recipe_probe.py --entry smollm2-lora-mixture --max-length 160 --bf16 [--steps N] [--tasks a,b] [--lr LR]
        [--modules-to-save bert.pooler] [--method lora] [--seed S] [--out DIR]

Trains the shipped entry's recipe with only the given fields changed, under a new name
(<entry>[-only-<tasks>][-len<L>][-steps<N>][-lr<LR>][-train-<modules>][-<method>][-seed<S>]), scores it on the whole test splits exactly as `talklora-hub zoo retrain` does,
and writes DIR/zoo/<name>/record.json (weights beside it). The shipped zoo is never touched. A finished probe is
skipped on a re-run; an interrupted one resumes from its checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from talklora_hub.zoo.recipes import get_recipe
from talklora_hub.zoo.shipped import default_zoo_dir, load_baselines, shipped_entries

RESULTS = Path(__file__).resolve().parent / "results" / "recipe-probes"


def probe_recipe(entry: str, max_length=None, steps=None, bf16=False, tasks=None, lr=None, modules_to_save=None,
                 method=None, seed=None):
    """The shipped recipe with the given fields changed, named after what changed."""
    recipe = get_recipe(entry)
    changes, suffix = {}, ""
    if tasks:
        changes["tasks"], suffix = list(tasks), suffix + "-only-" + "-".join(t.replace("_", "-") for t in tasks)
    if max_length is not None:
        changes["max_length"], suffix = max_length, suffix + f"-len{max_length}"
    if steps is not None:
        changes["max_steps"], suffix = steps, suffix + f"-steps{steps}"
    if lr is not None:
        changes["lr"], suffix = lr, suffix + f"-lr{lr:g}"
    if modules_to_save:
        changes["modules_to_save"] = list(modules_to_save)
        suffix += "-train-" + "-".join(m.replace(".", "-") for m in modules_to_save)
    if method is not None:
        # The same budget with another method, at that method's own expert count (AdapterSettings' default for
        # num_experts=None: 4 for the mixtures, 1 for LoRA).
        changes["method"], changes["num_experts"], suffix = method, None, suffix + f"-{method}"
    if seed is not None:
        changes["seed"], suffix = seed, suffix + f"-seed{seed}"
    if bf16:
        changes["bf16"] = True  # a speed setting (autocast where native), not part of the name
    if not suffix:
        raise SystemExit("recipe_probe: change at least one of --tasks, --max-length, --steps, --lr, --modules-to-save, --method, --seed (else it is the shipped "
                         "recipe).")
    return dataclasses.replace(recipe, name=recipe.name + suffix, train={**recipe.train, **changes})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", required=True, help="a shipped zoo entry, e.g. smollm2-lora-mixture")
    parser.add_argument("--tasks", help="comma list: train on these of the entry's tasks only")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--modules-to-save", help="comma list of base modules that also train, e.g. bert.pooler")
    parser.add_argument("--method", choices=["lora", "moelora", "talklora", "ttlora"], help="the same budget, another method")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast where the hardware runs it natively")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    modules = [m.strip() for m in args.modules_to_save.split(",") if m.strip()] if args.modules_to_save else None
    recipe = probe_recipe(args.entry, args.max_length, args.steps, args.bf16, tasks, args.lr, modules, args.method,
                          args.seed)
    zoo = args.out / "zoo"
    if recipe.name not in shipped_entries(zoo):
        from talklora_hub.zoo.retrain import ship, train_entry

        ship(recipe, train_entry(recipe, args.out / "runs", zoo), zoo, load_baselines(default_zoo_dir()))
    print(zoo / recipe.name / "record.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
