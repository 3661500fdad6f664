"""The deployed Space folder served by `python app.py` (talklora_hub unimportable) and driven over HTTP
with gradio_client: every endpoint returns its views for real input and a clear message for bad input."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("gradio_client")

TEXT = "The Senate met today. def add(a, b): return a + b"


@pytest.fixture(scope="module")
def client(space_server):
    from gradio_client import Client

    return Client(space_server.url, verbose=False, analytics_enabled=False, download_files=False)


def _views(result):
    status, layer, module, tokens, token_heat, layer_heat, stats, sequence = result
    return status, layer, module, (tokens, token_heat, layer_heat, stats, sequence)


def test_endpoints_are_published(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/analyze", "/generate", "/compare"} <= set(endpoints)


@pytest.mark.parametrize("method", ["talklora", "moelora"])
def test_analyze_returns_every_view(client, space_server, method):
    path = space_server.models[method]
    status, layer, module, views = _views(client.predict(path, TEXT, "1", "self_attn.q_proj", api_name="/analyze"))
    assert f"tiny-{method} (local)" in status and "4 experts per token" in status
    assert "10 routed modules in 2 layers" in status
    assert layer["value"] == "1" and ["layer 1", "1"] in layer["choices"]
    assert module["value"] == "self_attn.q_proj" and ["mlp.down_proj", "mlp.down_proj"] in module["choices"]
    tokens, token_heat, layer_heat, stats, sequence = views
    count = len(re.findall(r'class="trl-tok[^"]*" data-expert="\d"', tokens))
    assert count > 10 and "of layer 1" in tokens
    assert token_heat.count('class="trl-cell"') == count * 4
    assert layer_heat.count('class="trl-cell"') == 2 * 4
    assert "load CV" in stats and "max share" in stats and stats.count('class="trl-bar"') == count + 4
    assert 'data-view="sequence"' in sequence


def test_generate_streams_updates(client, space_server):
    job = client.submit(space_server.models["talklora"], "The Senate", 4, "all", "all", api_name="/generate")
    job.result(timeout=60)
    updates = job.outputs()
    assert len(updates) >= 4
    statuses = [u[0] for u in updates]
    assert "generating…" in statuses[0] and "4 generated" in statuses[-1] and "generating…" not in statuses[-1]
    final_tokens = updates[-1][3]
    assert len(re.findall(r'class="trl-tok[^"]*trl-gen', final_tokens)) == 4
    assert not re.search(r'class="trl-tok[^"]*trl-pending', final_tokens)
    assert re.search(r'class="trl-tok[^"]*trl-pending', updates[0][3])  # routed when the model reads it


def test_ttlora_moe_shows_the_chosen_expert(client, space_server):
    status, _, _, views = _views(client.predict(space_server.models["ttlora"], TEXT, "all", "all",
                                                api_name="/analyze"))
    assert "TT-LoRA MoE" in status and "one per sequence" in status
    assert re.search(r'data-chosen="\d"', views[4]) and "router probabilities" in views[4]


def test_compare_puts_two_models_side_by_side(client, space_server):
    notes, left, right = client.predict(space_server.models["moelora"], space_server.models["talklora"], TEXT,
                                        api_name="/compare")
    assert "MoELoRA" in left and "TalkLoRA" in right and "MoELoRA" in notes and "TalkLoRA" in notes
    for column in (left, right):
        assert 'data-view="layer-heatmap"' in column and "data-expert" in column


@pytest.mark.parametrize("case, expected", [
    ("empty", "The text is empty"),
    ("unknown", "Unknown model `nobody/no-such-model`"),
    ("lora", "plain LoRA adapter"),
    ("long", "truncated to its first 64 tokens"),
])
def test_bad_input_gets_a_clear_message(client, space_server, case, expected):
    model = {"unknown": "nobody/no-such-model"}.get(case, space_server.models["lora" if case == "lora" else "talklora"])
    text = {"empty": "  ", "long": " ".join(["The Senate met today to discuss the budget."] * 12)}.get(case, TEXT)
    status, _, _, views = _views(client.predict(model, text, "all", "all", api_name="/analyze"))
    assert expected in status
    if case in ("empty", "unknown"):
        assert all(expected in view for view in views)  # the views repeat the message instead of stale output
    if case == "lora":
        assert "No token routing" in views[1]
    notes, left, _ = client.predict(model, space_server.models["talklora"], text, api_name="/compare")
    assert expected in notes or expected in left


def test_generate_refuses_an_empty_prompt(client, space_server):
    job = client.submit(space_server.models["talklora"], "", 4, "all", "all", api_name="/generate")
    job.result(timeout=60)
    assert "The prompt is empty" in job.outputs()[-1][0]
