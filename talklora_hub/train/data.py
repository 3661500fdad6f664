"""From task names to batches: resolve and check the tasks, pick examples, tokenize, pad, and lay out
a deterministic batch plan that every process (and every resumed run) agrees on.

Causal LMs: input = prompt tokens + target tokens + EOS, labels -100 on the prompt (and padding),
right padding. A prompt longer than its budget keeps its head (the instruction) and its tail (the
answer cue, e.g. "Spam:"), dropping the middle. Encoders: the text (a single task) or the prompt (a
mixture: the instruction tells the tasks apart), truncated, with a label in the joint label space
(each task's labels offset by the labels of the tasks before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..data.splits import unit_hash
from ..modeling.adapter_settings import config_error

REQUIRED_COLUMNS = ("id", "text", "prompt", "target")


# ---- tasks -------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """The resolved tasks of a run.

    names: task names in order (task id = index); specs: {name: TaskSpec};
    splits: {split: list of example dicts (id, task, task_name, text, prompt, target, answer, label)};
    label_offsets: {name: first joint label id} for classification heads; label_names: the joint
    label names ("task:label" for mixtures).
    """

    names: List[str]
    specs: Dict[str, Any]
    splits: Dict[str, List[Dict[str, Any]]]
    label_offsets: Dict[str, int]
    label_names: List[str]

    @property
    def kinds(self) -> Dict[str, str]:
        return {name: spec.kind for name, spec in self.specs.items()}


def _spec_for(name: str, splits=None):
    """The registered TaskSpec of a task; for an unregistered (name, DatasetDict) pair, one derived
    from the data (labels from its ClassLabel, verbalizers from its answers)."""
    from ..data.tasks import TASKS, get_task

    if splits is None or name in TASKS:
        return get_task(name)  # ValueError listing the registered tasks for an unknown name
    return _derived_spec(name, splits)


def _derived_spec(name: str, splits):
    from datasets import ClassLabel

    from ..data.metrics import normalize_number
    from ..data.spec import TaskSpec

    first = next((ds for ds in splits.values() if len(ds)), next(iter(splits.values()), None))
    if first is None:
        raise config_error("tasks", f"task {name!r} must have at least one split", dict(splits),
                           "build it with load_task_from_dataset.")
    feature = first.features.get("label")
    if isinstance(feature, ClassLabel):
        verbalizers = list(feature.names)
        if "answer" in first.column_names:
            for ds in splits.values():
                for label, answer in zip(ds["label"], ds["answer"]):
                    verbalizers[label] = answer
        return TaskSpec(name=name, source="custom", description="derived from the data", template="{text}",
                        label_names=tuple(feature.names), verbalizers=tuple(verbalizers))
    answers = [a for ds in splits.values() if "answer" in ds.column_names for a in ds["answer"]]
    kind = "number" if answers and all(normalize_number(str(a)) is not None for a in answers) else "text"
    return TaskSpec(name=name, source="custom", description="derived from the data", template="{text}",
                    answer_kind=kind)


def _check_columns(name: str, splits, head: str, spec) -> None:
    for split, ds in splits.items():
        columns = list(ds.column_names)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise config_error("tasks", f"task {name!r} split {split!r} must have the columns {list(REQUIRED_COLUMNS)} "
                               f"(missing {missing})", columns,
                               "build the DatasetDict with talklora_hub.data.load_task_from_dataset.")
        needs_label = head == "classification" or spec.kind == "classification"
        if needs_label and "label" not in columns:
            why = ("a classification head needs integer labels" if head == "classification"
                   else f"task {name!r} is a classification task")
            raise config_error("tasks", f"task {name!r} split {split!r} must have a 'label' column ({why})", columns,
                               "pass label_column= to load_task_from_dataset, or pick a classification task.")
        if spec.kind == "generation" and "answer" not in columns:
            raise config_error("tasks", f"generation task {name!r} split {split!r} must have an 'answer' column",
                               columns, "pass answer_column= to load_task_from_dataset.")


def resolve_tasks(tasks: Sequence[Any], head: str, seed: int, max_train: Optional[int], max_eval: Optional[int],
                  eval_split: str, cache_dir=None, need_train: bool = True) -> TaskData:
    """Loads, checks and mixes the tasks, and keeps at most max_train / max_eval examples per task
    (chosen by a seeded hash of the id, so a task's eval examples are the same alone and in a mixture)."""
    from ..data.mixing import mix_tasks
    from ..data.tasks import load_task

    pairs, specs = [], {}
    for item in tasks:
        name, splits = (item, None) if isinstance(item, str) else item
        spec = _spec_for(name, splits)
        if splits is None:
            splits = load_task(name, cache_dir)
        if not hasattr(splits, "items"):
            raise config_error("tasks", f"the data of task {name!r} must be a DatasetDict", type(splits).__name__,
                               "pass the DatasetDict load_task_from_dataset returned.")
        if head == "classification" and spec.kind != "classification":
            raise config_error("tasks", f"task {name!r} is a generation task without a 'label' column; a "
                               "classification head (encoder base) needs labels", name,
                               "train generation tasks on a causal LM base, or pick a classification task.")
        _check_columns(name, splits, head, spec)
        specs[name] = spec
        pairs.append((name, splits))
    names = [name for name, _ in pairs]
    if len(pairs) == 1 and sum(len(ds) for ds in pairs[0][1].values()) == 0:
        name, splits = pairs[0]
        raise config_error("tasks", f"task {name!r} must have examples", {s: len(d) for s, d in splits.items()},
                           "pass a non-empty dataset (for built-in tasks run `talklora-hub data fetch`).")
    mixed = mix_tasks(pairs, seed=seed)  # raises when a mixture has no examples at all
    out = {}
    for split in ("train", "validation", "test"):
        rows = mixed[split].to_list() if split in mixed else []
        limit = max_train if split == "train" else max_eval
        out[split] = _cap_per_task(rows, limit, seed, split)
    if need_train:
        sizes = {name: sum(1 for r in out["train"] if r["task_name"] == name) for name in names}
        empty = [name for name, n in sizes.items() if n == 0]
        if empty:
            total = {name: {s: len(d) for s, d in splits.items()} for name, splits in pairs}
            raise config_error("tasks", f"every task needs training examples; {empty} has none in its train split "
                               f"(after max_train_examples={max_train})", total,
                               "pass data with a non-empty train split, or raise max_train_examples.")
    offsets, label_names, start = {}, [], 0
    for name in names:
        spec = specs[name]
        offsets[name] = start
        if spec.kind == "classification":
            prefix = f"{name}:" if len(names) > 1 else ""
            label_names += [prefix + label for label in spec.label_names]
            start += len(spec.label_names)
    return TaskData(names, specs, out, offsets, label_names)


def _cap_per_task(rows: List[dict], limit: Optional[int], seed: int, split: str) -> List[dict]:
    if limit is None:
        return rows
    keep = set()
    by_task: Dict[str, List[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task_name"], []).append(row)
    for task_rows in by_task.values():
        task_rows = sorted(task_rows, key=lambda r: unit_hash("train-cap" if split == "train" else "eval-cap", seed, r["id"]))
        keep.update(r["id"] for r in task_rows[:limit])
    return [r for r in rows if r["id"] in keep]


# ---- tokenization ------------------------------------------------------------------------------
def fit_prompt(prompt_ids: List[int], budget: int) -> List[int]:
    """At most `budget` tokens of a prompt: its head and its last quarter (at most 48 tokens)."""
    if len(prompt_ids) <= budget:
        return prompt_ids
    if budget <= 0:
        return []
    tail = min(48, max(1, budget // 4))
    return prompt_ids[:budget - tail] + prompt_ids[len(prompt_ids) - tail:]


def eos_id(tokenizer) -> Optional[int]:
    return tokenizer.eos_token_id


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def encode_prompts(tokenizer, prompts: Sequence[str]) -> List[List[int]]:
    return tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []


def encode_targets(tokenizer, targets: Sequence[str]) -> List[List[int]]:
    return tokenizer(list(targets), add_special_tokens=False)["input_ids"] if targets else []


def join_causal(prompt: List[int], target: List[int], eos: Optional[int], max_length: int) -> Tuple[List[int], int]:
    """(input ids, prompt length): the fitted prompt, the target and EOS, at most max_length tokens."""
    answer = list(target) + ([eos] if eos is not None else [])
    keep = min(len(answer), max(max_length - len(prompt), max_length // 2))
    answer = answer[:keep]
    prompt = fit_prompt(prompt, max_length - len(answer))
    return prompt + answer, len(prompt)


@dataclass
class Encoded:
    """One tokenized example: input ids, the prompt length (causal), the label (classification)."""

    input_ids: List[int]
    prompt_len: int
    label: int
    task: int


def encode_examples(rows: List[dict], tokenizer, head: str, max_length: int, data: TaskData) -> List[Encoded]:
    if head == "classification":
        field = "text" if len(data.names) == 1 else "prompt"
        ids = tokenizer([r[field] for r in rows], truncation=True, max_length=max_length)["input_ids"]
        return [Encoded(i, len(i), data.label_offsets[r["task_name"]] + int(r["label"]), int(r["task"]))
                for i, r in zip(ids, rows)]
    prompts = encode_prompts(tokenizer, [r["prompt"] for r in rows])
    targets = encode_targets(tokenizer, [r["target"] for r in rows])
    eos = eos_id(tokenizer)
    out = []
    for p, t, r in zip(prompts, targets, rows):
        ids, plen = join_causal(p, t, eos, max_length)
        out.append(Encoded(ids, plen, int(r.get("label", -1)), int(r["task"])))
    return out


class LazyEncoded:
    """encode_examples on demand, in chunks, cached: a 20-step run on a 5k-example task tokenizes only
    the examples it reads. Item i is exactly encode_examples(rows, ...)[i]."""

    def __init__(self, rows: List[dict], tokenizer, head: str, max_length: int, data: TaskData, chunk: int = 256):
        self.rows, self.tokenizer, self.head, self.max_length, self.data = rows, tokenizer, head, max_length, data
        self.chunk = chunk
        self.cache: Dict[int, Encoded] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Encoded:
        if index not in self.cache:
            start = index - index % self.chunk
            block = self.rows[start:start + self.chunk]
            for offset, item in enumerate(encode_examples(block, self.tokenizer, self.head, self.max_length, self.data)):
                self.cache[start + offset] = item
        return self.cache[index]


def collate(items: Sequence[Encoded], head: str, pad: int) -> Dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels, and (causal) prompt_mask, task."""
    width = max(len(e.input_ids) for e in items)
    batch = len(items)
    ids = torch.full((batch, width), pad, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    prompt_mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        prompt_mask[row, :e.prompt_len] = 1
        labels[row, e.prompt_len:n] = ids[row, e.prompt_len:n]
    out = {"input_ids": ids, "attention_mask": mask, "task": torch.tensor([e.task for e in items])}
    if head == "classification":
        out["labels"] = torch.tensor([e.label for e in items])
    else:
        out["labels"] = labels
        out["prompt_mask"] = prompt_mask
    return out


# ---- batch plan --------------------------------------------------------------------------------
class BatchPlan:
    """Which examples each process reads at each step, a pure function of (seed, step).

    Each epoch is a seeded permutation of the examples cut into global batches of
    batch_size * grad_accum * num_processes; a last short batch is filled from the epoch's start, so
    every process always gets full micro-batches. Process p reads the p-th slice of the global batch,
    as grad_accum micro-batches. Resuming at step s reads exactly what the uninterrupted run read.
    """

    def __init__(self, num_examples: int, batch_size: int, grad_accum: int, num_processes: int, process_index: int,
                 seed: int):
        self.n = num_examples
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.num_processes, self.process_index = num_processes, process_index
        self.seed = seed
        self.global_batch = batch_size * grad_accum * num_processes
        self.steps_per_epoch = max(1, math.ceil(num_examples / self.global_batch))
        self._epoch, self._perm = None, None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _permutation(self, epoch: int) -> List[int]:
        if self._epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=generator).tolist()
            need = self.steps_per_epoch * self.global_batch
            while len(perm) < need:
                perm += perm[: need - len(perm)]
            self._epoch, self._perm = epoch, perm
        return self._perm

    def micro_batches(self, step: int) -> List[List[int]]:
        """Example indices of this process's grad_accum micro-batches at a (0-based) step."""
        perm = self._permutation(self.epoch_of(step))
        start = (step % self.steps_per_epoch) * self.global_batch
        per_process = self.batch_size * self.grad_accum
        mine = perm[start + self.process_index * per_process: start + (self.process_index + 1) * per_process]
        return [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.grad_accum)]
