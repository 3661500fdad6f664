"""The functions behind the Space's views, on tiny random models saved to folders and loaded back with
trust_remote_code (as the Space loads them): loading, capture, selections, the HTML views and the values
of the plot components."""

from __future__ import annotations

import json
import math
import re
import threading
import time

import gradio as gr
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from talklora_hub.analysis import routing_stats
from talklora_hub.space import capture, catalog, models, page, plots, selection, views
from talklora_hub.space.app import RoutingApp

TEXT = "The Senate met today. def add(a, b): return a + b"
LONG_TEXT = " ".join(["The Senate met today to discuss the budget."] * 12)


def _forward(loaded, ids):
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        return loaded.model(input_ids=input_ids, output_router_logits=True)


def _image(figure: Figure) -> torch.Tensor:
    """The heatmap's cell values, as drawn (the first image of the first axes)."""
    return torch.as_tensor(figure.axes[0].images[0].get_array().data)


# ---- loading ---------------------------------------------------------------------------------------

def test_load_reports_method_experts_and_limit(loaded):
    assert (loaded["talklora"].method, loaded["talklora"].num_experts) == ("talklora", 4)
    assert loaded["talklora"].token_routed and loaded["moelora"].token_routed
    assert not loaded["lora"].token_routed and not loaded["lora"].sequence_routed
    assert loaded["ttlora"].sequence_routed and loaded["ttlora"].num_experts == 3
    assert loaded["talklora"].max_tokens == 64 and "context length" in loaded["talklora"].limit_reason
    capped = models.load_model(loaded["talklora"].model_id, max_tokens_cap=16)
    assert capped.max_tokens == 16 and "cap of 16" in capped.limit_reason


def test_unknown_model_gets_a_clear_message(offline_hub, tmp_path):
    with pytest.raises(models.SpaceError, match=r"Unknown model `nobody/no-such-model`"):
        models.load_model("nobody/no-such-model")
    with pytest.raises(models.SpaceError, match="Unknown model"):
        models.load_model(str(tmp_path / "missing-folder"))
    with pytest.raises(models.SpaceError, match="No model chosen"):
        models.load_model("  ")


def test_model_cache_loads_once_and_drops_the_least_recent():
    calls = []
    cache = models.ModelCache(capacity=2, loader=lambda model_id: calls.append(model_id) or model_id)
    for model_id in ("a", "b", "a", "c", "a", "b"):
        cache.get(model_id)
    assert calls == ["a", "b", "c", "b"]


# ---- reading a text --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["talklora", "moelora"])
def test_analyze_returns_the_models_own_routing(loaded, method):
    model = loaded[method]
    routing = capture.analyze_text(model, TEXT)
    out = _forward(model, routing.token_ids)
    assert routing.weights.shape == (len(out.routing_weights), len(routing.tokens), 4)
    torch.testing.assert_close(routing.weights, torch.stack([w[0] for w in out.routing_weights]).float())
    assert routing.module_names == list(out.router_module_names)
    torch.testing.assert_close(routing.weights.sum(-1), torch.ones(routing.weights.shape[:2]))
    assert "".join(routing.tokens) == model.tokenizer.decode(routing.token_ids)
    assert routing.notes == [] and routing.done and not routing.generated


def test_token_texts_keep_multibyte_characters_whole(loaded):
    tokenizer = loaded["talklora"].tokenizer
    text = "café – naïve 日本語 ok"
    ids = tokenizer(text)["input_ids"]
    pieces, decoded = capture.token_texts(tokenizer, ids)
    assert decoded == text and "".join(pieces) == text and len(pieces) == len(ids)
    assert all("\ufffd" not in piece for piece in pieces)
    head, _ = capture.token_texts(tokenizer, ids[:5])
    assert capture.token_texts(tokenizer, ids, (head, tokenizer.decode(ids[:5])))[0] == pieces  # streaming


def test_long_text_is_truncated_and_said_so(loaded):
    routing = capture.analyze_text(loaded["talklora"], LONG_TEXT)
    assert len(routing.tokens) == 64 and routing.weights.shape[1] == 64
    assert any("truncated to its first 64 tokens" in note and "context length" in note for note in routing.notes)
    assert "truncated" in views.render_status(routing, loaded["talklora"])
    figure = plots.token_heatmap(routing)
    assert _image(figure).shape == (64, 4)
    assert figure.get_size_inches()[1] <= plots.TOKEN_HEATMAP_MAX_HEIGHT  # long texts stay on one screen


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_refused(loaded, text):
    with pytest.raises(models.SpaceError, match="empty"):
        capture.analyze_text(loaded["talklora"], text)
    with pytest.raises(models.SpaceError, match="empty"):
        next(capture.generate_routing(loaded["talklora"], text, 3))


def test_plain_lora_has_no_routing_and_says_so(loaded):
    routing = capture.analyze_text(loaded["lora"], TEXT)
    assert routing.weights is None and routing.sequence_probs is None
    assert any("plain LoRA" in note and "no routing" in note for note in routing.notes)
    shown = page.render_all(routing)
    assert shown.tokens.count('class="trl-tok"') == len(routing.tokens) and "data-expert" not in shown.tokens
    assert (shown.token_heatmap, shown.layer_heatmap, shown.entropy, shown.load, shown.sequence_probs) == (None,) * 5
    assert "No routing" in shown.balance and "No per-sequence router" in shown.sequence


def test_ttlora_moe_shows_the_expert_chosen_per_sequence(loaded):
    model = loaded["ttlora"]
    routing = capture.analyze_text(model, TEXT)
    assert routing.weights is None and len(routing.sequence_probs) == 3
    assert math.isclose(sum(routing.sequence_probs), 1.0, rel_tol=1e-5)
    out = _forward(model, routing.token_ids)
    assert routing.chosen_expert == int(out.sequence_router_logits[0].argmax())
    assert routing.chosen_expert == int(model.model.adapter_shared.sequence_experts[0])
    html = views.render_sequence_router(routing)
    assert f'data-chosen="{routing.chosen_expert}"' in html
    bars = plots.sequence_frame(routing)
    assert bars["expert"].tolist() == ["expert 0", "expert 1", "expert 2"]
    assert bars["weight"].tolist() == routing.sequence_probs
    tokens = views.render_tokens(routing)
    assert tokens.count(f'data-expert="{routing.chosen_expert}"') == len(routing.tokens)
    assert any("TT-LoRA MoE routes whole sequences" in note for note in routing.notes)
    assert plots.entropy_frame(routing) is None and plots.token_heatmap(routing) is None


# ---- selections and statistics ---------------------------------------------------------------------

def test_selections_pick_layers_and_modules(loaded):
    routing = capture.analyze_text(loaded["talklora"], TEXT)
    assert [v for _, v in selection.layer_choices(routing)] == ["all", "0", "1"]
    assert [v for _, v in selection.module_choices(routing)] == ["all", "self_attn.q_proj", "self_attn.k_proj",
                                                                 "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj"]
    assert selection.selected_modules(routing) == list(range(10))
    one = selection.selected_modules(routing, "1", "self_attn.q_proj")
    assert [routing.module_names[i] for i in one] == ["base.model.layers.1.self_attn.q_proj"]
    data = selection.token_view_data(routing, "1", "self_attn.q_proj")
    torch.testing.assert_close(data["mean"], routing.weights[one[0]])
    assert data["top"] == routing.weights[one[0]].argmax(-1).tolist()
    layer0 = selection.token_view_data(routing, "0")
    torch.testing.assert_close(layer0["mean"], routing.weights[:5].mean(0))
    with pytest.raises(models.SpaceError, match="No routed module matches"):
        selection.selection_weights(routing, "7")
    assert "No routed module matches" in views.render_tokens(routing, "7")
    assert plots.token_heatmap(routing, "7") is None and plots.load_frame(routing, "7") is None


@pytest.mark.parametrize("layer, module", [("all", "all"), ("1", "all"), ("all", "mlp.up_proj"),
                                           ("0", "self_attn.v_proj")])
def test_the_spaces_numbers_are_the_definitions(loaded, layer, module):
    """Every number the views show, recomputed here from its definition, bit for bit."""
    routing = capture.analyze_text(loaded["moelora"], TEXT)
    index = selection.selected_modules(routing, layer, module)
    stacked = routing.weights[index]  # (modules, tokens, E)
    load = stacked.reshape(-1, 4).float().mean(0)
    entropy = -(stacked * stacked.clamp_min(1e-12).log()).sum(-1)  # (modules, tokens)
    frame = plots.load_frame(routing, layer, module)
    assert torch.equal(torch.tensor(frame["weight"].tolist()), load)
    bars = plots.entropy_frame(routing, layer, module)
    assert torch.equal(torch.tensor(bars["entropy"].tolist()), entropy.mean(0))
    assert bars["top expert"].tolist() == [f"expert {e}" for e in stacked.mean(0).argmax(-1).tolist()]
    summary = routing_stats.balance_summary(stacked)
    assert summary["max_share"] == float(load.max())
    assert summary["load_cv"] == float(load.std(unbiased=False) / load.mean())
    assert summary["mean_entropy"] == float(entropy.mean())
    table = views.render_balance(routing, layer, module)
    assert f"{summary['load_cv']:.3f}" in table and f"{summary['mean_entropy']:.3f} nats" in table
    loads = selection.layer_load(routing, module)
    for layer_index, value in loads.items():
        rows = [i for i in selection.selected_modules(routing, str(layer_index), module)]
        assert torch.equal(value, torch.stack([routing.weights[i].mean(0) for i in rows]).mean(0))
    assert torch.equal(_image(plots.layer_heatmap(routing, module)).float(), torch.stack(list(loads.values())))


# ---- drawing ---------------------------------------------------------------------------------------

def test_views_render_every_token_cell_and_layer(loaded):
    routing = capture.analyze_text(loaded["talklora"], TEXT)
    count, experts = len(routing.tokens), 4
    shown = page.render_all(routing, "1", "mlp.up_proj")
    spans = re.findall(r'<span class="trl-tok[^"]*" data-expert="(\d)" style="[^"]*background:rgba[^"]*" '
                       r'title="([^"]*)"', shown.tokens)
    assert len(spans) == count
    top = routing.weights[selection.selected_modules(routing, "1", "mlp.up_proj")[0]].argmax(-1).tolist()
    assert [int(e) for e, _ in spans] == top
    assert "top expert" in spans[0][1] and "entropy" in spans[0][1] and "E3" in spans[0][1]
    assert isinstance(shown.token_heatmap, Figure) and _image(shown.token_heatmap).shape == (count, experts)
    assert isinstance(shown.layer_heatmap, Figure) and _image(shown.layer_heatmap).shape == (2, experts)
    assert len(shown.layer_heatmap.axes[0].patches) == 1  # the chosen layer is outlined
    assert len(plots.layer_heatmap(routing, "mlp.up_proj").axes[0].patches) == 0
    assert isinstance(shown.entropy, pd.DataFrame) and len(shown.entropy) == count
    assert shown.entropy["token"].tolist() == sorted(shown.entropy["token"])  # bars keep the text's order
    assert shown.load["expert"].tolist() == [f"expert {e}" for e in range(experts)]
    assert math.isclose(sum(shown.load["weight"]), 1.0, rel_tol=1e-5)
    assert set(shown.entropy["top expert"]) <= set(plots.EXPERT_COLOR_MAP)
    assert plots.EXPERT_COLOR_MAP["expert 2"] == views.expert_color(2, experts)  # bars match the tokens
    summary = routing_stats.balance_summary(selection.selection_weights(routing, "1", "mlp.up_proj"))
    assert f"{summary['load_cv']:.3f}" in shown.balance and f"{summary['max_share']:.3f}" in shown.balance
    assert "routes every token" in shown.sequence and shown.sequence_probs is None
    assert "<script" not in "".join((shown.tokens, shown.balance, shown.sequence))


def test_text_is_escaped_in_every_view(loaded):
    routing = capture.analyze_text(loaded["talklora"], "<b>bold</b> & ${x} {{y}}")
    shown = page.render_all(routing)
    for html in (shown.tokens, shown.balance, shown.sequence):
        assert "<b>" not in html and "${" not in html and "{{" not in html


def test_compare_columns_show_each_model(loaded):
    for method, label in (("moelora", "MoELoRA"), ("talklora", "TalkLoRA")):
        routing = capture.analyze_text(loaded[method], TEXT)
        html, heatmap, bars = page.compare_column(routing, loaded[method])
        assert label in html and 'data-view="tokens"' in html and 'data-view="balance"' in html
        assert _image(heatmap).shape == (2, 4) and len(bars) == 4
    routing = capture.analyze_text(loaded["ttlora"], TEXT)
    html, heatmap, bars = page.compare_column(routing, loaded["ttlora"])
    assert 'data-view="sequence"' in html and heatmap is None and bars["weight"].tolist() == routing.sequence_probs


# ---- generation ------------------------------------------------------------------------------------

def test_generation_streams_tokens_and_routes_every_one(loaded):
    model = loaded["talklora"]
    prompt = "The Senate met"
    updates = list(capture.generate_routing(model, prompt, max_new_tokens=6))
    prompt_ids = model.tokenizer(prompt)["input_ids"]
    final = updates[-1]
    assert final.done and not any(u.done for u in updates[:-1]) and final.generated
    assert len(final.tokens) == len(prompt_ids) + 6 and final.prompt_length == len(prompt_ids)
    lengths = [len(u.tokens) for u in updates]
    assert lengths == sorted(lengths) and len(set(lengths)) == 6
    assert all(u.routed_tokens <= len(u.tokens) for u in updates)
    assert final.routed_tokens == len(final.tokens)  # the last token is read too
    # Step-by-step routing (KV cache) equals one forward over the whole sequence.
    out = _forward(model, final.token_ids)
    torch.testing.assert_close(final.weights, torch.stack([w[0] for w in out.routing_weights]).float(),
                               rtol=1e-4, atol=1e-5)
    html = views.render_tokens(final)
    assert len(re.findall(r'class="trl-tok[^"]*trl-gen', html)) == 6
    assert not re.search(r'class="trl-tok[^"]*trl-pending', html)
    pending = views.render_tokens(updates[0])
    assert re.search(r'class="trl-tok[^"]*trl-pending', pending)  # a new token waits for the step reading it
    split = plots.token_heatmap(final).axes[0].lines  # the dashed line where generated tokens start
    assert len(split) == 1 and split[0].get_ydata()[0] == final.prompt_length - 0.5


def test_generation_uses_a_transformers_streamer():
    from transformers.generation.streamers import BaseStreamer

    assert issubclass(capture.QueueStreamer, BaseStreamer)


def test_generation_without_token_routing(loaded):
    updates = list(capture.generate_routing(loaded["lora"], "The Senate", max_new_tokens=3))
    assert updates[-1].done and updates[-1].weights is None and len(updates[-1].tokens) > 2
    moe = list(capture.generate_routing(loaded["ttlora"], "The Senate", max_new_tokens=3))[-1]
    probs = capture.analyze_text(loaded["ttlora"], "The Senate").sequence_probs
    assert moe.sequence_probs == pytest.approx(probs, abs=1e-5)  # chosen on the prompt


def test_generation_keeps_the_prompt_end_when_too_long(loaded):
    final = list(capture.generate_routing(loaded["moelora"], LONG_TEXT, max_new_tokens=10))[-1]
    assert final.prompt_length == 54 and len(final.tokens) == 64
    assert any("truncated to its last 54 tokens" in note for note in final.notes)


# ---- model lists -----------------------------------------------------------------------------------

def test_zoo_index_lists_full_causal_models(tmp_path, monkeypatch):
    index = {"entries": {
        "me/tiny-talklora": {"repo_id": "me/tiny-talklora", "kind": "model", "method": "talklora",
                             "method_label": "TalkLoRA", "head": "causal"},
        "me/tiny-expert": {"repo_id": "me/tiny-expert", "kind": "expert", "method": "moelora"},
        "me/tiny-router": {"repo_id": "me/tiny-router", "kind": "router", "method": "ttlora-moe"},
        "me/tiny-cls": {"repo_id": "me/tiny-cls", "kind": "model", "method": "lora", "head": "seqcls"},
    }}
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps(index))
    monkeypatch.setenv(catalog.ZOO_INDEX_ENV, str(path))
    assert catalog.list_zoo_models() == [("me/tiny-talklora (TalkLoRA)", "me/tiny-talklora")]
    monkeypatch.delenv(catalog.ZOO_INDEX_ENV)
    assert catalog.list_zoo_models() == []


def test_an_unreachable_or_slow_zoo_index_gives_an_empty_list(offline_hub, monkeypatch):
    monkeypatch.setenv(catalog.ZOO_INDEX_ENV, "nobody/unreachable-zoo")
    assert catalog.list_zoo_models() == []
    release = threading.Event()
    try:
        catalog.register_zoo_lister(lambda: release.wait(30) and ["late/model"])
        catalog.register_zoo_lister(lambda: 1 / 0)
        catalog.register_zoo_lister(lambda: ["quick/model"])
        started = time.monotonic()
        assert catalog.list_zoo_models(timeout=0.3) == [("quick/model", "quick/model")]
        assert time.monotonic() - started < 3
    finally:
        release.set()
        catalog.clear_zoo_listers()


@pytest.mark.parametrize("indent", ["  ", ""])  # hand-written, and as SpaceCardData writes lists
def test_model_choices_come_from_list_zoo_and_readme(tmp_path, monkeypatch, indent):
    readme = tmp_path / "README.md"
    readme.write_text(f"---\ntitle: x\nmodels:\n{indent}- org/a\n{indent}- org/b\ntags:\n{indent}- t\n---\n# hi\n")
    monkeypatch.delenv(catalog.MODELS_ENV, raising=False)
    monkeypatch.delenv(catalog.ZOO_INDEX_ENV, raising=False)
    assert catalog.resolve_model_choices(None, str(readme)) == [("org/a", "org/a"), ("org/b", "org/b")]
    monkeypatch.setenv(catalog.MODELS_ENV, "org/c, org/a")
    assert [m for _, m in catalog.resolve_model_choices(None, str(readme))] == ["org/c", "org/a"]
    try:
        catalog.register_zoo_lister(lambda: [{"repo_id": "zoo/d", "method": "moelora", "method_label": "MoELoRA"},
                                             "org/c", {"repo_id": "zoo/e", "method": "newmethod"}])
        choices = catalog.resolve_model_choices(["org/x"], str(readme))
        assert choices == [("org/x", "org/x"), ("zoo/d (MoELoRA)", "zoo/d"), ("org/c", "org/c")] + [
            ("zoo/e (newmethod)", "zoo/e")]  # an index entry without a label shows the method's name
    finally:
        catalog.clear_zoo_listers()
    local = tmp_path / "my-model"
    local.mkdir()
    assert catalog.resolve_model_choices([str(local)]) == [("my-model (local)", str(local))]


# ---- the app's handlers, without a server -----------------------------------------------------------

def test_app_handlers_return_views_and_messages(tiny_models, offline_hub):
    choices = [(m, tiny_models[m]) for m in ("talklora", "lora")]
    app = RoutingApp(choices, allow_any=False, cache=models.ModelCache(loader=models.load_model))
    state, status, layer, module, *shown = app.analyze(tiny_models["talklora"], TEXT, "1", "nope")
    assert isinstance(state, capture.Routing) and "TalkLoRA" in status
    assert layer["value"] == "1" and module["value"] == "all"  # an unknown module falls back to all
    assert len(shown) == len(page.Views._fields) and 'data-view="tokens"' in shown[0]
    assert isinstance(shown[1], Figure) and isinstance(shown[3], pd.DataFrame)
    redrawn = app.rerender(state, "0", "mlp.down_proj")
    assert len(redrawn) == page.SELECTION_VIEWS and redrawn[0].count("data-expert") == len(state.tokens)
    state, status, _, _, *shown = app.analyze("someone/else", TEXT)
    assert state is None and "not one of this Space's models" in status
    blank = page.Views(*shown)  # the HTML views repeat the message, the plots are cleared
    assert all("is not one of this Space" in html for html in (blank.tokens, blank.balance, blank.sequence))
    assert (blank.token_heatmap, blank.layer_heatmap, blank.entropy, blank.load, blank.sequence_probs) == (None,) * 5
    state, status, *_ = app.analyze(tiny_models["talklora"], "")
    assert state is None and "empty" in status
    updates = list(app.generate(tiny_models["talklora"], "The", 3))
    assert updates[-1][0].done and "3 generated" in updates[-1][1]
    first, last = page.Views(*updates[0][4:]), page.Views(*updates[-1][4:])
    assert isinstance(first.token_heatmap, Figure) and isinstance(last.token_heatmap, Figure)  # drawn, then kept
    for update in updates[1:-1]:  # in between: redrawn at most every HEATMAP_EVERY_S, else left as they are
        assert isinstance(update[5], Figure) or update[5] == gr.skip()
    notes, left, left_heat, left_bars, right, right_heat, right_bars = app.compare(
        tiny_models["talklora"], tiny_models["lora"], TEXT)
    assert "TalkLoRA" in left and "plain LoRA" in notes and isinstance(left_heat, Figure) and len(left_bars) == 4
    assert right_heat is None and right_bars is None


def test_a_model_without_an_adapter_shows_its_tokens_only(tmp_path):
    from .tiny_models import tiny_llama, tiny_tokenizer

    folder = tmp_path / "plain-llama"
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model = models.load_model(str(folder))
    assert model.method is None and model.kind == "not a talklora_hub model"
    routing = capture.analyze_text(model, TEXT)
    assert routing.weights is None and "not a talklora_hub adapter model" in routing.notes[0]
    assert views.render_tokens(routing).count('class="trl-tok"') == len(routing.tokens)
    assert list(capture.generate_routing(model, "The Senate", 2))[-1].done


def test_unexpected_errors_become_messages(capsys):
    def broken(model_id):
        raise RuntimeError("boom")

    app = RoutingApp([("m", "m")], cache=models.ModelCache(loader=broken))
    assert "Something went wrong: RuntimeError: boom" in app.analyze("m", TEXT)[1]
    assert "Something went wrong" in list(app.generate("m", TEXT, 2))[-1][1]
    assert "Something went wrong" in app.compare("m", "m", TEXT)[0]
    assert "RuntimeError: boom" in capsys.readouterr().err  # the traceback is logged
