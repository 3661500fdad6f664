"""TaskSpec: what a task is (template, labels, verbalizers, metric) and how raw records become a DatasetDict.

A loader turns a raw source into records, plain dicts with at least `id` and `text`, plus `label`
(a label name) for classification or `answer` (and optionally `solution`) for generation, and
optionally `group` (examples sharing a group always share a split). TaskSpec.build then
deduplicates, subsamples, splits and formats them, the same way for every task and for user data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics
from .splits import SPLITS, assign_splits, cap_per_key, deduplicate
from .text import normalize_text

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class TaskSpec:
    """One task: a source, how to prompt a causal LM for it, and how to score the answers.

    template: prompt with a `{text}` slot (and optionally `{choices}`, the verbalizers joined
    with " or "). For classification, the target is " " + verbalizers[label]; for generation it is
    " " + solution + "\\n#### " + answer when a solution exists, else " " + answer.
    answer_kind: "number" scores generation by the final number (GSM8K), "text" by normalized text.
    """

    name: str
    source: str
    description: str
    template: str
    label_names: tuple[str, ...] = ()
    verbalizers: tuple[str, ...] = ()
    answer_kind: str = "number"
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0
    max_per_label: int | None = None
    max_per_group: int | None = None
    loader: Callable[[Path], list[dict]] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if "{text}" not in self.template:
            raise ValueError(f"template: must contain the slot {{text}}; got {self.template!r}. Add {{text}} where the input goes.")
        if self.label_names and len(self.verbalizers) != len(self.label_names):
            raise ValueError(
                f"verbalizers: need one per label ({len(self.label_names)}: {list(self.label_names)}); "
                f"got {list(self.verbalizers)}. Pass one answer word per label, in label order."
            )
        if len({normalize_text(v) for v in self.verbalizers}) != len(self.verbalizers):
            raise ValueError(f"verbalizers: must be distinct after normalization; got {list(self.verbalizers)}.")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9 or min(self.split_fractions) < 0:
            raise ValueError(f"split_fractions: must be 3 non-negative numbers summing to 1; got {self.split_fractions}.")

    @property
    def kind(self) -> str:
        """"classification" when the task has labels, else "generation"."""
        return "classification" if self.label_names else "generation"

    @property
    def metric_name(self) -> str:
        if self.kind == "classification":
            return "accuracy"
        return "exact_match_final_number" if self.answer_kind == "number" else "exact_match"

    def format_prompt(self, text: str) -> str:
        return self.template.format(text=text, choices=" or ".join(self.verbalizers))

    def format_target(self, record: dict) -> str:
        if self.kind == "classification":
            return " " + self.verbalizers[self.label_names.index(record["label"])]
        solution = (record.get("solution") or "").strip()
        return " " + (f"{solution}\n#### {record['answer']}" if solution else str(record["answer"]))

    def parse_prediction(self, completion: str) -> int:
        """Label index a generated completion names: its first word if a verbalizer, else the earliest
        verbalizer mentioned; -1 when none is (scored as wrong)."""
        words = normalize_text(completion).split()
        verbal = [normalize_text(v) for v in self.verbalizers]
        if words:
            for index, v in enumerate(verbal):
                if words[: len(v.split())] == v.split():
                    return index
        padded = f" {' '.join(words)} "
        hits = [(padded.find(f" {v} "), i) for i, v in enumerate(verbal) if f" {v} " in padded]
        return min(hits)[1] if hits else -1

    def compute_metrics(self, predictions: Sequence, references: Sequence) -> dict:
        """Score predictions: label ints or completion strings (classification), completions (generation).

        references are label ints or label names (classification) or answer strings (generation).
        Returns {metric_name: value, "n": count}.
        """
        if self.kind == "classification":
            preds = [p if isinstance(p, int) else self.parse_prediction(str(p)) for p in predictions]
            refs = [r if isinstance(r, int) else self.label_names.index(r) for r in references]
            value = metrics.accuracy(preds, refs)
        elif self.answer_kind == "number":
            value = metrics.final_number_exact_match([str(p) for p in predictions], [str(r) for r in references])
        else:
            value = metrics.text_exact_match([str(p) for p in predictions], [str(r) for r in references])
        return {self.metric_name: value, "n": len(references)}

    def features(self):
        """The datasets.Features every split of this task has (also when a split is empty)."""
        from datasets import ClassLabel, Features, Value

        columns = {"id": Value("string"), "group": Value("string"), "text": Value("string")}
        if self.kind == "classification":
            columns["label"] = ClassLabel(names=list(self.label_names))
            columns["answer"] = Value("string")
        else:
            columns["answer"] = Value("string")
            columns["solution"] = Value("string")
        columns["prompt"] = Value("string")
        columns["target"] = Value("string")
        return Features(columns)

    def build(self, records: list[dict]):
        """Deduplicate, cap, split and format records into a DatasetDict(train, validation, test)."""
        from datasets import Dataset, DatasetDict

        records = [{**r, "group": str(r.get("group") or r["id"])} for r in records if str(r.get("text") or "").strip()]
        if self.kind == "classification":
            unknown = sorted({str(r["label"]) for r in records} - set(self.label_names))
            if unknown:
                raise ValueError(f"label: values must be among {list(self.label_names)}; got {unknown[:5]} in task {self.name!r}.")
        records, _ = deduplicate(records, "label" if self.kind == "classification" else None)
        records = cap_per_key(records, "group", self.max_per_group, self.seed) if self.max_per_group else records
        if self.kind == "classification":
            records = cap_per_key(records, "label", self.max_per_label, self.seed)
        splits = assign_splits(records, self.split_fractions, self.seed)
        features = self.features()
        out = {}
        for split in SPLITS:
            rows = {name: [] for name in features}
            for r in splits[split]:
                # Task-prefixed ids stay unique in a mixture of tasks that share a source.
                rows["id"].append(f"{self.name}:{r['id']}")
                rows["group"].append(r["group"])
                rows["text"].append(r["text"])
                if self.kind == "classification":
                    label = self.label_names.index(r["label"])
                    rows["label"].append(label)
                    rows["answer"].append(self.verbalizers[label])
                else:
                    rows["answer"].append(str(r["answer"]))
                    rows["solution"].append(str(r.get("solution") or ""))
                rows["prompt"].append(self.format_prompt(r["text"]))
                rows["target"].append(self.format_target(r))
            out[split] = Dataset.from_dict(rows, features=features)
        return DatasetDict(out)


def describe_tasks(specs: dict, splits: dict, eval_split: str) -> dict:
    """What a model card shows of each task: {task: {kind, metric, template, label_names, verbalizers,
    train_label_counts, eval_label_counts}}. specs: {name: TaskSpec}; splits: {split: rows with task_name and
    label (the task's own label index)}, the examples a run trained on and scored."""
    out = {}
    for name, spec in specs.items():
        facts = {"kind": spec.kind, "metric": spec.metric_name, "template": spec.template}
        if spec.kind == "classification":
            facts.update(label_names=list(spec.label_names), verbalizers=list(spec.verbalizers))
            for key, split in (("train_label_counts", "train"), ("eval_label_counts", eval_split)):
                counts = [0] * len(spec.label_names)
                for row in splits.get(split, []):
                    if row.get("task_name") == name and 0 <= int(row.get("label", -1)) < len(counts):
                        counts[int(row["label"])] += 1
                facts[key] = counts
        out[name] = facts
    return out
