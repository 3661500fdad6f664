"""Plug a user's own data in as a task: `load_task_from_dataset`.

Accepts a datasets.Dataset or DatasetDict, a list of dicts, a pandas DataFrame, a local file
(.csv, .tsv, .json, .jsonl, .parquet), a folder written by save_to_disk, or a Hugging Face Hub id.
Columns are mapped by name; the result goes through the same deduplication, splitting and
formatting as the built-in tasks, and the task is registered so get_task(name) and mix_tasks see it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .spec import DEFAULT_FRACTIONS, TaskSpec
from .splits import SPLITS, unit_hash

# Split names people use, mapped to ours.
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DEFAULT_CLASSIFICATION_TEMPLATE = "Classify the text as {choices}.\n\n{text}\n\nAnswer:"
DEFAULT_GENERATION_TEMPLATE = "{text}\nAnswer:"


def load_task_from_dataset(
    data,
    *,
    name: str = "custom",
    text_column: str = "text",
    label_column: str | None = None,
    answer_column: str | None = None,
    solution_column: str | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
    label_names: Sequence[str] | None = None,
    verbalizers: Sequence[str] | None = None,
    template: str | None = None,
    answer_kind: str = "text",
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    register: bool = True,
):
    """A DatasetDict(train, validation, test) in the task format, from the user's data.

    label_column (classification) or answer_column (generation): exactly one; when both are None a
    column named "label", else "answer", is used. Existing train/validation/test splits of a
    DatasetDict are kept (a missing validation or test split is carved from train); a single split is divided
    by split_fractions with a seeded hash of group_column (or the id). Texts are deduplicated after
    normalization, a copy in test or validation winning over one in train.
    """
    from datasets import ClassLabel

    pieces = _as_splits(data)
    columns = next(iter(pieces.values())).column_names
    label_column, answer_column = _pick_target_columns(label_column, answer_column, columns)
    for argument, column in (("text_column", text_column), ("label_column", label_column), ("answer_column", answer_column),
                             ("solution_column", solution_column), ("group_column", group_column), ("id_column", id_column)):
        if column is not None and column not in columns:
            raise ValueError(
                f"{argument}: must name a column of the dataset; got {column!r}, but the columns are {columns}. "
                f"Pass {argument}= one of those names."
            )
    if answer_kind not in ("text", "number"):
        raise ValueError(f"answer_kind: must be 'text' or 'number'; got {answer_kind!r}.")

    if label_column is not None:
        feature = next(iter(pieces.values())).features[label_column]
        if label_names is None and isinstance(feature, ClassLabel):
            label_names = feature.names
        if label_names is None:
            label_names = sorted({str(v) for ds in pieces.values() for v in ds[label_column] if v is not None})
        label_names = tuple(str(n) for n in label_names)
        verbalizers = tuple(verbalizers) if verbalizers is not None else label_names

    records = []
    for split, ds in pieces.items():
        for index, row in enumerate(ds):
            text = row[text_column]
            if text is None or not str(text).strip():
                continue
            record = {
                "id": str(row[id_column]) if id_column else f"{split}-{index:07d}",
                "text": str(text).strip(),
                "split": split,
            }
            if group_column:
                record["group"] = f"{name}:{row[group_column]}"
            if label_column is not None:
                record["label"] = _label_name(row[label_column], label_names, label_column)
            else:
                record["answer"] = str(row[answer_column]).strip()
                if solution_column:
                    record["solution"] = str(row[solution_column] or "")
            records.append(record)
    if id_column:
        counts = Counter(r["id"] for r in records)
        if len(counts) != len(records):
            repeated = sorted(i for i, n in counts.items() if n > 1)[:5]
            raise ValueError(f"id_column: values must be unique; got repeats such as {repeated}. Pass a unique id column or none.")
    if not records:
        raise ValueError(
            f"data: must contain at least one example with a non-empty {text_column!r}; got {sum(len(d) for d in pieces.values())} "
            "rows and none usable. Pass a dataset with text in that column."
        )
    _resolve_preset_splits(records, set(pieces), split_fractions, seed)

    spec = TaskSpec(
        name=name, source="custom", description=f"User data ({len(records)} rows) loaded with load_task_from_dataset.",
        template=template or (DEFAULT_CLASSIFICATION_TEMPLATE if label_column else DEFAULT_GENERATION_TEMPLATE),
        label_names=label_names or (), verbalizers=verbalizers or (), answer_kind=answer_kind,
        split_fractions=tuple(split_fractions), seed=seed,
    )
    if register:
        from .tasks import register_task

        register_task(spec, replace=True)
    return spec.build(records)


def _pick_target_columns(label_column, answer_column, columns):
    if label_column is not None and answer_column is not None:
        raise ValueError(
            f"label_column/answer_column: pass exactly one (label for classification, answer for generation); "
            f"got label_column={label_column!r} and answer_column={answer_column!r}. Drop one of them."
        )
    if label_column is None and answer_column is None:
        found = default_target_columns(columns)
        if found is None:
            raise ValueError(
                f"label_column: needed (or answer_column), and no column is named 'label' or 'answer'; got columns "
                f"{columns}. Pass label_column= for classification or answer_column= for generation."
            )
        return found
    return label_column, answer_column


def default_target_columns(columns) -> tuple[str | None, str | None] | None:
    """(label column, answer column) when neither is given: a column named "label" (classification), else one
    named "answer" (generation); None when there is neither."""
    if "label" in columns:
        return "label", None
    if "answer" in columns:
        return None, "answer"
    return None


def _label_name(value, label_names: tuple[str, ...], label_column: str) -> str:
    """A label value as its name: an int indexes label_names, anything else must be one of them."""
    if isinstance(value, int) and not isinstance(value, bool) and str(value) not in label_names:
        if 0 <= value < len(label_names):
            return label_names[value]
    elif str(value) in label_names:
        return str(value)
    raise ValueError(
        f"{label_column}: every label must be one of {list(label_names)} (or an index into them); got {value!r}. "
        "Fix the data or pass label_names= listing every label."
    )


def _resolve_preset_splits(records: list[dict], present: set[str], fractions, seed: int) -> None:
    """Keep the user's held-out splits; a held-out split they lack is carved from train by hash (its share of
    train + itself). With train alone, drop the presets so TaskSpec.build divides everything by hash."""
    if present <= {"train"}:
        for record in records:
            record.pop("split", None)
        return
    missing = [(split, fraction) for split, fraction in zip(("validation", "test"), fractions[1:]) if split not in present]
    if not missing:
        return
    (split, fraction), = missing  # one held-out split present, the other carved
    share = fraction / max(fractions[0] + fraction, 1e-12)
    for record in records:
        if record["split"] == "train" and unit_hash("split", seed, record.get("group") or record["id"]) < share:
            record["split"] = split


def _as_splits(data) -> dict:
    """{our split name: Dataset} for any accepted input, raising a ValueError naming `data` otherwise."""
    from datasets import Dataset, DatasetDict

    if isinstance(data, (str, Path)):
        data = _load_path_or_hub(data)
    elif isinstance(data, list):
        if not data:
            raise ValueError("data: must contain at least one example; got an empty list. Pass rows as dicts.")
        data = Dataset.from_list(data)
    elif type(data).__name__ == "DataFrame":
        data = Dataset.from_pandas(data, preserve_index=False)
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    if not isinstance(data, DatasetDict):
        raise ValueError(
            f"data: must be a Dataset, DatasetDict, list of dicts, DataFrame, file path, saved folder or hub id; "
            f"got {type(data).__name__}. Convert it to one of those."
        )
    pieces = {}
    for split, ds in data.items():
        ours = SPLIT_ALIASES.get(split.lower())
        if ours is None and len(data) == 1:
            ours = "train"  # a lone split of any name is just "the data"
        if ours is None or ours in pieces:
            raise ValueError(
                f"data: split names must be among {sorted(SPLIT_ALIASES)} (one each); got {list(data)}. "
                "Rename the splits or pass the one Dataset you want."
            )
        pieces[ours] = ds
    if sum(len(ds) for ds in pieces.values()) == 0:
        raise ValueError(f"data: must contain at least one example; got an empty dataset (splits {list(data)}). Pass non-empty data.")
    return {s: pieces[s] for s in SPLITS if s in pieces}


def _load_path_or_hub(data):
    from datasets import load_dataset, load_from_disk

    path = Path(data).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        return load_from_disk(str(path))
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"data: files must end in one of {sorted(_FILE_BUILDERS)}; got {str(path)!r}. Convert the file.")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        return load_dataset(builder, data_files=str(path), split="train", **kwargs)
    if path.exists() or str(data).startswith((".", "/", "~")):
        raise ValueError(f"data: a path must be a data file or a save_to_disk folder; got {str(data)!r}, which is neither.")
    try:
        return load_dataset(str(data))
    except Exception as error:  # offline, unknown id, private repo: one clear message for all
        raise ValueError(
            f"data: {str(data)!r} is not a local file or folder, and loading it as a Hugging Face Hub dataset failed "
            f"({type(error).__name__}: {error}). Pass a local path, or check the id and network."
        ) from error
