"""The shipped zoo as tables: every entry's accuracy with its 95% interval beside the baselines on the same
test split, and the TT-LoRA MoE comparison. `talklora-hub zoo report` writes zoo/README.md; the project
README quotes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from .shipped import default_zoo_dir, load_baselines, read_record, shipped_entries


def _cell(m: Optional[Dict[str, Any]]) -> str:
    return "-" if not m else f"{m['value' if 'value' in m else 'accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def entries_table(zoo_dir: Optional[Path] = None) -> str:
    """One row per (entry, task): accuracy [95% interval], the baselines, and the margin over the best one."""
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    baselines = load_baselines(zoo_dir)
    lines = ["| entry | method | task | n | accuracy [95% CI] | majority | zero-shot base | TF-IDF + LR | vs TF-IDF + LR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, folder in shipped_entries(zoo_dir).items():
        record = read_record(folder)
        method = record["adapter"]["method"] + (" MoE router" if record["kind"] == "router" else "")
        for task, m in record["metrics"].items():
            b = baselines.get(task, {})
            tfidf = b.get("tfidf_lr")
            margin = m["accuracy"] - tfidf["value"] if tfidf else None
            verdict = "-" if margin is None else (f"{margin:+.3f}" + (" (clear)" if m["low"] > tfidf["high"] else
                                                                      " (below)" if m["high"] < tfidf["low"] else ""))
            lines.append(f"| {name} | {method} | {task} | {m['n']} | {_cell(m)} | {_cell(b.get('majority'))} | "
                         f"{_cell(b.get('zero_shot', {}).get(record['base']['name']))} | {_cell(tfidf)} | {verdict} |")
    return "\n".join(lines)


def moe_table(zoo_dir: Optional[Path] = None) -> str:
    """The TT-LoRA MoE router entries: MoE vs expert alone vs oracle routing vs the multi-task LoRA."""
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    out: List[str] = []
    for name, folder in shipped_entries(zoo_dir).items():
        record = read_record(folder)
        if record["kind"] != "router" or "moe" not in record:
            continue
        # Beside the MoE's own figures, each row holds the compared entries' (the recipe's compare_with).
        own = {"moe", "moe_oracle_routing", "expert_alone", "router_accuracy"}
        others = [k for k in next(iter(record["moe"]["tasks"].values())) if k not in own]
        header = "| task | MoE | expert alone | MoE, oracle routing | " + " | ".join(others) + " | router accuracy |"
        out += [f"**{name}** (router accuracy {record['moe']['router']['accuracy']:.3f} on "
                f"{record['moe']['router']['n']} test prompts)", "", header, "|---" * (5 + len(others)) + "|"]
        for task, row in record["moe"]["tasks"].items():
            cells = []
            for other in others:
                value = row.get(other)
                if value is None and (zoo_dir / other).is_dir():
                    value = read_record(zoo_dir / other)["metrics"].get(task, {}).get("accuracy")
                cells.append("-" if value is None else f"{value:.3f}")
            out.append(f"| {task} | {row['moe']:.3f} | {row['expert_alone']:.3f} | {row['moe_oracle_routing']:.3f} | "
                       + " | ".join(cells) + f" | {row['router_accuracy']:.3f} |")
        confusion = record["moe"]["router"]["confusion"]
        out += ["", "Router confusion (rows: the prompt's task; columns: the expert chosen):", "",
                "| task | " + " | ".join(f"expert {i}" for i in range(len(next(iter(confusion.values()))))) + " |",
                "|---" * (1 + len(next(iter(confusion.values())))) + "|"]
        out += [f"| {task} | " + " | ".join(str(c) for c in counts) + " |" for task, counts in confusion.items()]
    return "\n".join(out)


def paired_table(zoo_dir: Optional[Path] = None) -> str:
    """The mixture models compared pairwise on the same test examples (paired bootstrap of per-example hits):
    per task and pooled over the tasks they share."""
    from ..evaluation.intervals import paired_difference

    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    models = {read_record(f)["adapter"]["method"]: read_record(f) for f in shipped_entries(zoo_dir).values()
              if read_record(f)["kind"] == "model"}
    pairs = [(a, b) for a, b in (("talklora", "lora"), ("talklora", "moelora"), ("moelora", "lora"))
             if a in models and b in models]
    if not pairs:
        return ""
    lines = ["| comparison | task | difference | 95% interval | p-value | n |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        shared = [t for t in models[a]["metrics"] if t in models[b]["metrics"]]
        pooled_a, pooled_b = [], []
        for task in shared + ["all"]:
            if task == "all":
                hits_a, hits_b = pooled_a, pooled_b
            else:
                hits_a = [c == "1" for c in models[a]["metrics"][task]["hits"]]
                hits_b = [c == "1" for c in models[b]["metrics"][task]["hits"]]
                pooled_a, pooled_b = pooled_a + hits_a, pooled_b + hits_b
            d = paired_difference(hits_a, hits_b)
            lines.append(f"| {a} − {b} | {task if task != 'all' else '**all three, pooled**'} | {d['difference']:+.3f} | "
                         f"[{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_value']:.2f} | {d['n']} |")
    return "\n".join(lines)


def write_report(zoo_dir: Optional[Path] = None, out: Optional[Path] = None) -> Path:
    """Writes the tables to `out` (default zoo/README.md) and returns its path."""
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    text = ["# The shipped zoo", "",
            "Measured by `talklora-hub zoo retrain` on each task's whole test split, on the shipped bf16 weights; "
            "95% Wilson intervals. Regenerate this file with `talklora-hub zoo report`.", "", entries_table(zoo_dir)]
    paired = paired_table(zoo_dir)
    if paired:
        text += ["", "## The mixture models, paired on the same test examples", "", paired]
    moe = moe_table(zoo_dir)
    if moe:
        text += ["", "## TT-LoRA MoE", "", moe]
    path = Path(out) if out else zoo_dir / "README.md"
    path.write_text("\n".join(text) + "\n")
    return path
