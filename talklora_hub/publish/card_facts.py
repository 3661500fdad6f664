"""CardFacts: what a model card says about how a model was trained and how well it does, as one typed record.

Two producers fill it: train_facts.facts_from_train_result (a talklora_hub.train result, as train_result.json
holds it) and talklora_hub.jobs.zoo_build.card_result (a shipped zoo entry's record). cards.py renders it, and
reads nothing else about the run, so a card never depends on which producer made its facts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

# The facts every card with a result shows; the rest are shown where a producer has them.
REQUIRED = ("tasks", "training", "evaluation")


@dataclasses.dataclass(frozen=True)
class CardFacts:
    """The facts of one trained model for its card. Required: tasks, training, evaluation (an error names the
    one that is missing); the others default to "not known", and the card then leaves their part out."""

    tasks: Optional[Tuple[str, ...]] = None
    """The task names the model was trained on, in training order (the zoo index lists them)."""

    training: Optional[Dict[str, Any]] = None
    """The Training table, {row label: figure} in display order ("learning rate": 3e-4, ...). Rows whose
    figure is None or a local path are left out when rendered."""

    evaluation: Optional[Tuple[Dict[str, Any], ...]] = None
    """The evaluation rows, each {task, split, metric, value, count, dataset}, optionally low/high (a 95%
    interval already computed) and model_index (False keeps a row out of the card's metadata). May be empty."""

    task_details: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Per task, what talklora_hub.data.spec.describe_tasks says (kind, metric, template, label names, answer
    words, label counts): the card's Task section and the majority-class baseline. Empty where not recorded."""

    head: Optional[str] = None
    """The model's head: "causal", or "classification" for an encoder's label head (it reads the text alone)."""

    base_name: Optional[str] = None
    """The base as the run named it (its --base): a Hub repo id, a bootstrapped base's name or a local folder."""

    base_repo_id: Optional[str] = None
    """The base's Hub repo id as recorded by the run (--base-repo-id, or the repo the zoo published it to)."""

    datasets: Optional[Tuple[str, ...]] = None
    """The Hub dataset repos of the tasks, for the card's `datasets:` metadata."""

    comparison: Optional[Dict[str, Any]] = None
    """Per task, the baselines beside the model's accuracy with their margins (the zoo's comparison)."""

    result: Optional[Dict[str, Any]] = None
    """The producer's own record, published beside the model as train_result.json (never rendered)."""

    def __post_init__(self):
        for name in REQUIRED:
            if getattr(self, name) is None:
                raise ValueError(f"`CardFacts.{name}` is a required card fact ({_MEANING[name]}), got None. Fix: "
                                 f"fill it from the run's result (train_facts.facts_from_train_result does).")
        _check("tasks", self.tasks, (list, tuple), "a list of task names, e.g. ['spam']", items=str)
        _check("training", self.training, dict, "a dict {row label: figure}")
        _check("evaluation", self.evaluation, (list, tuple), "a list of row dicts {task, split, metric, value, ...}")
        _check("task_details", self.task_details, dict, "a dict {task: describe_tasks facts}")
        for name in ("tasks", "evaluation", "datasets"):  # frozen all the way down to the sequence
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        missing = [i for i, row in enumerate(self.evaluation) if not _ROW_KEYS <= set(row)]
        if missing:
            raise ValueError(f"`CardFacts.evaluation[{missing[0]}]` must have the keys {sorted(_ROW_KEYS)}, got "
                             f"{sorted(self.evaluation[missing[0]])}. Fix: give every row its task, split, metric, "
                             "value and count.")

    def filled(self) -> Tuple[str, ...]:
        """The names of the facts this record has (not None, not empty), in field order."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) not in (None, {}, (), []))


_MEANING = {"tasks": "the task names the model was trained on", "training": "the card's Training table",
            "evaluation": "the card's evaluation rows, possibly none"}
_ROW_KEYS = {"task", "split", "metric", "value", "count"}


def _check(name: str, value: Any, kind, shape: str, items: Optional[type] = None) -> None:
    """Raises unless value is a `kind` (and, given `items`, a collection of `items` only)."""
    if not isinstance(value, kind) or (items is not None and not all(isinstance(item, items) for item in value)):
        raise ValueError(f"`CardFacts.{name}` must be {shape}, got {value!r}. Fix: pass it in that shape.")


def as_card_facts(result: Optional[Any]) -> Optional[CardFacts]:
    """The facts for a card from what a publish call was given: a CardFacts as is, a talklora_hub.train result
    dict (TrainResult.to_dict(), train_result.json) through facts_from_train_result, None as None."""
    if result is None or isinstance(result, CardFacts):
        return result
    if isinstance(result, dict):
        from .train_facts import facts_from_train_result

        return facts_from_train_result(result)
    raise TypeError(f"`result` must be a CardFacts or a talklora_hub.train result dict (TrainResult.to_dict()), got "
                    f"{type(result).__name__}. Fix: pass result.to_dict(), or build CardFacts(...).")

