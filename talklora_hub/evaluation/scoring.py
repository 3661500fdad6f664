"""Scoring a model on its tasks' test splits, one prediction per example, with 95% intervals: the one home of
accuracy-with-hits scoring (the zoo's entries, the baselines and the benchmarks all score through it).

Causal LMs are scored by constrained choice (each verbalizer's summed log-probability after the prompt,
as in training); encoders by the argmax over their task's slice of the joint label logits: both are
talklora_hub.train.evaluate.predict_labels, the code a training run evaluates itself with. The test rows come
in split order, so `limit` takes a fixed slice (the first examples), the same every time.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .intervals import Accuracy, accuracy_with_interval


def accuracy_and_hits(predictions: Sequence[int], labels: Sequence[int]) -> Tuple[Accuracy, List[bool]]:
    """The accuracy of predictions against labels with its 95% Wilson interval, and the per-example hits (one
    bool per example, True where the prediction is right, in the given order) that paired comparisons need."""
    accuracy = accuracy_with_interval(predictions, labels)
    return accuracy, [int(p) == int(r) for p, r in zip(predictions, labels)]


def test_rows(tasks: Sequence[Any], head: str, split: str = "test"):
    """The resolved tasks (TaskData) and, per task, its rows of `split` in split order. tasks: names or
    (name, DatasetDict) pairs, as TrainConfig takes them."""
    from ..train.data import resolve_tasks

    data = resolve_tasks(list(tasks), head, 0, None, None, split, need_train=False)
    rows = data.splits[split]
    return data, {name: [r for r in rows if r["task_name"] == name] for name in data.names}


def score(model, tokenizer, tasks: Sequence[Any], head: str, max_length: int, batch_size: int = 16,
          limit: Optional[int] = None, progress: bool = True, split: str = "test") -> Dict[str, Dict[str, Any]]:
    """{task: {"accuracy", "low", "high", "correct", "n", "hits"}} on each task's `split` (the test split unless a
    choice is being made: then "validation"), or its first `limit` examples. hits: one bool per scored example,
    in split order."""
    from tqdm.auto import tqdm

    from ..train.evaluate import predict_labels

    model.eval()
    data, per_task = test_rows(tasks, head, split)
    out: Dict[str, Dict[str, Any]] = {}
    for task in tqdm(data.names, desc="score", disable=not progress, leave=False):
        rows = per_task[task][:limit] if limit else per_task[task]
        if not rows:
            raise ValueError(f"task {task!r} has no {split} examples to score. Fix: give the task a {split} split, "
                             "or score another split.")
        predictions = predict_labels(model, tokenizer, data, task, rows, head, max_length, batch_size)
        accuracy, hits = accuracy_and_hits(predictions, [int(r["label"]) for r in rows])
        out[task] = {"accuracy": accuracy.value, "low": accuracy.low, "high": accuracy.high,
                     "correct": accuracy.correct, "n": accuracy.n, "hits": hits}
    return out
