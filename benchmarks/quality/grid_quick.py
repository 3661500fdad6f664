"""--quick: a tiny random base and two synthetic tasks, built on the fly, so the whole grid (train, score,
routing, stability, report) runs in well under two minutes on two cores. The pieces are the training
tests' own (tests/train/helpers.py), imported by path so the benchmark and the tests share one copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, List, Tuple

HELPERS = Path(__file__).resolve().parents[2] / "tests" / "train" / "helpers.py"
ARCHS = ("bert", "llama")


def _helpers():
    spec = importlib.util.spec_from_file_location("talklora_quality_helpers", HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_base(folder: Path, arch: str = "bert") -> str:
    """A tiny random BERT (classification head) or Llama (causal) saved with its word-level tokenizer."""
    helpers = _helpers()
    folder.mkdir(parents=True, exist_ok=True)
    build = helpers.save_tiny_bert if arch == "bert" else helpers.save_tiny_llama
    return str(build(folder))


def quick_tasks(examples: int = 400) -> List[Tuple[str, Any]]:
    """Two synthetic classification tasks, (name, DatasetDict) pairs (registered as a side effect):
    warm vs cool colours and land vs sea animals, `examples` rows each before the train/val/test split."""
    helpers = _helpers()
    return [helpers.colors_task(examples), helpers.animals_task(examples)]
