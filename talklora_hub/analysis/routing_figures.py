"""The routing heatmap: rows (layers, or tokens) × experts, coloured around the uniform share.

One figure function for the model cards (layers × experts, saved as PNG) and the routing Space (shown
in a gr.Plot: layers × experts and tokens × experts). The colours diverge around 1/E, the weight every
expert would get from a uniform router (the neutral colour, white-ish), red above and blue below,
scaled to the largest deviation shown: a router a few percent from uniform is as readable as one that
sends everything to one expert (a 0..max scale would leave it all one shade).

Builds a matplotlib Figure directly (no pyplot: no global state, safe in the Space's worker threads).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

CMAP = "RdBu_r"
MIN_SPREAD = 1e-4        # the colour scale's half-width when every value is exactly uniform
ROW_IN = 0.22            # inches per row (a label fits)
MIN_LABEL_ROW_IN = 0.15  # rows thinner than this (a capped figure): every k-th row is labelled
MAX_ANNOTATED_CELLS = 200  # up to this many cells, each shows its value (drawing text is the slow part)


def uniform_norm(values: torch.Tensor, num_experts: int) -> TwoSlopeNorm:
    """The colour scale: centre 1/E, half-width the largest |value - 1/E| (at least MIN_SPREAD),
    clipped at 0 below (a weight is never negative)."""
    uniform = 1.0 / num_experts
    spread = max(float((values - uniform).abs().max()) if values.numel() else 0.0, MIN_SPREAD)
    return TwoSlopeNorm(vcenter=uniform, vmin=max(0.0, uniform - spread), vmax=uniform + spread)


def routing_heatmap(matrix: Union[torch.Tensor, Sequence[Sequence[float]]], row_labels: Sequence[object],
                    row_title: str = "layer", title: Optional[str] = None, highlight_row: Optional[int] = None,
                    split_row: Optional[int] = None, annotate: Optional[bool] = None,
                    max_height: Optional[float] = None, dpi: int = 110) -> Figure:
    """A heatmap Figure of matrix (rows, E): routing weights or loads, one row per layer (or token).

    row_labels: one label per row; row_title: the y axis title; title: default "mean routing weight
    (white = 1/E)"; highlight_row: a row position to outline (the chosen layer); split_row: draw a dashed
    line above this row (where generated tokens start); annotate: write each cell's value (default: when
    there are at most MAX_ANNOTATED_CELLS cells); max_height: cap on the figure's height in inches (rows
    get thinner and only every k-th is labelled; default: no cap, ROW_IN per row).
    """
    values = torch.as_tensor(matrix, dtype=torch.float64)
    if values.dim() != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"`matrix` must be (rows, experts) with at least one row and one expert, got shape "
                         f"{tuple(values.shape)}: pass one row of E weights per layer or token.")
    rows, num_experts = values.shape
    if len(row_labels) != rows:
        raise ValueError(f"`row_labels` must have one label per row of `matrix` ({rows}), got {len(row_labels)}.")
    norm = uniform_norm(values, num_experts)
    height = max(2.5, ROW_IN * rows + 1.2)
    if max_height is not None:
        height = min(height, max_height)
    fig = Figure(figsize=(1.6 + 0.7 * num_experts, height), dpi=dpi)
    ax = fig.add_subplot()
    image = ax.imshow(values.numpy(), aspect="auto", cmap=CMAP, norm=norm)
    ax.set_xlabel("expert")
    ax.set_ylabel(row_title)
    ax.set_xticks(range(num_experts))
    row_in = (height - 1.2) / rows
    step = 1 if row_in >= MIN_LABEL_ROW_IN else math.ceil(MIN_LABEL_ROW_IN / row_in)
    ax.set_yticks(range(0, rows, step), labels=[str(row_labels[i]) for i in range(0, rows, step)])
    ax.set_title(title if title is not None else f"mean routing weight (white = 1/{num_experts})", fontsize=9)
    if annotate if annotate is not None else rows * num_experts <= MAX_ANNOTATED_CELLS:
        for r in range(rows):
            for e in range(num_experts):
                v = float(values[r, e])
                strong = abs(norm(v) - 0.5) > 0.3  # dark cell: white ink
                label = ax.text(e, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if strong else "#111111")
                label.set_in_layout(False)  # inside its cell: tight_layout need not measure hundreds of them
    if highlight_row is not None and 0 <= highlight_row < rows:
        ax.add_patch(_outline(highlight_row, num_experts))
    if split_row is not None and 0 < split_row < rows:
        ax.axhline(split_row - 0.5, color="#8250df", linestyle="--", linewidth=1.2)
    fig.colorbar(image, ax=ax, fraction=0.08)
    fig.tight_layout()
    return fig


def _outline(row: int, num_experts: int):
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, row - 0.5), num_experts, 1, fill=False, edgecolor="#1f2328", linewidth=2)
