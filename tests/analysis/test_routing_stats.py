"""Routing statistics on hand-made routing weights with known answers."""

import math

import torch

from talklora_hub.analysis.routing_stats import (balance_figures, balance_summary, expert_load, layer_load_matrix,
                                                 layer_means, routing_sums, token_entropy, token_routing,
                                                 top_expert_per_layer)


def test_uniform_routing_is_balanced_with_maximal_entropy():
    weights = torch.full((2, 5, 4), 0.25)
    summary = balance_summary(weights)
    assert math.isclose(summary["mean_entropy"], math.log(4), rel_tol=1e-6)
    assert math.isclose(summary["normalized_entropy"], 1.0, rel_tol=1e-6)
    assert summary["load_cv"] < 1e-6 and math.isclose(summary["max_share"], 0.25) and summary["dead_experts"] == 0


def test_collapsed_routing_has_one_busy_expert_and_dead_ones():
    weights = torch.zeros(3, 4)
    weights[:, 2] = 1.0
    summary = balance_summary(weights)
    assert summary["mean_entropy"] < 1e-6 and summary["max_share"] == 1.0 and summary["dead_experts"] == 3
    torch.testing.assert_close(expert_load(weights), torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_mask_drops_padding_tokens():
    weights = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[1, 0]])
    torch.testing.assert_close(expert_load(weights, mask), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(token_entropy(torch.tensor([0.5, 0.5])), torch.tensor(math.log(2)))


def test_layer_views_average_modules_of_a_layer():
    q = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])
    v = torch.tensor([[[0.7, 0.3], [0.4, 0.6]]])
    names = ["base.model.layers.0.self_attn.q_proj", "base.model.layers.0.self_attn.v_proj"]
    loads = layer_load_matrix([q, v], names)
    assert list(loads) == [0]
    torch.testing.assert_close(loads[0], torch.tensor([0.55, 0.45]))
    top = top_expert_per_layer([q, v], names)
    assert top[0].tolist() == [[0, 1]]


def test_sums_divided_by_the_count_are_load_and_mean_entropy():
    weights = torch.softmax(torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0)), -1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    load_sum, entropy_sum, count = routing_sums(weights, mask)
    assert count == 9
    torch.testing.assert_close(load_sum / count, expert_load(weights, mask))
    assert math.isclose(entropy_sum / count, balance_summary(weights, mask)["mean_entropy"], rel_tol=1e-6)


def test_balance_figures_compute_in_the_loads_dtype():
    load = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    figures = balance_figures(load, 0.9, dead_threshold=0.1)
    assert figures["load_cv"] == float(load.std(unbiased=False) / load.mean())
    assert figures["max_share"] == 0.5 and figures["dead_experts"] == 1
    assert figures["normalized_entropy"] == 0.9 / math.log(4)
    assert balance_figures(torch.tensor([1.0]), 0.0)["normalized_entropy"] == 0.0  # one expert: no spread
    assert balance_figures(torch.zeros(3), 0.0)["load_cv"] == 0.0  # nothing routed


def test_one_hot_rows_have_exactly_zero_entropy():
    assert token_entropy(torch.tensor([[0.0, 1.0, 0.0]])).item() == 0.0


def test_token_routing_averages_the_modules_of_each_token():
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    b = torch.tensor([[0.5, 0.5], [0.4, 0.6]])
    per_token = token_routing(torch.stack([a, b]))
    torch.testing.assert_close(per_token["mean"], torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    assert per_token["top"].tolist() == [0, 1]
    torch.testing.assert_close(per_token["top_weight"], torch.tensor([0.7, 0.7]))
    torch.testing.assert_close(per_token["entropy"], (token_entropy(a) + token_entropy(b)) / 2)


def test_layer_means_average_whatever_each_module_carries():
    names = ["x.layers.1.q", "x.layers.0.q", "x.layers.1.v"]
    means = layer_means([torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), torch.tensor([3.0, 5.0])], names)
    assert list(means) == [0, 1]
    torch.testing.assert_close(means[1], torch.tensor([2.0, 4.0]))
