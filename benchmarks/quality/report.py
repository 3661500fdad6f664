"""Turns a quality grid's results folder into REPORT.md and its plots.

    python benchmarks/quality/report.py benchmarks/quality/results/<grid name>

Sections: (a) accuracy per task (mean ± std over seeds, the mean Wilson 95% interval, trainable parameters)
and averaged over tasks; (b) paired comparisons, per task and pooled over seeds and tasks (per-example hits
concatenated, then talklora_hub.evaluation.intervals.paired_difference: paired bootstrap 95% interval and
p-value), with one plain sentence per comparison saying who is below whom; (c) routing balance of the
routed variants on the test probe, and over training; (d) routing stability ||dg|| / ||dx||. Plots (PNG,
matplotlib Agg): accuracy.png, routing_balance.png, routing_over_training.png, stability.png, loss_curves.png.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_variants import VARIANTS  # noqa: E402

LABELS = {"lora": "LoRA", "lora-matched": "LoRA (param-matched)", "moelora": "MoELoRA", "talklora": "TalkLoRA",
          "talklora-notalk": "TalkLoRA no-talk", "talklora-perlayer": "TalkLoRA per-layer B",
          "talklora-top2-balance": "TalkLoRA top-2 + balance"}
# (A, B): A's accuracy minus B's. The first three are the issue's; the rest are the ablations' questions.
COMPARISONS = [("talklora", "moelora"), ("talklora", "lora"), ("moelora", "lora"), ("talklora", "lora-matched"),
               ("talklora", "talklora-notalk"), ("talklora", "talklora-perlayer"), ("talklora-top2-balance", "talklora"),
               # issue 21's "combination nobody has tried": a TalkLoRA variant against LoRA at an equal count
               ("talklora-top2-balance", "lora-matched"), ("talklora-top2-balance", "lora")]
ALPHA = 0.05


def label(variant: str) -> str:
    return LABELS.get(variant, variant)


def load_cells(folder: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "cells").glob("*.json"))]


def _mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(mean: float, std: Optional[float]) -> str:
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def ordered(variants) -> List[str]:
    return [v for v in VARIANTS if v in variants] + sorted(v for v in variants if v not in VARIANTS)


# ---- (a) accuracy ------------------------------------------------------------------------------
def accuracy_summary(cells) -> "OrderedDict[str, Dict[str, Dict[str, Any]]]":
    """{task: {variant: {mean, std, low, high, seeds, params, lr, per_seed}}}, plus task "average" (mean of
    the per-task means; std over seeds of the seed's mean over tasks, seeds that have every task)."""
    by = defaultdict(lambda: defaultdict(list))
    for c in cells:
        by[c["task"]][c["variant"]].append(c)
    out: "OrderedDict[str, Dict[str, Dict[str, Any]]]" = OrderedDict()
    for task in sorted(by):
        out[task] = {}
        for variant in ordered(by[task]):
            group = sorted(by[task][variant], key=lambda c: c["seed"])
            mean, std = _mean_std([c["test"]["accuracy"] for c in group])
            out[task][variant] = {
                "mean": mean, "std": std, "low": statistics.fmean(c["test"]["low"] for c in group),
                "high": statistics.fmean(c["test"]["high"] for c in group), "seeds": [c["seed"] for c in group],
                "params": sorted({c["parameter_counts"]["trainable"] for c in group}),
                "lr": sorted({c["lr"] for c in group}), "n": group[0]["test"]["n"],
                "per_seed": {c["seed"]: c["test"]["accuracy"] for c in group}}
    tasks = list(out)
    average = {}
    for variant in ordered({v for t in tasks for v in out[t]}):
        if not all(variant in out[t] for t in tasks):
            continue
        seeds = set.intersection(*(set(out[t][variant]["per_seed"]) for t in tasks))
        per_seed = [statistics.fmean(out[t][variant]["per_seed"][s] for t in tasks) for s in sorted(seeds)]
        average[variant] = {"mean": statistics.fmean(out[t][variant]["mean"] for t in tasks),
                            "std": statistics.stdev(per_seed) if len(per_seed) > 1 else None,
                            "low": statistics.fmean(out[t][variant]["low"] for t in tasks),
                            "high": statistics.fmean(out[t][variant]["high"] for t in tasks),
                            "seeds": sorted(seeds), "params": sorted({p for t in tasks for p in out[t][variant]["params"]}),
                            "lr": sorted({x for t in tasks for x in out[t][variant]["lr"]}), "n": None}
    if len(tasks) > 1 and average:
        out["average over tasks"] = average
    return out


def accuracy_tables(summary) -> List[str]:
    lines = []
    for task, rows in summary.items():
        lines += [f"### {task}", "", "| variant | trainable params | accuracy (mean ± std over seeds) | mean Wilson 95% "
                  "| seeds | lr | test n |", "|---|---|---|---|---|---|---|"]
        for variant, s in rows.items():
            params = " / ".join(f"{p:,}" for p in s["params"])
            lines.append(f"| {label(variant)} | {params} | {_pm(s['mean'], s['std'])} | [{s['low']:.3f}, {s['high']:.3f}] "
                         f"| {len(s['seeds'])} | {', '.join(f'{x:g}' for x in s['lr'])} | {s['n'] or '—'} |")
        lines.append("")
    return lines


# ---- (b) paired comparisons --------------------------------------------------------------------
def paired(cells, a: str, b: str, task: Optional[str] = None) -> Optional[Dict[str, float]]:
    """paired_difference of A and B on the concatenated hits of every (task, seed) both have."""
    from talklora_hub.evaluation.intervals import paired_difference

    index = {(c["variant"], c["task"], c["seed"]): c["test"]["hits"] for c in cells}
    keys = sorted({(t, s) for (v, t, s) in index if v == a and (b, t, s) in index and (task is None or t == task)})
    if not keys:
        return None
    hits_a = [h for k in keys for h in index[(a, *k)]]
    hits_b = [h for k in keys for h in index[(b, *k)]]
    return {**paired_difference(hits_a, hits_b), "cells": len(keys)}


def verdict(d: Dict[str, float]) -> str:
    return "significant" if d["p_value"] < ALPHA and not d["low"] <= 0 <= d["high"] else "not significant"


def sentence(a: str, b: str, where: str, d: Dict[str, float]) -> str:
    """One plain sentence naming the method that is below: '<loser> is below <winner> <where> by x (p): ...'."""
    diff = d["difference"]
    if diff == 0:
        return f"{label(a)} and {label(b)} tie {where} ({d['n']} paired examples)."
    loser, winner = (a, b) if diff < 0 else (b, a)
    return (f"{label(loser)} is below {label(winner)} {where} by {abs(diff):.3f} ({_p(d['p_value'])}, 95% interval "
            f"of {label(a)} − {label(b)} [{d['low']:+.3f}, {d['high']:+.3f}]): {verdict(d)}.")


def comparisons(cells) -> Tuple[List[str], List[str]]:
    """(table lines, sentences)."""
    tasks = sorted({c["task"] for c in cells})
    present = {c["variant"] for c in cells}
    lines = ["| comparison (A − B) | scope | difference | 95% interval | p | paired examples | verdict |",
             "|---|---|---|---|---|---|---|"]
    sentences = []
    for a, b in COMPARISONS:
        if a not in present or b not in present:
            continue
        scopes = [(f"on {t} (pooled over seeds)", t) for t in tasks]
        if len(tasks) > 1:
            scopes.append(("pooled over seeds and tasks", None))
        for where, task in scopes:
            d = paired(cells, a, b, task)
            if d is None:
                continue
            lines.append(f"| {label(a)} − {label(b)} | {where} | {d['difference']:+.3f} | [{d['low']:+.3f}, "
                         f"{d['high']:+.3f}] | {_p(d['p_value'])} | {d['n']} | {verdict(d)} |")
            sentences.append(sentence(a, b, where, d))
    return (lines if len(lines) > 2 else []), sentences


# ---- (c) routing balance -----------------------------------------------------------------------
BALANCE_KEYS = ("load_entropy", "normalized_entropy", "load_cv", "max_share", "dead_experts")


def routing_summary(cells) -> "OrderedDict[str, Dict[str, Any]]":
    """{variant: {key: (mean, std) over cells, "layers": {layer: {key: mean}}, "training": (first, last)}}."""
    by = defaultdict(list)
    for c in cells:
        if c.get("routing_test"):
            by[c["variant"]].append(c)
    out: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
    for variant in ordered(by):
        group = by[variant]
        entry: Dict[str, Any] = {k: _mean_std([c["routing_test"]["overall"][k] for c in group]) for k in BALANCE_KEYS}
        layers = defaultdict(lambda: defaultdict(list))
        for c in group:
            for layer, figures in c["routing_test"]["layers"].items():
                for k in BALANCE_KEYS + ("load",):
                    layers[int(layer)][k].append(figures[k])
        entry["layers"] = {layer: {k: (statistics.fmean(v) if k != "load" else [statistics.fmean(x) for x in zip(*v)])
                                   for k, v in figs.items()} for layer, figs in sorted(layers.items())}
        curves = [c["routing_over_training"] for c in group if c.get("routing_over_training")]
        if curves:
            entry["training"] = {k: (statistics.fmean(cv[0][k] for cv in curves), statistics.fmean(cv[-1][k] for cv in curves))
                                 for k in ("normalized_entropy", "load_cv") if all(k in cv[0] for cv in curves)}
        out[variant] = entry
    return out


def routing_tables(summary) -> List[str]:
    if not summary:
        return ["No routed variant in this grid."]
    lines = ["| variant | load entropy (norm.) | per-token entropy (norm.) | load CV | max share | dead experts "
             "per module | over training: token entropy first → last window | load CV first → last |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, s in summary.items():
        train = s.get("training", {})
        ent = train.get("normalized_entropy")
        cv = train.get("load_cv")
        lines.append(f"| {label(variant)} | {_pm(*s['load_entropy'])} | {_pm(*s['normalized_entropy'])} | "
                     f"{_pm(*s['load_cv'])} | {_pm(*s['max_share'])} | {s['dead_experts'][0]:.2f} | "
                     f"{f'{ent[0]:.3f} → {ent[1]:.3f}' if ent else '—'} | {f'{cv[0]:.3f} → {cv[1]:.3f}' if cv else '—'} |")
    layers = sorted({layer for s in summary.values() for layer in s["layers"]})
    lines += ["", "Per layer (mean over the layer's routed modules and over cells): load CV, and the mean load per "
              "expert.", "", "| variant | " + " | ".join(f"layer {layer}" for layer in layers) + " |",
              "|---|" + "---|" * len(layers)]
    for variant, s in summary.items():
        cells = [f"CV {s['layers'][layer]['load_cv']:.3f}; load " + "/".join(f"{x:.2f}" for x in s["layers"][layer]["load"])
                 if layer in s["layers"] else "—" for layer in layers]
        lines.append(f"| {label(variant)} | " + " | ".join(cells) + " |")
    return lines


# ---- (d) stability ------------------------------------------------------------------------------
def stability_summary(cells) -> "OrderedDict[str, Dict[str, Dict[str, Any]]]":
    """{variant: {sigma: {"median", "mean", "delta_g", "delta_x" (means over cells), "layers": {layer: mean}}}}."""
    by = defaultdict(list)
    for c in cells:
        if c.get("stability"):
            by[c["variant"]].append(c["stability"])
    out: "OrderedDict[str, Dict[str, Dict[str, Any]]]" = OrderedDict()
    for variant in ordered(by):
        out[variant] = {}
        for sigma in sorted({s for st in by[variant] for s in st}, key=float):
            group = [st[sigma] for st in by[variant] if sigma in st]
            layers = defaultdict(list)
            for g in group:
                for layer, value in g["layers"].items():
                    layers[int(layer)].append(value)
            out[variant][sigma] = {"median": statistics.fmean(g["median"] for g in group),
                                   "mean": statistics.fmean(g["mean"] for g in group),
                                   "delta_g": statistics.fmean(g["mean_delta_g"] for g in group),
                                   "delta_x": statistics.fmean(g["mean_delta_x"] for g in group),
                                   "layers": {k: statistics.fmean(v) for k, v in sorted(layers.items())}}
    return out


def stability_tables(summary) -> Tuple[List[str], List[str]]:
    if not summary:
        return ["No routed variant in this grid."], []
    layers = sorted({layer for v in summary.values() for s in v.values() for layer in s["layers"]})
    lines = ["| variant | σ | median ‖Δg‖/‖Δx‖ | mean | mean ‖Δg‖ | mean ‖Δx‖ | " +
             " | ".join(f"layer {layer}" for layer in layers) + " |", "|---|---|---|---|---|---|" + "---|" * len(layers)]
    for variant, per_sigma in summary.items():
        for sigma, s in per_sigma.items():
            per_layer = [f"{s['layers'][layer]:.4f}" if layer in s["layers"] else "—" for layer in layers]
            lines.append(f"| {label(variant)} | {sigma} | {s['median']:.4f} | {s['mean']:.4f} | {s['delta_g']:.2e} | "
                         f"{s['delta_x']:.2e} | " + " | ".join(per_layer) + " |")
    sentences = []
    for a, b in (("talklora", "moelora"), ("talklora", "talklora-notalk")):
        if a in summary and b in summary:
            for sigma in summary[a]:
                if sigma in summary[b] and summary[b][sigma]["median"] > 0:
                    ratio = summary[a][sigma]["median"] / summary[b][sigma]["median"]
                    word = "smoother" if ratio < 1 else "less smooth"
                    sentences.append(f"At σ={sigma}, {label(a)}'s median ‖Δg‖/‖Δx‖ is {ratio:.2f}× {label(b)}'s: "
                                     f"{label(a)} routes {word} (a ratio of medians over cells; no interval).")
    return lines, sentences


# ---- plots --------------------------------------------------------------------------------------
def plot_all(folder: Path, accuracy, routing, stability, cells) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = list(accuracy)
    variants = ordered({v for rows in accuracy.values() for v in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * max(1, len(variants)) / 3), 4))
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        xs = [t + (i - (len(variants) - 1) / 2) * width for t in range(len(tasks))]
        means = [accuracy[t][variant]["mean"] if variant in accuracy[t] else math.nan for t in tasks]
        errs = [(accuracy[t][variant]["std"] or 0.0) if variant in accuracy[t] else 0.0 for t in tasks]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label(variant))
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (error bar: std over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png", dpi=110)
    plt.close(fig)
    written.append("accuracy.png")

    if routing:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        names = list(routing)
        for ax, key, title in ((axes[0], "load_entropy", "normalised entropy of the load (1 = balanced)"),
                               (axes[1], "load_cv", "coefficient of variation of the load (0 = balanced)")):
            ax.bar(range(len(names)), [routing[n][key][0] for n in names],
                   yerr=[routing[n][key][1] or 0.0 for n in names], capsize=3)
            ax.set_xticks(range(len(names)), [label(n) for n in names], rotation=25, ha="right", fontsize=7)
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(folder / "routing_balance.png", dpi=110)
        plt.close(fig)
        written.append("routing_balance.png")
    if stability:
        sigmas = sorted({s for v in stability.values() for s in v}, key=float)
        fig, axes = plt.subplots(1, len(sigmas), figsize=(4.5 * len(sigmas), 3.6), squeeze=False)
        for ax, sigma in zip(axes[0], sigmas):
            for variant, per_sigma in stability.items():
                if sigma in per_sigma:
                    layers = per_sigma[sigma]["layers"]
                    ax.plot(list(layers), list(layers.values()), marker="o", label=label(variant))
            ax.set_title(f"σ = {sigma}", fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("layer")
            ax.set_ylabel("mean ‖Δg‖ / ‖Δx‖")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "stability.png", dpi=110)
        plt.close(fig)
        written.append("stability.png")
    over = {v: [c["routing_over_training"] for c in cells if c["variant"] == v and c.get("routing_over_training")]
            for v in variants}
    over = {v: runs for v, runs in over.items() if runs}
    if over:  # the training log's window summaries, averaged over cells step by step
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, key, title in ((axes[0], "normalized_entropy", "per-token routing entropy (normalised)"),
                               (axes[1], "load_cv", "load CV over experts (0 = balanced)")):
            for variant, runs in over.items():
                steps = sorted({w["step"] for run in runs for w in run})
                by_step = {st: [w[key] for run in runs for w in run if w["step"] == st] for st in steps}
                ax.plot(steps, [statistics.fmean(by_step[st]) for st in steps], label=label(variant))
            ax.set_xlabel("training step")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "routing_over_training.png", dpi=110)
        plt.close(fig)
        written.append("routing_over_training.png")
    real_tasks = [t for t in tasks if t != "average over tasks"]
    fig, axes = plt.subplots(1, len(real_tasks), figsize=(4.5 * len(real_tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], real_tasks):
        for variant in variants:
            curves = [c["losses"] for c in cells if c["task"] == task and c["variant"] == variant and c["losses"]]
            if curves:
                steps = [r["step"] for r in curves[0]]
                ax.plot(steps, [statistics.fmean(cv[i]["loss"] for cv in curves if i < len(cv)) for i in range(len(steps))],
                        label=label(variant))
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "loss_curves.png", dpi=110)
    plt.close(fig)
    written.append("loss_curves.png")
    return written


# ---- the report ---------------------------------------------------------------------------------
def write_report(folder) -> Path:
    folder = Path(folder)
    cells = load_cells(folder)
    if not cells:
        raise SystemExit(f"{folder}/cells holds no finished cell. Fix: run run_grid.py with --out {folder} first.")
    grid = json.loads((folder / "grid.json").read_text()) if (folder / "grid.json").is_file() else {}
    lr_choice = json.loads((folder / "lr_choice.json").read_text()) if (folder / "lr_choice.json").is_file() else None
    accuracy = accuracy_summary(cells)
    comparison_lines, sentences = comparisons(cells)
    routing = routing_summary(cells)
    stability = stability_summary(cells)
    stability_lines, stability_sentences = stability_tables(stability)
    plots = plot_all(folder, accuracy, routing, stability, cells)

    settings = ", ".join(f"{k}={grid[k]}" for k in ("base", "head", "steps", "batch_size", "max_length", "r", "lrs",
                                                      "targets", "lora_dropout", "max_train_examples") if k in grid)
    lines = ["# Quality grid: TalkLoRA vs MoELoRA vs LoRA", "",
             f"{len(cells)} cells (variant × task × seed) from `{Path(folder).name}`. Shared settings: {settings}.",
             "Accuracy is on each task's whole test split; intervals are Wilson 95% (per cell, averaged over seeds).", ""]
    if grid.get("lora_matched"):
        m = grid["lora_matched"]
        lines += [f"LoRA (param-matched) uses r={m['rank']}: {m['lora_count']:,} trainable parameters against "
                  f"TalkLoRA's {m['talklora_count']:,} (the closest LoRA rank; counted with a two-label head, so the "
                  "tables' counts, with each task's own head, differ by the head's size).", ""]
    if lr_choice:
        lines += ["Learning rate chosen per variant by mean validation accuracy over tasks (seed 0): " +
                  "; ".join(f"{label(v)} {c['lr']:g} (" + ", ".join(f"{lr}: {a:.3f}" for lr, a in c["validation"].items()) + ")"
                            for v, c in lr_choice.items()) + ".", ""]
    if (folder / "lr_search").is_dir():
        import lr_curves

        lr_curves.plot(folder)
        plots.append("lr_curves.png")
        lines += ["## Learning-rate search (validation split, seed 0)", ""] + lr_curves.table(folder) + [
            "", "![learning-rate curves](lr_curves.png)", ""]
    lines += ["## (a) Accuracy", ""] + accuracy_tables(accuracy) + ["![accuracy](accuracy.png)", ""]
    lines += ["## (b) Paired comparisons", "",
              "Per-example hits of A and B on the same test examples, concatenated over seeds (and tasks), paired "
              f"bootstrap (2000 resamples); significant: p < {ALPHA} and the interval excludes 0.", ""]
    lines += comparison_lines or ["No pair of compared variants in this grid."]
    lines += ["", "### Where a method loses", ""] + ([f"- {s}" for s in sentences] or ["- Nothing to compare."])
    lines += ["", "## (c) Routing balance", "",
              "Measured on the trained model over the first test examples (grid.json: routing_examples), real tokens "
              "only; means ± std over cells (tasks × seeds). Load entropy: −Σ load·log load / log E of the mean "
              "load; per-token entropy: mean −Σ g log g / log E; dead: load < 0.02. Over training: the training "
              "log's window summaries (every log_every steps), first and last window; per-step routing is not "
              "recorded.", ""]
    lines += routing_tables(routing) + ([""] + ["![routing balance](routing_balance.png)"] if routing else [])
    if "routing_over_training.png" in plots:
        lines += ["", "Over training (the training log's window summaries, mean over cells):", "",
                  "![routing over training](routing_over_training.png)"]
    lines += ["", "## (d) Routing stability", "",
              "‖Δg‖/‖Δx‖ per token and routed module under Gaussian noise on the input embeddings "
              "(σ·N(0,1)·rms per token); Δx is that module's own input change. Lower = smoother routing. Median "
              "over every token and module, mean per layer, both averaged over cells.", ""]
    lines += stability_lines + [""] + [f"- {s}" for s in stability_sentences]
    if stability:
        lines += ["", "![stability](stability.png)"]
    lines += ["", "## Training loss", "", "![loss curves](loss_curves.png)", ""]
    path = folder / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    assert all((folder / p).is_file() for p in plots)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/quality/report.py RESULTS_FOLDER")
    print(write_report(sys.argv[1]))
