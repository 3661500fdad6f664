"""Multi-task mixtures: `mix_tasks` stacks several tasks' splits into one DatasetDict with a task column.

The mixture keeps the columns every task has (id, text, prompt, target, answer), adds `task`
(a ClassLabel whose names are the task names, in the order given: the int a router conditions on)
and `task_name`, and turns `label` into a plain int that is -1 for generation tasks. Order is a
seeded hash of each id, so it is shuffled and still identical on every run.
"""

from __future__ import annotations

from collections.abc import Sequence

from .splits import SPLITS, unit_hash
from .text import normalize_text


def mix_tasks(
    tasks: Sequence,
    cache_dir=None,
    max_per_task: int | None = None,
    seed: int = 0,
):
    """Mix tasks for multi-task training.

    tasks: task names (built-in or registered) and/or (name, DatasetDict) pairs, e.g. the result of
    load_task_from_dataset. max_per_task caps each task's rows per split (a stable hash picks them),
    to keep a big task from drowning small ones. A text that is in any task's validation or test
    split is dropped from every task's train split, so the mixture never trains on held-out text.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    if isinstance(tasks, (str, bytes)) or not tasks:
        raise ValueError(
            f"tasks: must be a non-empty list of task names or (name, DatasetDict) pairs; got {tasks!r}. "
            "Pass e.g. ['spam', 'gsm8k']."
        )
    named = [_resolve(item, cache_dir) for item in tasks]
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: each task may appear once; got {names}. Remove the repeats.")

    features = Features({
        "id": Value("string"), "task": ClassLabel(names=names), "task_name": Value("string"),
        "text": Value("string"), "prompt": Value("string"), "target": Value("string"),
        "answer": Value("string"), "label": Value("int64"),
    })
    rows = {split: [] for split in SPLITS}
    for task_id, (name, splits) in enumerate(named):
        for split in SPLITS:
            if split not in splits:
                continue
            chosen = list(splits[split])
            if max_per_task is not None:
                chosen = sorted(chosen, key=lambda r: unit_hash("mix-cap", seed, r["id"]))[:max_per_task]
            for r in chosen:
                rows[split].append({
                    "id": r["id"], "task": task_id, "task_name": name, "text": r["text"], "prompt": r["prompt"],
                    "target": r["target"], "answer": r.get("answer") or "", "label": int(r["label"]) if "label" in r else -1,
                })
    held_out = {normalize_text(r["text"]) for split in ("validation", "test") for r in rows[split]}
    rows["train"] = [r for r in rows["train"] if normalize_text(r["text"]) not in held_out]
    if not any(rows.values()):
        sizes = {name: {s: len(d) for s, d in splits.items()} for name, splits in named}
        raise ValueError(
            f"tasks: the mixture has no examples; got tasks {names} with split sizes {sizes}. "
            "Pass tasks that have examples (run `talklora-hub data fetch` for the built-in ones)."
        )
    out = {}
    for split in SPLITS:
        ordered = sorted(rows[split], key=lambda r: unit_hash("mix-order", seed, r["id"]))
        columns = {key: [r[key] for r in ordered] for key in features}
        out[split] = Dataset.from_dict(columns, features=features)
    return DatasetDict(out)


def _resolve(item, cache_dir):
    """(name, DatasetDict) for a task name or a (name, DatasetDict) pair."""
    from .tasks import get_task, load_task

    if isinstance(item, str):
        spec = get_task(item)  # ValueError listing the known names
        if spec.loader is None:
            raise ValueError(
                f"tasks: {item!r} was loaded from your data and has no source to rebuild it from; "
                f"pass ({item!r}, the_datasetdict) instead of the bare name."
            )
        return item, load_task(item, cache_dir)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and hasattr(item[1], "items"):
        return item
    raise ValueError(f"tasks: each item must be a task name or a (name, DatasetDict) pair; got {item!r}.")
