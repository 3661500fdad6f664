"""Your own data as a task: `load_own_task` turns a file (or a datasets dataset) into a checked task.

    >>> name, splits = load_own_task(OwnData(train_file="data.csv", text_column="sentence", label_column="topic"))
    >>> name, {s: len(d) for s, d in splits.items()}
    ('data', {'train': 96, 'validation': 12, 'test': 12})

The data go through load_task_from_dataset, so deduplication, hash splits, prompt templates and
metrics are the built-in tasks'. A row's split is a hash of its normalized text, so reordering or
appending rows never moves an example between splits. TrainConfig calls this while it is built:
every problem below is reported before any model is loaded, naming the command-line argument, the
rule, the value received and the fix.

Checked: the arguments (one source, a {text} slot in the template, a task name that is no built-in
task's); each file (talklora_hub.data.user_files: present, a known format, not empty, UTF-8, parseable,
not a header alone); the columns (present, with the real ones listed); the labels (none missing, at
least two classes); the size (enough distinct rows for every split to get examples, counting what
deduplication removes); and, once built, that no split is empty and train holds two classes.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath

from .custom import _as_splits, default_target_columns, load_task_from_dataset
from .spec import DEFAULT_FRACTIONS
from .splits import SPLITS, deduplicate
from .text import normalize_text
from .user_files import Table, data_error, read_table

# A held-out split should expect at least this many examples; fewer rows than that makes an empty split likely.
MIN_EXPECTED_PER_SPLIT = 5
FILE_ARGUMENTS = {"train": "--train-file", "validation": "--validation-file", "test": "--test-file"}


@dataclass(frozen=True)
class OwnData:
    """Where the user's data are and how to read them (TrainConfig's fields of the same names).

    train_file (+ optional validation_file, test_file) or dataset (a datasets name, or a local folder
    written by save_to_disk); text_column; label_column (classification) or answer_column (generation),
    by default a column named "label", else "answer"; task_name (default: the file's stem or the
    dataset's folder name); template: the prompt, with a {text} slot (and optionally {choices}).
    """

    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    dataset: str | None = None
    text_column: str = "text"
    label_column: str | None = None
    answer_column: str | None = None
    task_name: str | None = None
    template: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.train_file or self.dataset)

    @property
    def source_argument(self) -> str:
        return "--train-file" if self.train_file else "--dataset"


def own_task_name(own: OwnData) -> str:
    """--task-name, else the train file's stem or the dataset's last path part, as [a-z0-9_]."""
    if own.task_name:
        return own.task_name
    raw = PurePath(str(own.train_file)).stem if own.train_file else PurePath(str(own.dataset).rstrip("/\\")).name
    name = re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_") or "own_data"
    return name if name[0].isalpha() else f"data_{name}"


def check_arguments(own: OwnData) -> None:
    """The rules between the arguments themselves: nothing is read here."""
    if own.train_file and own.dataset:
        raise data_error("--dataset", "cannot be combined with --train-file (one source of data per run)", own.dataset,
                         "pass either --train-file FILE or --dataset NAME_OR_PATH.")
    for split in ("validation", "test"):
        if getattr(own, f"{split}_file") and not own.train_file:
            raise data_error(FILE_ARGUMENTS[split], "needs --train-file (it adds a split to that file's data)",
                             getattr(own, f"{split}_file"), "pass --train-file too (a --dataset brings its own splits).")
    if own.label_column and own.answer_column:
        raise data_error("--answer-column", "cannot be combined with --label-column (a label classifies, an answer is "
                         "generated)", own.answer_column, "pass only the one your task needs.")
    if not own.text_column:
        raise data_error("--text-column", "must name the column holding the input text", own.text_column,
                         "pass e.g. --text-column sentence.")
    if own.template is not None and "{text}" not in own.template:
        raise data_error("--template", "must contain the slot {text} (where the input goes)", own.template,
                         'pass e.g. --template "Which topic is this about: {choices}?\\n\\n{text}\\n\\nTopic:".')
    if own.task_name is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", own.task_name):
        raise data_error("--task-name", "must start with a letter and hold only letters, digits, _ . -",
                         own.task_name, "pass e.g. --task-name support_tickets.")
    from .tasks import _BUILTIN

    name, builtin = own_task_name(own), [spec.name for spec in _BUILTIN]
    if name in builtin:
        raise data_error("--task-name", f"must not be a built-in task's name {builtin} (your data would replace it)",
                         name, "pass another name, e.g. --task-name my_" + name + ".")


def load_own_task(own: OwnData):
    """(task name, DatasetDict(train, validation, test)) of the user's data, checked; the task is registered."""
    check_arguments(own)
    name = own_task_name(own)
    tables, label_names = _read_source(own)
    text, label, answer = _pick_columns(own, tables)
    target = label or answer
    records = _records(tables, text, target)
    _check_targets(records, "--label-column" if label else "--answer-column", target)
    if label is not None:
        label_names = _check_labels(tables, records, label, label_names)
    _check_size(records, set(tables), own, label is not None)
    splits = load_task_from_dataset(
        _as_dataset_dict(records, label is not None), name=name, text_column="text",
        label_column="label" if label else None, answer_column="answer" if answer else None, group_column="group",
        label_names=label_names, template=own.template, split_fractions=DEFAULT_FRACTIONS, seed=0)
    _check_built(splits, records, own, label is not None)
    return name, splits


# ---- reading ----------------------------------------------------------------------------------
def _read_source(own: OwnData):
    """({split: Table}, label names the source declares (a ClassLabel) or None)."""
    if own.train_file:
        return {split: read_table(getattr(own, f"{split}_file"), argument) for split, argument in FILE_ARGUMENTS.items()
                if getattr(own, f"{split}_file")}, None
    return _read_dataset(own)


def _read_dataset(own: OwnData):
    """--dataset: a save_to_disk folder, a folder of data files or a Hub name, as {split: Table}."""
    value = str(own.dataset)
    path = Path(value).expanduser()
    if path.is_file():
        raise data_error("--dataset", "must be a dataset name or a folder (a single file goes to --train-file)", value,
                         f"pass --train-file {value}.")
    if not path.exists() and value.startswith((".", "/", "~")):
        raise data_error("--dataset", "must be an existing folder or a datasets name", value,
                         f"check the path (relative paths start at {Path.cwd()}).")
    try:
        pieces = _as_splits(value)
    except ValueError as error:
        reason = str(error).removeprefix("data: ")
        raise data_error("--dataset", "must load with the datasets library as one dataset or a DatasetDict with "
                         "train/validation/test splits", value, f"it did not: {reason}") from None
    label_names = None
    tables = {}
    for split, ds in pieces.items():
        rows = ds.to_list()
        for column, feature in ds.features.items():
            if type(feature).__name__ == "ClassLabel":
                label_names = label_names or {}
                label_names[column] = tuple(feature.names)
                for row in rows:
                    row[column] = feature.int2str(row[column]) if row[column] is not None and row[column] >= 0 else None
        tables[split] = Table(f"{PurePath(value).name} [{split}]", "dataset", list(ds.column_names), rows)
    if not any(t.rows for t in tables.values()):
        raise data_error("--dataset", "must hold at least one row", value, "pass a dataset with examples.")
    return tables, label_names


# ---- columns and labels -----------------------------------------------------------------------
def _pick_columns(own: OwnData, tables: dict):
    """(text column, label column or None, answer column or None), each present in every table."""
    first = tables["train"] if "train" in tables else next(iter(tables.values()))
    for split, table in tables.items():
        if own.text_column not in table.columns:
            raise _missing_column("--text-column", own.text_column, table, split, own)
    label, answer = own.label_column, own.answer_column
    if label is None and answer is None:
        found = default_target_columns(first.columns)
        if found is None:
            others = [c for c in first.columns if c != own.text_column]
            hint = f"pass --label-column {others[0]}" if len(others) == 1 else "pass --label-column COLUMN"
            raise data_error("--label-column", f"is needed: {first.name} has no column named 'label' (or 'answer' "
                             "for generation)", first.columns, f"{hint} (or --answer-column for a generated answer).")
        label, answer = found
    for argument, column in (("--label-column", label), ("--answer-column", answer)):
        if column is None:
            continue
        for split, table in tables.items():
            if column not in table.columns:
                raise _missing_column(argument, column, table, split, own)
    return own.text_column, label, answer


def _missing_column(argument: str, column: str, table: Table, split: str, own: OwnData) -> ValueError:
    close = difflib.get_close_matches(column, table.columns, n=1, cutoff=0.5)
    fix = f"pass {argument} {close[0]!r}." if close else f"pass {argument} with one of those column names."
    if len(table.columns) == 1 and any(sep in table.columns[0] for sep in ";\t|"):
        fix += (f" The header {table.columns[0]!r} looks like one column holding several: save the file with commas "
                "as separators (or name it .tsv if it is tab-separated).")
    source = FILE_ARGUMENTS[split] if own.train_file else "--dataset"
    return data_error(argument, f"must name a column of {table.name} ({source}); its columns are {table.columns}",
                      column, fix)


def _records(tables: dict, text: str, target: str) -> list[dict]:
    """One record per row with a non-empty text: id, split, text, target value (None when empty), where."""
    records = []
    for split, table in tables.items():
        for index, row in enumerate(table.rows):
            value = row.get(text)
            if value is None or not str(value).strip():
                continue
            raw = row.get(target)
            target_value = None if raw is None or not str(raw).strip() else str(raw).strip()
            records.append({"id": f"{split}-{index:07d}", "split": split, "text": str(value).strip(),
                            "target": target_value, "where": f"{table.name} {table.where(index)}"})
    if not records:
        names = ", ".join(t.name for t in tables.values())
        raise data_error("--text-column", "must hold text in at least one row", f"{text!r}: empty in every row of {names}",
                         "point --text-column at the column that holds the input text.")
    return records


def _check_targets(records: list[dict], argument: str, column: str) -> None:
    """Every row with a text has a label (or answer)."""
    missing = [r["where"] for r in records if r["target"] is None]
    if missing:
        what = "label" if argument == "--label-column" else "answer"
        raise data_error(argument, f"must have a{'n' if what == 'answer' else ''} {what} in every row that has a text",
                         f"{column!r} empty in {len(missing)} rows, e.g. {', '.join(missing[:5])}",
                         f"fill in those {what}s, or remove the rows.")


def _check_labels(tables: dict, records: list[dict], label: str, declared) -> tuple[str, ...]:
    """The label names (declared by a ClassLabel, else sorted, numbers in numeric order); an error for one class."""
    counts = Counter(r["target"] for r in records)
    if len(counts) < 2:
        (only, n), = counts.items()
        names = ", ".join(t.name for t in tables.values())
        raise data_error("--label-column", "must hold at least two classes (a classifier needs something to choose "
                         "between)", f"{label!r} is {only!r} in all {n} rows of {names}",
                         "add rows of the other classes, or check that --label-column names the label column.")
    if declared and label in declared:
        return declared[label]
    return tuple(sorted(counts, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v)))


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


# ---- sizes ------------------------------------------------------------------------------------
def _needed(fractions: tuple[float, float, float], present: set[str]) -> tuple[int, str]:
    """(distinct training rows needed, what for): enough for every split drawn from train to expect
    MIN_EXPECTED_PER_SPLIT examples."""
    train, *held = fractions
    drawn = [(s, f) for s, f in zip(("validation", "test"), held) if s not in present]
    if not drawn:
        return 1, "train"
    pool = train + sum(f for _, f in drawn)
    share = min(f for _, f in drawn)
    needed = math.ceil(MIN_EXPECTED_PER_SPLIT / (share / pool) - 1e-9)
    smallest = [s for s, f in drawn if f == share]
    what = f"{' and '.join(smallest)} split{'s' if len(smallest) > 1 else ''}"
    return needed, f"the {share / pool:.0%} {what} drawn from them get about {MIN_EXPECTED_PER_SPLIT} examples each"


def _check_size(records: list[dict], present: set[str], own: OwnData, labelled: bool) -> None:
    """Enough distinct rows for the splits, counted after deduplication as the build will do it."""
    kept, stats = deduplicate([{**r, "label": r["target"]} for r in records], "label" if labelled else None)
    train_rows = sum(1 for r in records if r["split"] == "train")
    train_kept = sum(1 for r in kept if r["split"] == "train")
    needed, why = _needed(DEFAULT_FRACTIONS, present)
    if train_kept >= needed:
        return
    argument = own.source_argument
    if train_kept < train_rows and train_kept < needed <= train_rows:
        dropped = f"{stats['duplicates']} repeated texts" + (f", {stats['conflicting_labels']} rows whose text appears with "
                                                             "two labels" if stats["conflicting_labels"] else "")
        if present - {"train"}:
            dropped += ", texts also in the validation/test data"
        raise data_error(argument, f"must keep at least {needed} distinct training rows after deduplication (so that "
                         f"{why})", f"{train_rows} rows but only {train_kept} distinct ones ({dropped} removed)",
                         "add more distinct examples (rows that differ only in case, spacing or punctuation count "
                         "once), or pass --validation-file and --test-file.")
    raise data_error(argument, f"must have at least {needed} distinct training rows (so that {why})",
                     f"{train_rows} rows" + (f" ({train_kept} distinct)" if train_kept != train_rows else ""),
                     f"add at least {needed - train_kept} more rows, or pass --validation-file and --test-file with "
                     "held-out examples of your own.")


def _check_built(splits, records: list[dict], own: OwnData, labelled: bool) -> None:
    """After the build: no split empty, and (classification) two classes to train on."""
    sizes = {s: len(splits[s]) for s in SPLITS}
    for split in SPLITS:
        if sizes[split]:
            continue
        source = sum(1 for r in records if r["split"] == split)
        if source:
            raise data_error(FILE_ARGUMENTS[split], "must keep at least one example after deduplication (a text "
                             "in the validation or test data is removed from the splits after it)",
                             f"{source} rows, none left: the splits are {sizes}",
                             "give this split texts that appear in no other split.")
        raise data_error(own.source_argument, f"must give every split examples; the hash split left {split!r} empty",
                         sizes, f"add rows, or pass --{split}-file with held-out examples of your own.")
    if labelled:
        classes = set(splits["train"]["label"])
        if len(classes) < 2:
            names = splits["train"].features["label"].names
            raise data_error("--label-column", "must leave at least two classes in the training split",
                             f"only {[names[c] for c in classes]} in {sizes['train']} training rows",
                             "add training rows of the other classes (or move some out of --test-file).")


def _as_dataset_dict(records: list[dict], labelled: bool):
    """The checked records as a DatasetDict of text, target and a group (a hash of the normalized text)."""
    from datasets import Dataset, DatasetDict

    column = "label" if labelled else "answer"
    out = {}
    for split in SPLITS:
        rows = [{"text": r["text"], column: r["target"] or "",
                 "group": hashlib.sha256(normalize_text(r["text"]).encode()).hexdigest()[:16]}
                for r in records if r["split"] == split]
        if rows or split == "train":
            out[split] = Dataset.from_list(rows) if rows else Dataset.from_dict({"text": [], column: [], "group": []})
    return DatasetDict(out)
