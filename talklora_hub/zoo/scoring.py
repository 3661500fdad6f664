"""Scoring a model on its tasks' test splits, one prediction per example, with 95% intervals.

Causal LMs are scored by constrained choice (each verbalizer's summed log-probability after the prompt,
as in training); encoders by the argmax over their task's slice of the joint label logits. The test
rows come in split order, so `limit` takes a fixed slice (the first examples), the same every time.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..evaluation.intervals import accuracy_with_interval


def test_rows(tasks: Sequence[Any], head: str, split: str = "test"):
    """The resolved tasks (TaskData) and, per task, its rows of `split` in split order. tasks: names or
    (name, DatasetDict) pairs, as TrainConfig takes them."""
    from ..train.data import resolve_tasks

    data = resolve_tasks(list(tasks), head, 0, None, None, split, need_train=False)
    rows = data.splits[split]
    return data, {name: [r for r in rows if r["task_name"] == name] for name in data.names}


def predict(model, tokenizer, data, task: str, rows: Sequence[dict], head: str, max_length: int,
            batch_size: int = 16, forced_expert: Optional[int] = None) -> List[int]:
    """The predicted label index (within the task's own labels) of each row. forced_expert: a TT-LoRA MoE
    with every sequence sent to that expert (oracle routing) instead of the router's choice."""
    from ..train.evaluate import encoder_predictions, score_choices

    if head == "classification":
        return encoder_predictions(model, tokenizer, list(rows), data, max_length, batch_size)
    spec = data.specs[task]
    choices = [" " + v for v in spec.verbalizers]
    forced = None if forced_expert is None else [forced_expert] * len(rows)
    scores = score_choices(model, tokenizer, [r["prompt"] for r in rows], [choices] * len(rows), max_length,
                           batch_size, forced_experts=forced)
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


def score(model, tokenizer, tasks: Sequence[Any], head: str, max_length: int, batch_size: int = 16,
          limit: Optional[int] = None, progress: bool = True) -> Dict[str, Dict[str, Any]]:
    """{task: {"accuracy", "low", "high", "correct", "n", "hits"}} on each task's test split (or its first
    `limit` examples). hits: one bool per scored example, in split order."""
    from tqdm.auto import tqdm

    model.eval()
    data, per_task = test_rows(tasks, head)
    out: Dict[str, Dict[str, Any]] = {}
    for task in tqdm(data.names, desc="score", disable=not progress, leave=False):
        rows = per_task[task][:limit] if limit else per_task[task]
        predictions = predict(model, tokenizer, data, task, rows, head, max_length, batch_size)
        labels = [int(r["label"]) for r in rows]
        accuracy = accuracy_with_interval(predictions, labels)
        out[task] = {"accuracy": accuracy.value, "low": accuracy.low, "high": accuracy.high,
                     "correct": accuracy.correct, "n": accuracy.n,
                     "hits": [int(p) == int(r) for p, r in zip(predictions, labels)]}
    return out
