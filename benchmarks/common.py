"""Timing helpers shared by the benchmarks: interleaved repeats, medians, a markdown table.

The machine is shared and noisy, so every comparison runs its variants alternately in one process and
reports the ratio of medians, never absolute numbers from separate runs.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Dict, List

import torch


def machine() -> str:
    return f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.python_version()}"


def interleaved_medians(variants: Dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Runs each variant `warmup` times, then all variants in turn `repeats` times; median seconds each."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
