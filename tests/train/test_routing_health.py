"""Routing health while training, on hand-made routing weights with known answers: its figures are
talklora_hub.analysis's definitions applied to sums accumulated over steps."""

from __future__ import annotations

import math

import pytest
import torch

from talklora_hub.analysis.routing_stats import balance_summary, expert_load, layer_load_matrix
from talklora_hub.train.routing_health import SEQUENCE_ROUTER, RoutingHealth

NAMES = ["base.model.layers.0.self_attn.q_proj", "base.model.layers.0.self_attn.v_proj",
         "base.model.layers.1.self_attn.q_proj"]


def _weights(seed: int, batch: int = 2, seq: int = 5, experts: int = 4):
    generator = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(batch, seq, experts, generator=generator) * 2, -1) for _ in NAMES]


def test_uniform_and_collapsed_modules_have_their_known_figures():
    health = RoutingHealth()
    collapsed = torch.zeros(1, 3, 4)
    collapsed[..., 1] = 1.0
    health.update_tokens([torch.full((1, 3, 4), 0.25), collapsed], NAMES[:2], None)
    modules = health.summary()["modules"]
    uniform, one = modules[NAMES[0]], modules[NAMES[1]]
    assert uniform["load"] == [0.25] * 4 and math.isclose(uniform["normalized_entropy"], 1.0, rel_tol=1e-6)
    assert uniform["load_cv"] < 1e-6 and uniform["dead_experts"] == 0 and uniform["tokens"] == 3
    assert one["load"] == [0.0, 1.0, 0.0, 0.0] and one["mean_entropy"] == 0.0 and one["dead_experts"] == 3
    assert one["max_share"] == 1.0 and one["load_cv"] == pytest.approx(math.sqrt(3))
    overall = health.summary()["overall"]
    assert overall["dead_experts"] == 3 and overall["modules"] == 2 and overall["max_share"] == 1.0


def test_figures_over_several_steps_are_those_of_all_tokens_at_once():
    health = RoutingHealth()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    steps = [_weights(seed) for seed in range(3)]
    for weights in steps:
        health.update_tokens(weights, NAMES, mask)
    summary = health.summary()
    masks = torch.cat([mask] * 3)
    for m, name in enumerate(NAMES):
        every = torch.cat([weights[m] for weights in steps])  # (3 * batch, seq, E)
        expected = balance_summary(every, masks)
        figures = summary["modules"][name]
        assert figures["tokens"] == 24
        for key in ("mean_entropy", "normalized_entropy", "load_cv", "max_share", "dead_experts"):
            assert figures[key] == pytest.approx(expected[key], rel=1e-5), key
        assert figures["load"] == pytest.approx(expert_load(every, masks).tolist(), abs=1e-6)
    layers = layer_load_matrix([torch.cat([w[m] for w in steps]) for m in range(3)], NAMES, masks)
    assert list(summary["layers"]) == ["0", "1"]
    for layer, load in layers.items():
        assert summary["layers"][str(layer)]["load"] == pytest.approx(load.tolist(), abs=1e-6)


def test_a_mask_that_does_not_match_the_tokens_is_ignored():
    health = RoutingHealth()
    weights = _weights(0)
    health.update_tokens(weights, NAMES, torch.ones(3, 3))
    assert health.summary()["modules"][NAMES[0]]["tokens"] == 10


def test_the_window_resets_and_the_total_survives_a_checkpoint():
    health = RoutingHealth(dead_threshold=0.1)
    health.update_tokens(_weights(0), NAMES, None)
    health.update_sequences(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 2]))
    assert set(health.postfix()) == {"nent", "cv", "dead"}
    health.window.reset()
    assert health.summary("window") == {"modules": {}, "layers": {}, "overall": {}} and health.postfix() == {}
    restored = RoutingHealth(dead_threshold=0.1)
    restored.load_state_dict(health.state_dict())
    assert restored.summary() == health.summary()
    router = health.summary()["modules"][SEQUENCE_ROUTER]
    assert router["load"] == [0.5, 0.0, 0.5] and router["tokens"] == 2 and router["dead_experts"] == 1
    assert SEQUENCE_ROUTER not in str(list(health.summary()["layers"]))  # not a layer of its own
    assert health.summary()["overall"]["dead_threshold"] == 0.1
