"""Does a retrained zoo reproduce the shipped one? `talklora-hub zoo compare --retrained DIR` sets every entry
retrained into DIR (by `talklora-hub zoo retrain --zoo-dir DIR --force`) beside the shipped record of the same
name, task by task:

- the shipped accuracy with its 95% interval and the retrained accuracy; an entry reproduces when the
  retrained figure lies inside the shipped interval (the bar issue 8 sets for `zoo retrain`);
- the paired difference on the same test examples (both records keep per-example hits), which says more than
  the intervals: identical hits mean the same predictions, not just the same count;
- whether the weights files are byte-identical (same recipe, same CPU family and library versions: they
  usually are; across CPUs the last bits of the floats may differ);
- the machines both were trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..evaluation.intervals import paired_difference
from .shipped import ROUTER_WEIGHTS, WEIGHTS, default_zoo_dir, read_record, shipped_entries


def _digest(folder: Path) -> Optional[str]:
    for name in (WEIGHTS, ROUTER_WEIGHTS):
        if (folder / name).exists():
            return hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return None


def _machine(record: Dict[str, Any]) -> str:
    m = record.get("machine", {})
    return f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores{', ' + m['gpu'] if m.get('gpu') else ''})"


def compare_zoos(retrained_dir: Path, shipped_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """One row per (entry, task) retrained into `retrained_dir` that is also shipped in `shipped_dir`
    (default: the repository's zoo/). Raises ValueError when they share no entry."""
    shipped = shipped_entries(shipped_dir or default_zoo_dir())
    retrained = shipped_entries(retrained_dir)
    common = sorted(set(shipped) & set(retrained))
    if not common:
        raise ValueError(f"`retrained` must hold entries that are shipped, got {Path(retrained_dir)} with "
                         f"{sorted(retrained) or 'no finished entries'}. Fix: run `talklora-hub zoo retrain "
                         f"--zoo-dir {retrained_dir} --force [--only ENTRY ...]` first.")
    rows = []
    for name in common:
        old, new = read_record(shipped[name]), read_record(retrained[name])
        same_weights = _digest(shipped[name]) == _digest(retrained[name])
        for task, before in old["metrics"].items():
            after = new["metrics"].get(task)
            if after is None:
                continue
            paired = None
            if before.get("hits") and after.get("hits") and len(before["hits"]) == len(after["hits"]):
                paired = paired_difference([c == "1" for c in after["hits"]], [c == "1" for c in before["hits"]])
            rows.append({"entry": name, "task": task, "n": before["n"], "shipped": before["accuracy"],
                         "low": before["low"], "high": before["high"], "retrained": after["accuracy"],
                         "within": before["low"] <= after["accuracy"] <= before["high"],
                         "same_hits": before.get("hits") == after.get("hits"), "paired": paired,
                         "same_weights": same_weights, "shipped_machine": _machine(old),
                         "retrained_machine": _machine(new),
                         "train_seconds": (old.get("timing", {}).get("train_seconds"),
                                           new.get("timing", {}).get("train_seconds"))})
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| entry | task | n | shipped [95% CI] | retrained | inside the interval | retrained − shipped, paired "
             "[95% CI] | same predictions | same weights bytes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["paired"]
        paired = f"{p['difference']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]" if p else "–"
        lines.append(f"| {r['entry']} | {r['task']} | {r['n']} | {r['shipped']:.3f} [{r['low']:.3f}, {r['high']:.3f}] "
                     f"| {r['retrained']:.3f} | {'yes' if r['within'] else '**no**'} | {paired} | "
                     f"{'yes' if r['same_hits'] else 'no'} | {'yes' if r['same_weights'] else 'no'} |")
    machines = sorted({(r["entry"], r["shipped_machine"], r["retrained_machine"]) for r in rows})
    lines += ["", "| entry | shipped: trained on | retrained on |", "|---|---|---|"]
    lines += [f"| {e} | {a} | {b} |" for e, a, b in machines]
    return "\n".join(lines) + "\n"
