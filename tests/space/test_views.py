"""The functions behind the Space's views, on tiny random models saved to folders and loaded back with
trust_remote_code (as the Space loads them)."""

from __future__ import annotations

import json
import math
import re
import threading
import time

import pytest
import torch

from talklora_hub.analysis import routing_stats
from talklora_hub.space import routing_views as rv
from talklora_hub.space.app import RoutingApp

TEXT = "The Senate met today. def add(a, b): return a + b"
LONG_TEXT = " ".join(["The Senate met today to discuss the budget."] * 12)


def _forward(loaded, ids):
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        return loaded.model(input_ids=input_ids, output_router_logits=True)


# ---- loading ---------------------------------------------------------------------------------------

def test_load_reports_method_experts_and_limit(loaded):
    assert (loaded["talklora"].method, loaded["talklora"].num_experts) == ("talklora", 4)
    assert loaded["talklora"].token_routed and loaded["moelora"].token_routed
    assert not loaded["lora"].token_routed and not loaded["lora"].sequence_routed
    assert loaded["ttlora"].sequence_routed and loaded["ttlora"].num_experts == 3
    assert loaded["talklora"].max_tokens == 64 and "context length" in loaded["talklora"].limit_reason
    capped = rv.load_model(loaded["talklora"].model_id, max_tokens_cap=16)
    assert capped.max_tokens == 16 and "cap of 16" in capped.limit_reason


def test_unknown_model_gets_a_clear_message(offline_hub, tmp_path):
    with pytest.raises(rv.SpaceError, match=r"Unknown model `nobody/no-such-model`"):
        rv.load_model("nobody/no-such-model")
    with pytest.raises(rv.SpaceError, match="Unknown model"):
        rv.load_model(str(tmp_path / "missing-folder"))
    with pytest.raises(rv.SpaceError, match="No model chosen"):
        rv.load_model("  ")


def test_model_cache_loads_once_and_drops_the_least_recent():
    calls = []
    cache = rv.ModelCache(capacity=2, loader=lambda model_id: calls.append(model_id) or model_id)
    for model_id in ("a", "b", "a", "c", "a", "b"):
        cache.get(model_id)
    assert calls == ["a", "b", "c", "b"]


# ---- reading a text --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["talklora", "moelora"])
def test_analyze_returns_the_models_own_routing(loaded, method):
    model = loaded[method]
    routing = rv.analyze_text(model, TEXT)
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
    pieces, decoded = rv.token_texts(tokenizer, ids)
    assert decoded == text and "".join(pieces) == text and len(pieces) == len(ids)
    assert all("\ufffd" not in piece for piece in pieces)
    head, _ = rv.token_texts(tokenizer, ids[:5])
    assert rv.token_texts(tokenizer, ids, (head, tokenizer.decode(ids[:5])))[0] == pieces  # streaming


def test_long_text_is_truncated_and_said_so(loaded):
    routing = rv.analyze_text(loaded["talklora"], LONG_TEXT)
    assert len(routing.tokens) == 64 and routing.weights.shape[1] == 64
    assert any("truncated to its first 64 tokens" in note and "context length" in note for note in routing.notes)
    assert "truncated" in rv.render_status(routing, loaded["talklora"])


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_refused(loaded, text):
    with pytest.raises(rv.SpaceError, match="empty"):
        rv.analyze_text(loaded["talklora"], text)
    with pytest.raises(rv.SpaceError, match="empty"):
        next(rv.generate_routing(loaded["talklora"], text, 3))


def test_plain_lora_has_no_routing_and_says_so(loaded):
    routing = rv.analyze_text(loaded["lora"], TEXT)
    assert routing.weights is None and routing.sequence_probs is None
    assert any("plain LoRA" in note and "no routing" in note for note in routing.notes)
    tokens, token_heat, layer_heat, stats, sequence = rv.render_all(routing)
    assert tokens.count('class="trl-tok"') == len(routing.tokens) and "data-expert" not in tokens
    for view in (token_heat, layer_heat, stats):
        assert "No token routing" in view or "No routing" in view
    assert "No per-sequence router" in sequence


def test_ttlora_moe_shows_the_expert_chosen_per_sequence(loaded):
    model = loaded["ttlora"]
    routing = rv.analyze_text(model, TEXT)
    assert routing.weights is None and len(routing.sequence_probs) == 3
    assert math.isclose(sum(routing.sequence_probs), 1.0, rel_tol=1e-5)
    out = _forward(model, routing.token_ids)
    assert routing.chosen_expert == int(out.sequence_router_logits[0].argmax())
    assert routing.chosen_expert == int(model.model.adapter_shared.sequence_experts[0])
    html = rv.render_sequence_router(routing)
    assert f'data-chosen="{routing.chosen_expert}"' in html and html.count('class="trl-bar"') == 3
    tokens = rv.render_tokens(routing)
    assert tokens.count(f'data-expert="{routing.chosen_expert}"') == len(routing.tokens)
    assert any("TT-LoRA MoE routes whole sequences" in note for note in routing.notes)


# ---- selections and statistics ---------------------------------------------------------------------

def test_selections_pick_layers_and_modules(loaded):
    routing = rv.analyze_text(loaded["talklora"], TEXT)
    assert [v for _, v in rv.layer_choices(routing)] == ["all", "0", "1"]
    assert [v for _, v in rv.module_choices(routing)] == ["all", "self_attn.q_proj", "self_attn.k_proj",
                                                          "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj"]
    assert rv.selected_modules(routing) == list(range(10))
    one = rv.selected_modules(routing, "1", "self_attn.q_proj")
    assert [routing.module_names[i] for i in one] == ["base.model.layers.1.self_attn.q_proj"]
    data = rv.token_view_data(routing, "1", "self_attn.q_proj")
    torch.testing.assert_close(data["mean"], routing.weights[one[0]])
    assert data["top"] == routing.weights[one[0]].argmax(-1).tolist()
    layer0 = rv.token_view_data(routing, "0")
    torch.testing.assert_close(layer0["mean"], routing.weights[:5].mean(0))
    with pytest.raises(rv.SpaceError, match="No routed module matches"):
        rv.selection_weights(routing, "7")
    assert "No routed module matches" in rv.render_tokens(routing, "7")


def test_statistics_agree_with_talklora_hub_analysis(loaded):
    routing = rv.analyze_text(loaded["moelora"], TEXT)
    weights, names = routing.weights, routing.module_names
    assert rv.balance_summary(weights) == pytest.approx(routing_stats.balance_summary(weights))
    assert rv.balance_summary(weights[3]) == pytest.approx(routing_stats.balance_summary(weights[3]))
    torch.testing.assert_close(rv.token_entropy(weights), routing_stats.token_entropy(weights))
    torch.testing.assert_close(rv.expert_load(weights[2]), routing_stats.expert_load(weights[2]))
    expected = routing_stats.layer_load_matrix(list(weights), names)
    ours = rv.layer_load(routing)
    assert list(ours) == list(expected)
    for layer in expected:
        torch.testing.assert_close(ours[layer], expected[layer])
    assert all(rv.layer_index_of(n) == routing_stats.layer_index_of(n) for n in names)
    uniform = torch.full((3, 4), 0.25)
    assert rv.balance_summary(uniform)["normalized_entropy"] == pytest.approx(1.0)


# ---- drawing ---------------------------------------------------------------------------------------

def test_views_render_every_token_cell_and_layer(loaded):
    routing = rv.analyze_text(loaded["talklora"], TEXT)
    count, experts = len(routing.tokens), 4
    tokens, token_heat, layer_heat, stats, sequence = rv.render_all(routing, "1", "mlp.up_proj")
    spans = re.findall(r'<span class="trl-tok[^"]*" data-expert="(\d)" style="[^"]*background:rgba[^"]*" '
                       r'title="([^"]*)"', tokens)
    assert len(spans) == count
    top = routing.weights[rv.selected_modules(routing, "1", "mlp.up_proj")[0]].argmax(-1).tolist()
    assert [int(e) for e, _ in spans] == top
    assert "top expert" in spans[0][1] and "entropy" in spans[0][1] and "E3" in spans[0][1]
    assert token_heat.count('class="trl-cell"') == count * experts and f'data-rows="{count}"' in token_heat
    assert layer_heat.count('class="trl-cell"') == 2 * experts and "layer 1" in layer_heat
    assert 'stroke-width="2"' in layer_heat  # the chosen layer is outlined
    assert stats.count('class="trl-bar"') == count + experts  # entropy bars + load bars
    summary = rv.balance_summary(rv.selection_weights(routing, "1", "mlp.up_proj"))
    assert f"{summary['load_cv']:.3f}" in stats and f"{summary['max_share']:.3f}" in stats
    assert "routes every token" in sequence
    assert "<script" not in "".join((tokens, token_heat, layer_heat, stats))


def test_text_is_escaped_in_every_view(loaded):
    routing = rv.analyze_text(loaded["talklora"], "<b>bold</b> & ${x} {{y}}")
    for view in rv.render_all(routing):
        assert "<b>" not in view and "${" not in view and "{{" not in view


def test_compare_columns_show_each_model(loaded):
    a = rv.analyze_text(loaded["moelora"], TEXT)
    b = rv.analyze_text(loaded["talklora"], TEXT)
    left, right = rv.render_compare_column(a, loaded["moelora"]), rv.render_compare_column(b, loaded["talklora"])
    assert "MoELoRA" in left and "TalkLoRA" in right
    for column in (left, right):
        assert 'data-view="tokens"' in column and 'data-view="layer-heatmap"' in column
        assert 'data-view="stats"' in column


# ---- generation ------------------------------------------------------------------------------------

def test_generation_streams_tokens_and_routes_every_one(loaded):
    model = loaded["talklora"]
    prompt = "The Senate met"
    updates = list(rv.generate_routing(model, prompt, max_new_tokens=6))
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
    html = rv.render_tokens(final)
    assert len(re.findall(r'class="trl-tok[^"]*trl-gen', html)) == 6
    assert not re.search(r'class="trl-tok[^"]*trl-pending', html)
    pending = rv.render_tokens(updates[0])
    assert re.search(r'class="trl-tok[^"]*trl-pending', pending)  # a new token waits for the step reading it


def test_generation_without_token_routing(loaded):
    updates = list(rv.generate_routing(loaded["lora"], "The Senate", max_new_tokens=3))
    assert updates[-1].done and updates[-1].weights is None and len(updates[-1].tokens) > 2
    moe = list(rv.generate_routing(loaded["ttlora"], "The Senate", max_new_tokens=3))[-1]
    probs = rv.analyze_text(loaded["ttlora"], "The Senate").sequence_probs
    assert moe.sequence_probs == pytest.approx(probs, abs=1e-5)  # chosen on the prompt


def test_generation_keeps_the_prompt_end_when_too_long(loaded):
    final = list(rv.generate_routing(loaded["moelora"], LONG_TEXT, max_new_tokens=10))[-1]
    assert final.prompt_length == 54 and len(final.tokens) == 64
    assert any("truncated to its last 54 tokens" in note for note in final.notes)


# ---- model lists -----------------------------------------------------------------------------------

def test_zoo_index_lists_full_causal_models(tmp_path, monkeypatch):
    index = {"entries": {
        "me/tiny-talklora": {"repo_id": "me/tiny-talklora", "kind": "model", "method": "talklora", "head": "causal"},
        "me/tiny-expert": {"repo_id": "me/tiny-expert", "kind": "expert", "method": "moelora"},
        "me/tiny-router": {"repo_id": "me/tiny-router", "kind": "router", "method": "ttlora-moe"},
        "me/tiny-cls": {"repo_id": "me/tiny-cls", "kind": "model", "method": "lora", "head": "seqcls"},
    }}
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps(index))
    monkeypatch.setenv(rv.ZOO_INDEX_ENV, str(path))
    assert rv.list_zoo_models() == [("me/tiny-talklora (TalkLoRA)", "me/tiny-talklora")]
    monkeypatch.delenv(rv.ZOO_INDEX_ENV)
    assert rv.list_zoo_models() == []


def test_an_unreachable_or_slow_zoo_index_gives_an_empty_list(offline_hub, monkeypatch):
    monkeypatch.setenv(rv.ZOO_INDEX_ENV, "nobody/unreachable-zoo")
    assert rv.list_zoo_models() == []
    release = threading.Event()
    try:
        rv.register_zoo_lister(lambda: release.wait(30) and ["late/model"])
        rv.register_zoo_lister(lambda: 1 / 0)
        rv.register_zoo_lister(lambda: ["quick/model"])
        started = time.monotonic()
        assert rv.list_zoo_models(timeout=0.3) == [("quick/model", "quick/model")]
        assert time.monotonic() - started < 3
    finally:
        release.set()
        rv.clear_zoo_listers()


def test_model_choices_come_from_list_zoo_and_readme(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("---\ntitle: x\nmodels:\n  - org/a\n  - org/b\ntags:\n  - t\n---\n# hi\n")
    monkeypatch.delenv(rv.MODELS_ENV, raising=False)
    monkeypatch.delenv(rv.ZOO_INDEX_ENV, raising=False)
    assert rv.resolve_model_choices(None, str(readme)) == [("org/a", "org/a"), ("org/b", "org/b")]
    monkeypatch.setenv(rv.MODELS_ENV, "org/c, org/a")
    assert [m for _, m in rv.resolve_model_choices(None, str(readme))] == ["org/c", "org/a"]
    try:
        rv.register_zoo_lister(lambda: [{"repo_id": "zoo/d", "method": "moelora"}, "org/c"])
        choices = rv.resolve_model_choices(["org/x"], str(readme))
        assert choices == [("org/x", "org/x"), ("zoo/d (MoELoRA)", "zoo/d"), ("org/c", "org/c")]
    finally:
        rv.clear_zoo_listers()
    local = tmp_path / "my-model"
    local.mkdir()
    assert rv.resolve_model_choices([str(local)]) == [("my-model (local)", str(local))]


# ---- the app's handlers, without a server -----------------------------------------------------------

def test_app_handlers_return_views_and_messages(tiny_models, offline_hub):
    choices = [(m, tiny_models[m]) for m in ("talklora", "lora")]
    app = RoutingApp(choices, allow_any=False, cache=rv.ModelCache(loader=rv.load_model))
    state, status, layer, module, *views = app.analyze(tiny_models["talklora"], TEXT, "1", "nope")
    assert isinstance(state, rv.Routing) and "TalkLoRA" in status
    assert layer["value"] == "1" and module["value"] == "all"  # an unknown module falls back to all
    assert len(views) == 5 and 'data-view="tokens"' in views[0]
    assert app.rerender(state, "0", "mlp.down_proj")[0].count("data-expert") == len(state.tokens)
    state, status, *_ = app.analyze("someone/else", TEXT)
    assert state is None and "not one of this Space's models" in status
    state, status, *_ = app.analyze(tiny_models["talklora"], "")
    assert state is None and "empty" in status
    updates = list(app.generate(tiny_models["talklora"], "The", 3))
    assert updates[-1][0].done and "3 generated" in updates[-1][1]
    notes, left, right = app.compare(tiny_models["talklora"], tiny_models["lora"], TEXT)
    assert "TalkLoRA" in left and "plain LoRA" in notes


def test_a_model_without_an_adapter_shows_its_tokens_only(tmp_path):
    from .tiny_models import tiny_llama, tiny_tokenizer

    folder = tmp_path / "plain-llama"
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model = rv.load_model(str(folder))
    assert model.method is None and model.kind == "not a talklora_hub model"
    routing = rv.analyze_text(model, TEXT)
    assert routing.weights is None and "not a talklora_hub adapter model" in routing.notes[0]
    assert rv.render_tokens(routing).count('class="trl-tok"') == len(routing.tokens)
    assert list(rv.generate_routing(model, "The Senate", 2))[-1].done


def test_unexpected_errors_become_messages(capsys):
    def broken(model_id):
        raise RuntimeError("boom")

    app = RoutingApp([("m", "m")], cache=rv.ModelCache(loader=broken))
    assert "Something went wrong: RuntimeError: boom" in app.analyze("m", TEXT)[1]
    assert "Something went wrong" in list(app.generate("m", TEXT, 2))[-1][1]
    assert "Something went wrong" in app.compare("m", "m", TEXT)[0]
    assert "RuntimeError: boom" in capsys.readouterr().err  # the traceback is logged
