"""The routing heatmap shared by the model cards and the Space: its colour scale is centred on the uniform
share 1/E (the neutral colour), red above, blue below, and small deviations still show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from talklora_hub.analysis.routing_figures import CMAP, routing_heatmap, uniform_norm
from talklora_hub.publish.cards import routing_picture

NEUTRAL = colormaps[CMAP](0.5)


def _colour(figure, value):
    image = figure.axes[0].images[0]
    return image.cmap(image.norm(value))


def test_uniform_share_is_the_neutral_colour_and_the_scale_is_symmetric():
    loads = torch.tensor([[0.26, 0.24, 0.25, 0.25], [0.25, 0.27, 0.23, 0.25]])  # 2% from uniform at most
    figure = routing_heatmap(loads, [0, 1])
    assert _colour(figure, 0.25) == NEUTRAL
    assert _colour(figure, 0.27) == colormaps[CMAP](1.0)  # the largest deviation: full red
    assert _colour(figure, 0.23) == colormaps[CMAP](0.0)  # and full blue
    red, _, blue, _ = _colour(figure, 0.26)
    assert red > blue  # a 1% excess is visibly red, not a shade of the neutral colour
    assert figure.axes[0].get_title() == "mean routing weight (white = 1/4)"


def test_the_scale_never_goes_below_zero_and_survives_exact_uniformity():
    norm = uniform_norm(torch.tensor([[0.0, 0.9, 0.1]]), 3)
    assert norm.vmin == 0.0 and norm.vcenter == pytest.approx(1 / 3) and norm.vmax == pytest.approx(0.9)  # 1/3 + 0.567
    flat = routing_heatmap(torch.full((3, 2), 0.5), ["a", "b", "c"])
    assert _colour(flat, 0.5) == NEUTRAL


def test_the_drawn_cells_are_the_values_and_options_mark_rows():
    weights = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), -1)
    figure = routing_heatmap(weights, [f"t{i}" for i in range(6)], row_title="token", highlight_row=2, split_row=4)
    ax = figure.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array().data, weights.double().numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"t{i}" for i in range(6)]
    assert ax.get_ylabel() == "token" and len(ax.patches) == 1 and ax.lines[0].get_ydata()[0] == 3.5
    assert len(ax.texts) == 18  # few cells: each shows its value
    assert len(routing_heatmap(weights, list(range(6)), annotate=False).axes[0].texts) == 0


def test_a_capped_figure_labels_every_kth_row():
    figure = routing_heatmap(torch.full((400, 4), 0.25), list(range(400)), max_height=10.0)
    assert figure.get_size_inches()[1] == 10.0
    labels = [int(t.get_text()) for t in figure.axes[0].get_yticklabels()]
    assert labels[0] == 0 and 1 < labels[1] and len(labels) < 100


@pytest.mark.parametrize("matrix, labels, message", [
    (torch.zeros(3), [0, 1, 2], r"`matrix` must be \(rows, experts\)"),
    (torch.zeros(0, 4), [], "at least one row"),
    (torch.zeros(2, 4), [0], r"one label per row of `matrix` \(2\), got 1"),
])
def test_bad_arguments_are_named(matrix, labels, message):
    with pytest.raises(ValueError, match=message):
        routing_heatmap(matrix, labels)


def test_the_model_cards_picture_is_this_heatmap(tmp_path):
    routing = {"num_experts": 4, "layers": [(0, [0.25, 0.25, 0.25, 0.25]), (1, [0.4, 0.2, 0.2, 0.2])]}
    path = routing_picture(routing, tmp_path / "routing.png")
    figure = routing_heatmap([load for _, load in routing["layers"]], [0, 1], annotate=False)
    figure.savefig(tmp_path / "direct.png")
    with Image.open(path) as card, Image.open(tmp_path / "direct.png") as direct:
        assert np.array_equal(np.asarray(card), np.asarray(direct))
