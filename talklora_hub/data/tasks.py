"""The task registry: built-in tasks over the fetched sources, and `load_task` to get their splits.

    >>> from talklora_hub.data.tasks import load_task, get_task
    >>> splits = load_task("spam")              # DatasetDict(train, validation, test)
    >>> spec = get_task("spam")                 # template, labels, verbalizers, metric
    >>> spec.compute_metrics(["yes", "no"], [1, 1])
    {'accuracy': 0.5, 'n': 2}

Every split has columns id, group, text, prompt, target, answer, plus label (ClassLabel) for
classification or solution for generation. Built datasets are saved under <cache>/tasks/ keyed by
a fingerprint of the task definition, the fetched archives and this package's data code, so a
second load is a memory-mapped read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import fields
from functools import partial
from pathlib import Path

from . import cache
from .loaders.chatterbot import load_chatterbot
from .loaders.fortunes import load_fortunes
from .loaders.gsm8k import load_gsm8k
from .loaders.sotu import era_label, load_sotu_paragraphs, party_label
from .loaders.spam import load_spam
from .spec import TaskSpec

FORTUNE_TOPICS = ("computers", "food", "law", "politics", "science", "sports")
SOTU_ERAS = (("1790-1860", 1790, 1860), ("1861-1932", 1861, 1932), ("1933-1980", 1933, 1980), ("1981-2021", 1981, 2100))
CHATTER_TOPICS = ("ai", "coding", "emotion", "literature", "psychology", "trivia")
# From the New Deal on, the two parties are the modern ones; earlier "Democratic" meant something else.
SOTU_PARTY_FROM = 1933

_BUILTIN = (
    TaskSpec(
        name="spam", source="spam-assassin",
        description="Is a mail spam? SpamAssassin public corpus, subject + body without headers.",
        template="Is the following email spam? Answer yes or no.\n\n{text}\n\nSpam:",
        label_names=("ham", "spam"), verbalizers=("no", "yes"), loader=load_spam,
    ),
    TaskSpec(
        name="fortune_topic", source="fortunes",
        description=f"Topic of a Debian fortune cookie: {', '.join(FORTUNE_TOPICS)} (at most 300 each).",
        template="Which topic is this quotation from: computers, food, law, politics, science or sports?\n\n{text}\n\nTopic:",
        label_names=FORTUNE_TOPICS, verbalizers=FORTUNE_TOPICS, max_per_label=300,
        loader=partial(load_fortunes, topics=FORTUNE_TOPICS),
    ),
    TaskSpec(
        name="sotu_party", source="sotu",
        description=f"Party of the president, from a State of the Union paragraph, {SOTU_PARTY_FROM}-2021; split by speech year.",
        template="This paragraph is from a State of the Union address. Was the president a Democrat or a Republican?\n\n{text}\n\nParty:",
        label_names=("Democratic", "Republican"), verbalizers=("Democrat", "Republican"), max_per_group=40,
        loader=partial(load_sotu_paragraphs, label_of=party_label(SOTU_PARTY_FROM)),
    ),
    TaskSpec(
        name="sotu_era", source="sotu",
        description="Era of a State of the Union paragraph, 1790-2021 in four eras; split by speech year.",
        template=("This paragraph is from a State of the Union address. When was it given: early (1790-1860), "
                  "industrial (1861-1932), midcentury (1933-1980) or modern (1981 on)?\n\n{text}\n\nEra:"),
        label_names=tuple(e[0] for e in SOTU_ERAS), verbalizers=("early", "industrial", "midcentury", "modern"),
        max_per_group=20, loader=partial(load_sotu_paragraphs, label_of=era_label(SOTU_ERAS)),
    ),
    TaskSpec(
        name="gsm8k", source="gsm8k",
        description="Grade-school math word problems (GSM8K test set) scored by the final number.",
        template="Solve the problem. End with '#### ' and the final number.\n\nQuestion: {text}\nAnswer:",
        answer_kind="number", split_fractions=(0.7, 0.1, 0.2), loader=load_gsm8k,
    ),
    TaskSpec(
        name="chatter_topic", source="chatterbot-corpus",
        description=f"Topic of a short ChatterBot dialogue: {', '.join(CHATTER_TOPICS)}.",
        template="What is this conversation about: ai, coding, emotion, literature, psychology or trivia?\n\n{text}\n\nTopic:",
        label_names=CHATTER_TOPICS, verbalizers=CHATTER_TOPICS,
        loader=partial(load_chatterbot, topics=CHATTER_TOPICS),
    ),
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _BUILTIN}


def list_tasks() -> list[str]:
    """Names of the registered tasks, built-in first, then any registered at run time."""
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """The TaskSpec registered under name; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(
            f"task: must be a registered task name, one of {list_tasks()}; got {name!r}. "
            "Use one of those, or load your own data with load_task_from_dataset(..., name=...)."
        )
    return TASKS[name]


def register_task(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add a task to the registry for this process (load_task_from_dataset does this for user data)."""
    if any(spec.name == b.name for b in _BUILTIN):
        raise ValueError(f"name: must not be a built-in task name {[b.name for b in _BUILTIN]}; got {spec.name!r}. Pick another name.")
    if spec.name in TASKS and not replace and TASKS[spec.name] != spec:
        raise ValueError(f"name: {spec.name!r} is already registered with another definition; pick another name or pass replace=True.")
    TASKS[spec.name] = spec
    return spec


def load_task(name: str, cache_dir=None, source_dir=None, use_cache: bool = True):
    """The DatasetDict(train, validation, test) of a built-in task.

    source_dir: folder holding the raw source files (default: the fetched copy in the cache); when
    given, nothing is read from or written to the task cache. use_cache=False rebuilds from the source.
    """
    spec = get_task(name)
    if spec.loader is None:
        raise ValueError(f"task: {name!r} has no raw-source loader (it was built from a dataset); keep the DatasetDict load_task_from_dataset returned.")
    root = Path(source_dir) if source_dir is not None else cache.source_dir(spec.source, cache_dir)
    if not root.exists():
        raise FileNotFoundError(
            f"task {name!r} needs the {spec.source!r} source, not found in {root}. Run `talklora-hub data fetch {spec.source}` "
            "or pass source_dir= pointing at the raw files."
        )
    cached = _cache_path(spec, cache_dir) if (use_cache and source_dir is None) else None
    from datasets import DatasetDict

    if cached is not None and (cached / "dataset_dict.json").is_file():
        return DatasetDict.load_from_disk(str(cached))
    splits = spec.build(spec.loader(root))
    if cached is not None:
        for stale in cached.parent.glob(f"{spec.name}-*"):  # builds of older definitions, half-written ones
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cached.with_name(cached.name + ".tmp")
        splits.save_to_disk(str(tmp))
        tmp.rename(cached)
        splits = DatasetDict.load_from_disk(str(cached))
    return splits


def task_sizes(name: str, cache_dir=None, source_dir=None) -> dict[str, int]:
    """{split: number of examples} of a built-in task."""
    return {split: len(ds) for split, ds in load_task(name, cache_dir, source_dir).items()}


def _cache_path(spec: TaskSpec, cache_dir) -> Path:
    """<cache>/tasks/<name>-<fingerprint>: the fingerprint changes with the spec, the fetched
    archives' sha256 and the source code of this package's data modules, so stale builds are never read."""
    definition = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "loader"}
    archives = cache.read_manifest(cache_dir)["sources"].get(spec.source, {}).get("files", [])
    digest = hashlib.sha256(json.dumps([definition, archives], sort_keys=True, default=str).encode())
    package = Path(__file__).parent
    for path in sorted([*package.glob("*.py"), *package.glob("loaders/*.py")]):
        digest.update(path.read_bytes())
    return cache.tasks_dir(cache_dir) / f"{spec.name}-{digest.hexdigest()[:16]}"
