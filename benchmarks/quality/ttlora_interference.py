"""TT-LoRA MoE interference (arXiv 2504.21190's claim): add a new task's expert and show the old tasks'
scores do not move.

    python benchmarks/quality/ttlora_interference.py [--new-task sotu_era] [--out DIR]
    python benchmarks/quality/ttlora_interference.py --report-only --out DIR    # tables from saved records

The old MoE is the shipped zoo's: three frozen TT-LoRA experts (spam, fortune_topic, sotu_party) and their
router (zoo/smollm2-ttlora-moe-router). The experiment, with the zoo's own recipes and code:
1. train one TT-LoRA expert on the new task with the shipped experts' recipe (same base, targets, TT
   shape, steps, batch, length, lr, seed), scored on its whole test split;
2. train a new router over the four frozen experts with the shipped router's recipe (the old experts are
   reused exactly as shipped: stage 1 never runs again);
3. score the four-expert MoE on every task's whole test split and compare it, example by example, with the
   three-expert MoE on the old tasks (paired bootstrap interval and p-value of the difference).
Every stage is saved as it finishes (DIR/zoo/<entry>/record.json, weights beside it) and skipped on a
re-run, so an interrupted run resumes. DIR/INTERFERENCE.md and DIR/interference.json hold the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict

from talklora_hub.evaluation.intervals import paired_difference
from talklora_hub.zoo.recipes import get_recipe
from talklora_hub.zoo.shipped import default_zoo_dir, load_baselines, read_record, shipped_entries

RESULTS = Path(__file__).resolve().parent / "results" / "ttlora-interference"
OLD_ROUTER = "smollm2-ttlora-moe-router"


def entry_name(task: str) -> str:
    return f"smollm2-ttlora-{task.replace('_', '-')}"


def recipes(new_task: str):
    """The new expert's and the four-expert router's recipes: the shipped ones with the new task added."""
    old_router = get_recipe(OLD_ROUTER)
    template = get_recipe(entry_name(old_router.task_names[0]))
    expert = dataclasses.replace(template, name=entry_name(new_task), train={**template.train, "tasks": [new_task]},
                                 summary=f"SmolLM2-135M-Instruct + one TT-LoRA expert for {new_task} (added later)")
    router = dataclasses.replace(
        old_router, name=f"{OLD_ROUTER}-plus-{new_task.replace('_', '-')}",
        train={**old_router.train, "tasks": [*old_router.task_names, new_task]},
        experts=(*old_router.experts, expert.name), compare_with=(OLD_ROUTER,),
        summary=f"TT-LoRA MoE router over the shipped experts plus a {new_task} expert")
    return expert, router


def link_shipped(zoo: Path, shipped: Path, names) -> None:
    """The old experts and router, as shipped, inside this run's zoo folder (links: nothing is copied)."""
    zoo.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = zoo / name
        if not link.exists():
            link.symlink_to((shipped / name).resolve(), target_is_directory=True)


def run_stage(recipe, zoo: Path, runs: Path, baselines: Dict[str, Any]) -> None:
    from talklora_hub.zoo.retrain import ship, train_entry

    if recipe.name in shipped_entries(zoo):
        print(f"{recipe.name}: already done, skipped", file=sys.stderr)
        return
    result = train_entry(recipe, runs, zoo)
    ship(recipe, result, zoo, baselines)


def interference(zoo: Path, shipped: Path, new_task: str) -> Dict[str, Any]:
    """Per task: the three- and four-expert MoE's accuracy and router accuracy, and their paired difference."""
    _, router = recipes(new_task)
    old, new = read_record(shipped / OLD_ROUTER), read_record(zoo / router.name)
    rows = {}
    for task in router.task_names:
        after = new["metrics"][task]
        row = {"after": after["accuracy"], "after_low": after["low"], "after_high": after["high"], "n": after["n"],
               "router_after": new["moe"]["tasks"][task]["router_accuracy"],
               "expert_alone": new["moe"]["tasks"][task]["expert_alone"]}
        if task in old["metrics"]:
            before = old["metrics"][task]
            row.update(before=before["accuracy"], router_before=old["moe"]["tasks"][task]["router_accuracy"],
                       paired=paired_difference([c == "1" for c in after["hits"]], [c == "1" for c in before["hits"]]),
                       flipped=sum(a != b for a, b in zip(after["hits"], before["hits"])))
        rows[task] = row
    return {"new_task": new_task, "old_router": OLD_ROUTER, "new_router": router.name, "tasks": rows,
            "new_expert_parameters": read_record(zoo / entry_name(new_task))["parameters"],
            "machine": new.get("machine"), "timing": {"new_router": new.get("timing")}}


def markdown(result: Dict[str, Any]) -> str:
    lines = [f"# TT-LoRA MoE: adding a {result['new_task']} expert",
             "",
             f"Old MoE: `{result['old_router']}` (3 experts, shipped). New MoE: `{result['new_router']}` (the same three "
             f"frozen experts plus one trained on {result['new_task']}, and a router retrained over the four). Whole "
             "test splits; the difference is paired on the same examples (95% bootstrap interval).",
             "",
             "| task | MoE, 3 experts | MoE, 4 experts | difference [95% CI] | p | examples that flipped | router acc. 3 → 4 | expert alone |",
             "|---|---|---|---|---|---|---|---|"]
    for task, r in result["tasks"].items():
        if "before" in r:
            p = r["paired"]
            lines.append(f"| {task} | {r['before']:.3f} | {r['after']:.3f} | {p['difference']:+.3f} "
                         f"[{p['low']:+.3f}, {p['high']:+.3f}] | {p['p_value']:.2f} | {r['flipped']} of {r['n']} | "
                         f"{r['router_before']:.3f} → {r['router_after']:.3f} | {r['expert_alone']:.3f} |")
        else:
            lines.append(f"| {task} (new) | – | {r['after']:.3f} [{r['after_low']:.3f}, {r['after_high']:.3f}] | – | – | – | "
                         f"– → {r['router_after']:.3f} | {r['expert_alone']:.3f} |")
    machine = result.get("machine") or {}
    lines += ["", f"Machine: {machine.get('cpu')} ({machine.get('cores')} cores, {machine.get('torch_threads')} torch "
                  f"thread(s)), GPU: {machine.get('gpu')}; torch {machine.get('torch')}, transformers "
                  f"{machine.get('transformers')}. Command: `python benchmarks/quality/ttlora_interference.py "
                  f"--new-task {result['new_task']}`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-task", default="sotu_era")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--zoo", type=Path, default=None, help="the shipped zoo (default: the repository's zoo/)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    shipped = args.zoo or default_zoo_dir()
    expert, router = recipes(args.new_task)
    zoo = args.out / "zoo"
    if not args.report_only:
        link_shipped(zoo, shipped, [*get_recipe(OLD_ROUTER).experts, OLD_ROUTER])
        baselines = load_baselines(shipped)
        missing = [t for t in router.task_names if t not in baselines]
        if missing:
            raise SystemExit(f"the shipped baselines lack {missing}: run `talklora-hub zoo retrain` first")
        run_stage(expert, zoo, args.out / "runs", baselines)
        run_stage(router, zoo, args.out / "runs", baselines)
    result = interference(zoo, shipped, args.new_task)
    (args.out / "interference.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "INTERFERENCE.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
