"""The learning-rate schedule: transformers' get_scheduler, read so that it gives the schedule this project
always trained with (the warm-up's first step already trains at lr / (warm-up + 1))."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from talklora_hub.train.trainer import make_scheduler

LR = 3e-3


def reference_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """The hand-written LambdaLR factor the trainer used before transformers' schedules (the oracle)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


def _lrs(total: int, warmup: int, kind: str):
    """The learning rate of each optimizer step 0 .. total - 1, as the training loop steps the schedule."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make_scheduler(optimizer, kind, total, warmup)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        assert scheduler.get_last_lr()[0] == lrs[-1]
        optimizer.step()
        scheduler.step()
    return lrs


# (total steps, warm-up ratio): the zoo's lengths with the default ratio 0.03, and the edges (no warm-up,
# a single step, warm-up over most of the run).
CASES = [(240, 0.03), (80, 0.03), (60, 0.03), (150, 0.03), (300, 0.03), (1, 0.0), (2, 0.5), (10, 0.0), (10, 0.9),
         (33, 0.1), (1000, 0.1)]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("total,ratio", CASES)
def test_get_scheduler_gives_the_reference_schedule(kind, total, ratio):
    warmup = int(ratio * total)
    expected = [LR * reference_factor(step, total, warmup, kind) for step in range(total)]
    got = _lrs(total, warmup, kind)
    if kind == "linear":
        # transformers computes (T - s) / (T - w) where the reference computed 1 - (s - w) / (T - w): equal up
        # to the last bits of a float64 (measured: at most 4.4e-14 relative).
        assert got == pytest.approx(expected, rel=1e-12, abs=0.0)
    else:
        assert got == expected  # bit for bit


def test_the_first_step_trains_and_no_warning_is_left(recwarn):
    warnings.simplefilter("always")
    assert _lrs(100, 3, "linear")[:4] == [LR / 4, LR / 2, LR * 3 / 4, LR]
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]
