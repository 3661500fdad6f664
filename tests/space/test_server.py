"""The deployed Space folder served by `python app.py` (talklora_hub unimportable) and driven over HTTP
with gradio_client: every endpoint returns its views for real input and a clear message for bad input."""

from __future__ import annotations

import base64
import io
import re

import pytest

from talklora_hub.space.page import Views

pytest.importorskip("gradio_client")

TEXT = "The Senate met today. def add(a, b): return a + b"


@pytest.fixture(scope="module")
def client(space_server):
    from gradio_client import Client

    return Client(space_server.url, verbose=False, analytics_enabled=False, download_files=False)


def _views(result):
    status, layer, module, *views = result
    return status, layer, module, Views(*views)


def _png_size(plot):
    """(width, height) of a gr.Plot value as the client receives it (a matplotlib figure as a PNG)."""
    from PIL import Image

    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(plot["plot"].split(",", 1)[1]))) as image:
        return image.size


def _bars(plot):
    """{column: values} of a gr.BarPlot value as the client receives it."""
    assert plot["mark"] == "bar"
    return {name: [row[i] for row in plot["data"]] for i, name in enumerate(plot["columns"])}


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
    count = len(re.findall(r'class="trl-tok[^"]*" data-expert="\d"', views.tokens))
    assert count > 10 and "of layer 1" in views.tokens
    for heatmap in (views.token_heatmap, views.layer_heatmap):
        width, height = _png_size(heatmap)
        assert width > 200 and height > 200
    entropy = _bars(views.entropy)
    assert len(entropy["token"]) == count and all(e >= 0 for e in entropy["entropy"])
    load = _bars(views.load)
    assert load["expert"] == [f"expert {e}" for e in range(4)] and sum(load["weight"]) == pytest.approx(1.0)
    assert "load CV" in views.balance and "max share" in views.balance
    assert 'data-view="sequence"' in views.sequence and views.sequence_probs is None


def test_generate_streams_updates(client, space_server):
    job = client.submit(space_server.models["talklora"], "The Senate", 4, "all", "all", api_name="/generate")
    job.result(timeout=60)
    updates = job.outputs()
    assert len(updates) >= 4
    statuses = [u[0] for u in updates]
    assert "generating…" in statuses[0] and "4 generated" in statuses[-1] and "generating…" not in statuses[-1]
    final_tokens = updates[-1][3]
    assert _png_size(updates[-1][4])[1] > 200  # the final update draws the heatmaps
    assert len(re.findall(r'class="trl-tok[^"]*trl-gen', final_tokens)) == 4
    assert not re.search(r'class="trl-tok[^"]*trl-pending', final_tokens)
    assert re.search(r'class="trl-tok[^"]*trl-pending', updates[0][3])  # routed when the model reads it


def test_ttlora_moe_shows_the_chosen_expert(client, space_server):
    status, _, _, views = _views(client.predict(space_server.models["ttlora"], TEXT, "all", "all",
                                                api_name="/analyze"))
    assert "TT-LoRA MoE" in status and "one per sequence" in status
    assert re.search(r'data-chosen="\d"', views.sequence) and "router probabilities" in views.sequence
    probabilities = _bars(views.sequence_probs)["weight"]
    assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert views.token_heatmap is None and views.entropy is None


def test_compare_puts_two_models_side_by_side(client, space_server):
    notes, left, left_heat, left_bars, right, right_heat, right_bars = client.predict(
        space_server.models["moelora"], space_server.models["talklora"], TEXT, api_name="/compare")
    assert "MoELoRA" in left and "TalkLoRA" in right and "MoELoRA" in notes and "TalkLoRA" in notes
    for column, heatmap, bars in ((left, left_heat, left_bars), (right, right_heat, right_bars)):
        assert 'data-view="balance"' in column and "data-expert" in column
        assert _png_size(heatmap)[0] > 200 and len(_bars(bars)["weight"]) == 4


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
    if case in ("empty", "unknown"):  # the views repeat the message, and no stale plot stays on the page
        assert all(expected in html for html in (views.tokens, views.balance, views.sequence))
        assert (views.token_heatmap, views.layer_heatmap, views.entropy, views.load) == (None,) * 4
    if case == "lora":
        assert "No routing" in views.balance and views.token_heatmap is None
    notes, left, *_ = client.predict(model, space_server.models["talklora"], text, api_name="/compare")
    assert expected in notes or expected in left


def test_generate_refuses_an_empty_prompt(client, space_server):
    job = client.submit(space_server.models["talklora"], "", 4, "all", "all", api_name="/generate")
    job.result(timeout=60)
    assert "The prompt is empty" in job.outputs()[-1][0]
