"""Paired comparison of two sets of scored zoo records (recipe probes or shipped entries), seed by seed.

    python benchmarks/quality/probe_pairs.py --zoo DIR \
        --a minilm-talklora-fortune-topic,minilm-talklora-fortune-topic-seed1,minilm-talklora-fortune-topic-seed2 \
        --b minilm-talklora-fortune-topic-lora-seed0,minilm-talklora-fortune-topic-lora-seed1,...

The i-th entry of --a is paired with the i-th of --b (the same seed); their per-example test hits are
concatenated per task, so the paired bootstrap compares the same (seed, example) pairs. A name is looked up in
--zoo first, then in the repository's zoo/ (so a shipped entry can be one side). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from talklora_hub.evaluation.intervals import paired_difference
from talklora_hub.zoo.shipped import default_zoo_dir, read_record, shipped_entries


def _hits(names: List[str], zoos: List[Path]) -> Dict[str, List[bool]]:
    """{task: hits of every named record, concatenated in order}."""
    found: Dict[str, Path] = {}
    for zoo in reversed(zoos):  # earlier folders win
        found.update(shipped_entries(zoo))
    out: Dict[str, List[bool]] = {}
    for name in names:
        if name not in found:
            raise SystemExit(f"probe_pairs: no scored record named {name!r} in {[str(z) for z in zoos]}.")
        for task, metric in read_record(found[name])["metrics"].items():
            out.setdefault(task, []).extend(c == "1" for c in metric["hits"])
    return out


def pair_table(a: List[str], b: List[str], zoos: List[Path], label_a: str, label_b: str) -> str:
    if len(a) != len(b) or not a:
        raise SystemExit(f"probe_pairs: --a and --b must name as many records (one per seed), got {len(a)} and {len(b)}.")
    hits_a, hits_b = _hits(a, zoos), _hits(b, zoos)
    lines = [f"| task | seeds | {label_a} | {label_b} | difference [95% CI] | p-value | n |", "|---|---|---|---|---|---|---|"]
    for task in sorted(set(hits_a) & set(hits_b)):
        x, y = hits_a[task], hits_b[task]
        d = paired_difference(x, y)
        lines.append(f"| {task} | {len(a)} | {sum(x) / len(x):.3f} | {sum(y) / len(y):.3f} | "
                     f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_value']:.2f} | {d['n']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True, help="the probes' zoo folder (recipe_probe.py --out DIR/zoo)")
    parser.add_argument("--a", required=True, help="comma list of record names, one per seed")
    parser.add_argument("--b", required=True, help="comma list of record names, the same seeds in the same order")
    parser.add_argument("--label-a", default="A")
    parser.add_argument("--label-b", default="B")
    args = parser.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    print(pair_table(split(args.a), split(args.b), [args.zoo, default_zoo_dir()], args.label_a, args.label_b), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
