"""More seeds of the zoo's SmolLM2 mixture models (issue 9: at least two seeds on the causal LM).

    python benchmarks/quality/mixture_seeds.py --seeds 1 [--methods talklora,lora,moelora] [--out DIR]
    python benchmarks/quality/mixture_seeds.py --report-only [--out DIR]

Seed 0 of each mixture is the shipped zoo entry (zoo/smollm2-<method>-mixture). Every other seed retrains
that entry's recipe unchanged but for the seed (which sets the adapter's initialisation and the data order),
and is scored on the same whole test splits: DIR/zoo/smollm2-<method>-mixture-seed<s>/record.json. A
finished seed is skipped on a re-run. The report (DIR/SEEDS.md, DIR/seeds.json, DIR/seeds.png) gives per method and task the
mean ± std over seeds, and the paired differences between methods pooled over seeds and tasks (pairs are
(seed, test example): both methods trained with the same seed and scored on the same example).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

from talklora_hub.evaluation.intervals import paired_difference
from talklora_hub.zoo.recipes import get_recipe
from talklora_hub.zoo.shipped import RECORD, default_zoo_dir, load_baselines, read_record, shipped_entries

RESULTS = Path(__file__).resolve().parent / "results" / "mixture-seeds"
METHODS = ("talklora", "lora", "moelora")
PAIRS = (("talklora", "lora"), ("talklora", "moelora"), ("moelora", "lora"))


def seed_recipe(method: str, seed: int):
    shipped = get_recipe(f"smollm2-{method}-mixture")
    if seed == shipped.train["seed"]:
        return shipped
    return dataclasses.replace(shipped, name=f"{shipped.name}-seed{seed}", train={**shipped.train, "seed": seed})


def records(out: Path, shipped: Path) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """{method: {seed: record}} over the shipped seed and every finished extra seed."""
    found: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for method in METHODS:
        for folder in [shipped / f"smollm2-{method}-mixture", *sorted((out / "zoo").glob(f"smollm2-{method}-mixture-seed*"))]:
            if (folder / RECORD).is_file():  # the report needs the record only, not the weights
                record = read_record(folder)
                found.setdefault(method, {})[int(record["seed"])] = record
    return found


def summary(found: Dict[str, Dict[int, Dict[str, Any]]]) -> Dict[str, Any]:
    per_method = {}
    for method, seeds in found.items():
        tasks = next(iter(seeds.values()))["tasks"]
        per_method[method] = {"seeds": sorted(seeds), "tasks": {},
                              "machines": {s: (seeds[s].get("machine") or {}).get("cpu") for s in sorted(seeds)}}
        for task in tasks + ["mean"]:
            values = [statistics.mean(r["metrics"][t]["accuracy"] for t in tasks) if task == "mean"
                      else r["metrics"][task]["accuracy"] for r in seeds.values()]
            per_method[method]["tasks"][task] = {"mean": statistics.mean(values),
                                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                                 "values": values}
    paired = {}
    for a, b in PAIRS:
        if a not in found or b not in found:
            continue
        common = sorted(set(found[a]) & set(found[b]))
        hits_a: List[bool] = []
        hits_b: List[bool] = []
        for seed in common:
            for task in found[a][seed]["tasks"]:
                hits_a += [c == "1" for c in found[a][seed]["metrics"][task]["hits"]]
                hits_b += [c == "1" for c in found[b][seed]["metrics"][task]["hits"]]
        paired[f"{a} - {b}"] = {**paired_difference(hits_a, hits_b), "seeds": common}
    return {"methods": per_method, "paired": paired}


def markdown(result: Dict[str, Any]) -> str:
    methods = result["methods"]
    tasks = list(next(iter(methods.values()))["tasks"])
    lines = ["# SmolLM2-135M mixture models over seeds",
             "",
             "Each seed trains the zoo recipe unchanged but for the seed; whole test splits. Mean ± std over seeds "
             "(the std of a single seed is 0).", "",
             "| method | seeds | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for method, row in methods.items():
        cells = [f"{row['tasks'][t]['mean']:.3f} ± {row['tasks'][t]['std']:.3f}" for t in tasks]
        lines.append(f"| {method} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")
    lines += ["", "Paired over (seed, test example), all tasks pooled:", "",
              "| comparison | seeds | difference | 95% interval | p-value | pairs |", "|---|---|---|---|---|---|"]
    for name, d in result["paired"].items():
        lines.append(f"| {name} | {','.join(map(str, d['seeds']))} | {d['difference']:+.3f} | "
                     f"[{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_value']:.2f} | {d['n']} |")
    lines += ["", "Trained on: " + "; ".join(f"{m} seed {s}: {cpu}" for m, row in methods.items()
                                             for s, cpu in row.get("machines", {}).items()) + " (one torch thread each)."]
    extra = sorted({s for row in methods.values() for s in row["seeds"]} - {0}) or [1]
    lines += ["", f"Command: `python benchmarks/quality/mixture_seeds.py --seeds {','.join(map(str, extra))}` "
                  "(then `--report-only`)."]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path, baselines: Dict[str, Any]) -> None:
    """seeds.png: accuracy per task and method, a bar per method at its mean over seeds, error bars one std,
    every seed's own score as a dot (so two seeds are not mistaken for a distribution), and the majority
    class and TF-IDF + LR of each task as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["methods"]
    tasks = list(next(iter(methods.values()))["tasks"])
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.9 * len(tasks) + 3.5, 3.6))
    for i, (method, row) in enumerate(methods.items()):
        xs = [t + (i - (len(methods) - 1) / 2) * width for t in range(len(tasks))]
        ax.bar(xs, [row["tasks"][t]["mean"] for t in tasks], width * 0.9, label=f"{method} (seeds {','.join(map(str, row['seeds']))})",
               yerr=[row["tasks"][t]["std"] for t in tasks], capsize=3, alpha=0.8)
        for x, t in zip(xs, tasks):
            ax.scatter([x] * len(row["tasks"][t]["values"]), row["tasks"][t]["values"], s=9, color="black", zorder=3)
    for t, task in enumerate(tasks):
        for key, style in (("majority", ":"), ("tfidf_lr", "--")):
            value = baselines.get(task, {}).get(key, {}).get("value")
            if value is not None:
                ax.hlines(value, t - 0.45, t + 0.45, colors="dimgray", linestyles=style,
                          label={"majority": "majority class", "tfidf_lr": "TF-IDF + LR"}[key] if t == 0 else None)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy (whole test split)")
    ax.set_title("SmolLM2-135M mixture models: mean ± std over seeds")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1", help="comma list of extra seeds to train")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--zoo", type=Path, default=None, help="the shipped zoo (default: the repository's zoo/)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    shipped = args.zoo or default_zoo_dir()
    if not args.report_only:
        from talklora_hub.zoo.retrain import ship, train_entry

        baselines = load_baselines(shipped)
        zoo = args.out / "zoo"
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
                recipe = seed_recipe(method, seed)
                if (zoo / recipe.name / RECORD).is_file() or recipe.name in shipped_entries(shipped):
                    continue  # finished (a record copied without its weights counts: it is what the report reads)
                result = train_entry(recipe, args.out / "runs", zoo)
                ship(recipe, result, zoo, baselines)
    result = summary(records(args.out, shipped))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "seeds.png", load_baselines(shipped))
    text = markdown(result)
    (args.out / "SEEDS.md").write_text(text + "\n![accuracy over seeds](seeds.png)\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
