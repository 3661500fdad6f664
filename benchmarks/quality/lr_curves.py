"""The learning-rate search of a quality grid: validation accuracy per (variant, lr, task), as a table and a plot.

    python benchmarks/quality/lr_curves.py RESULTS_FOLDER      # prints the table, writes lr_curves.png

Reads RESULTS_FOLDER/lr_search/<variant>__<task>__lr<lr>.json (run_grid.py --lrs ...: seed 0, scored on each
task's validation split, never on test). Works on a search still running: what is missing shows as "—", and
a variant's choice is only stated once every task has every rate.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_variants import VARIANTS  # noqa: E402
from report import label  # noqa: E402


def load_search(folder: Path) -> Tuple[Dict[Tuple[str, str, float], Dict[str, Any]], List[float], List[str]]:
    """({(variant, task, lr): validation accuracy record}, the grid's lrs, its tasks)."""
    grid = json.loads((folder / "grid.json").read_text())
    found = {}
    for path in sorted((folder / "lr_search").glob("*.json")):
        cell = json.loads(path.read_text())
        found[(cell["variant"], cell["task"], float(cell["lr"]))] = cell["validation"]
    return found, [float(lr) for lr in grid["lrs"]], list(grid["tasks"])


def choice(found, variant: str, lrs: List[float], tasks: List[str]) -> Optional[float]:
    """The rate with the best mean validation accuracy over tasks (ties: the first in lrs), once all are in."""
    if any((variant, t, lr) not in found for t in tasks for lr in lrs):
        return None
    return max(lrs, key=lambda lr: sum(found[(variant, t, lr)]["value"] for t in tasks) / len(tasks))


def table(folder: Path) -> List[str]:
    """Markdown: one row per variant, validation accuracy per task at each rate, the chosen rate."""
    found, lrs, tasks = load_search(folder)
    variants = [v for v in VARIANTS if any(k[0] == v for k in found)]
    head = ["variant"] + [f"{t} @ {lr:g}" for t in tasks for lr in lrs] + ["chosen lr"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        cells = [f"{found[(v, t, lr)]['value']:.3f}" if (v, t, lr) in found else "—" for t in tasks for lr in lrs]
        chosen = choice(found, v, lrs, tasks)
        lines.append(f"| {label(v)} | " + " | ".join(cells) + f" | {'—' if chosen is None else f'{chosen:g}'} |")
    return lines


def plot(folder: Path, out: Optional[Path] = None) -> Path:
    """lr_curves.png: one panel per task, validation accuracy against the rate (log axis), one line per variant,
    each point with its Wilson 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    found, lrs, tasks = load_search(folder)
    series = defaultdict(list)
    for (v, t, lr), rec in sorted(found.items(), key=lambda kv: kv[0][2]):
        series[(v, t)].append((lr, rec["value"], rec.get("low"), rec.get("high")))
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for offset, v in enumerate(v for v in VARIANTS if (v, task) in series):
            points = series[(v, task)]
            shift = 1 + 0.04 * (offset - 3)  # a small sideways shift so the intervals do not hide each other
            xs = [lr * shift for lr, *_ in points]
            ys = [value for _, value, _, _ in points]
            errors = [[max(0.0, y - (lo if lo is not None else y)) for (_, y, lo, _) in points],
                      [max(0.0, (hi if hi is not None else y) - y) for (_, y, _, hi) in points]]
            axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=2, label=label(v))
        axis.set_xscale("log")
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # only the searched rates are labelled
        axis.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        axis.set_title(f"{task}: validation accuracy (seed 0)")
        axis.set_xlabel("learning rate")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (Wilson 95%)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path = out or folder / "lr_curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/quality/lr_curves.py RESULTS_FOLDER")
    print("\n".join(table(Path(sys.argv[1]))))
    print(plot(Path(sys.argv[1])))
