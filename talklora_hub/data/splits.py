"""Deterministic deduplication, subsampling and train/validation/test assignment.

Every decision is a function of the example's own strings (its id, its group, its text) and a
seed, hashed with sha256, never of file order, Python's salted hash() or a random generator. So
the same example lands in the same split on every run and every machine, and adding or removing
other examples never moves it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from .text import normalize_text

SPLITS = ("train", "validation", "test")
_HELD_OUT_RANK = {"test": 0, "validation": 1, "train": 2}


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from the given parts (sha256 of their joined string)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(group: str, fractions: tuple[float, float, float], seed: int = 0) -> str:
    """The split of a group: train, validation or test by where its hash falls among the fractions.

    The hash does not involve the task name, so two tasks built from the same source with the same
    groups (SOTU speeches, say) agree on the split of every speech and a multi-task mixture never
    trains on one task's copy of another task's test text.
    """
    point = unit_hash("split", seed, group)
    train, validation, _ = fractions
    if point < train:
        return "train"
    if point < train + validation:
        return "validation"
    return "test"


def deduplicate(records: list[dict], label_key: str | None = "label") -> tuple[list[dict], dict]:
    """Keep one record per normalized text; drop texts seen with conflicting labels entirely.

    The record kept is the one in the most held-out preset split (test, then validation, then train,
    then none), ties broken by the smallest id, so the result does not depend on input order.
    Returns (records, stats) where stats counts what was dropped and why.
    """
    by_text: dict[str, list[dict]] = defaultdict(list)
    empty = 0
    for record in records:
        key = normalize_text(record["text"])
        if not key:
            empty += 1
            continue
        by_text[key].append(record)
    kept, conflicting, duplicates = [], 0, 0
    for group in by_text.values():
        if label_key is not None and len({str(r.get(label_key)) for r in group}) > 1:
            # The same text with two labels teaches nothing and would make test accuracy a coin flip.
            conflicting += len(group)
            continue
        duplicates += len(group) - 1
        # A copy in a preset held-out split wins, so the text stays out of train.
        kept.append(min(group, key=lambda r: (_HELD_OUT_RANK.get(r.get("split"), 3), r["id"])))
    kept.sort(key=lambda r: r["id"])
    return kept, {"empty": empty, "duplicates": duplicates, "conflicting_labels": conflicting}


def cap_per_key(records: list[dict], key: str, limit: int | None, seed: int = 0) -> list[dict]:
    """At most `limit` records per value of `key` (label or group), chosen by a stable hash of their id."""
    if limit is None:
        return records
    buckets: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        buckets[str(record[key])].append(record)
    kept = []
    for bucket in buckets.values():
        bucket.sort(key=lambda r: unit_hash("cap", seed, r["id"]))
        kept.extend(bucket[:limit])
    kept.sort(key=lambda r: r["id"])
    return kept


def assign_splits(records: list[dict], fractions: tuple[float, float, float], seed: int = 0) -> dict[str, list[dict]]:
    """Partition records into SPLITS: a record's preset `split` when it has one, else by the hash of
    its `group` (defaulting to its id). Order within a split is the input order."""
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for record in records:
        preset = record.get("split")
        out[preset if preset in out else split_of(str(record.get("group") or record["id"]), fractions, seed)].append(record)
    return out
