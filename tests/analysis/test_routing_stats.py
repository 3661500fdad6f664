"""Routing statistics on hand-made routing weights with known answers."""

import math

import torch

from talklora_hub.analysis.routing_stats import (balance_summary, expert_load, layer_load_matrix, token_entropy,
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
