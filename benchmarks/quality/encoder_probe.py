"""The frozen encoder's linear probe beside the zoo's MiniLM experts (issue 8: is an expert that trails
TF-IDF + LR undertrained, or does the encoder not carry the task?).

    python benchmarks/quality/encoder_probe.py [--tasks sotu_party,sotu_era] [--max-length 256] [--out DIR]

Per task: logistic regression on all-MiniLM-L6-v2's frozen mean-pooled embeddings of the whole training
split (C chosen on the validation split; talklora_hub.evaluation.baselines.frozen_encoder_lr), scored on the
whole test split, next to the shipped minilm-talklora-<task> expert and the zoo's baselines. An expert below
its probe is undertrained (it sees the same features and may change them); a probe at the majority says the
encoder's sentence embedding barely carries the task. DIR/ENCODER_PROBE.md and DIR/encoder_probe.json.
The experts' column is read from the zoo when the table is written: `--render` rewrites it from the saved
probes after the experts are retrained (the probes do not depend on them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from talklora_hub.data.base_models import base_model_path
from talklora_hub.evaluation.baselines import frozen_encoder_lr
from talklora_hub.zoo.recipes import ENCODER_TASKS, MINILM
from talklora_hub.zoo.shipped import default_zoo_dir, load_baselines, machine, read_record, shipped_entries

RESULTS = Path(__file__).resolve().parent / "results" / "encoder-probe"


def _cell(m) -> str:
    return f"{m['value'] if 'value' in m else m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}]" if m else "–"


def expert_figures(zoo: Path, tasks) -> dict:
    """{task: the shipped minilm-talklora-<task> expert's accuracy, interval and n} (None where not shipped)."""
    shipped, figures = shipped_entries(zoo), {}
    for task in tasks:
        entry = f"minilm-talklora-{task.replace('_', '-')}"
        metric = read_record(shipped[entry])["metrics"].get(task) if entry in shipped else None
        figures[task] = metric and {k: metric[k] for k in ("accuracy", "low", "high", "n")}
    return figures


def markdown(result, experts) -> str:
    lines = ["| task | n | frozen encoder + LR [95% CI] | C (on validation) | shipped MiniLM expert | majority | "
             "zero-shot encoder | TF-IDF + LR |", "|---|---|---|---|---|---|---|---|"]
    for task, row in result["tasks"].items():
        base = row["baselines"]
        lines.append(f"| {task} | {row['probe']['n']} | {_cell(row['probe'])} | {row['probe']['details']['C']:g} | "
                     f"{_cell(experts.get(task))} | {_cell(base.get('majority'))} | "
                     f"{_cell(base.get('zero_shot', {}).get(MINILM))} | {_cell(base.get('tfidf_lr'))} |")
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch thread(s)), GPU: {m['gpu']}; "
                  f"torch {m['torch']}, transformers {m['transformers']}. Embeddings of the first "
                  f"{result['max_length']} tokens. Command: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(ENCODER_TASKS))
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--zoo", type=Path, default=None, help="the shipped zoo (default: the repository's zoo/)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite ENCODER_PROBE.md from DIR/encoder_probe.json and the zoo's current experts")
    args = parser.parse_args(argv)
    zoo = args.zoo or default_zoo_dir()
    if args.render:
        result = json.loads((args.out / "encoder_probe.json").read_text())
    else:
        baselines, path = load_baselines(zoo), str(base_model_path(MINILM))
        result = {"machine": machine(), "max_length": args.max_length, "tasks": {},
                  "command": "python benchmarks/quality/encoder_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            probe = frozen_encoder_lr(task, path, max_length=args.max_length)
            result["tasks"][task] = {"probe": probe.to_dict(),
                                     "baselines": {k: v for k, v in baselines.get(task, {}).items() if k != "peft_lora"}}
            print(f"{task}: probe {probe.accuracy.value:.3f} (C={probe.details['C']:g})", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "encoder_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result, expert_figures(zoo, result["tasks"]))
    (args.out / "ENCODER_PROBE.md").write_text("# Frozen-encoder linear probe vs the zoo's MiniLM experts\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
