"""The quality grid (benchmarks/quality/run_grid.py) and its report, end to end on tiny random models."""

import json

import pytest
import torch

import grid_measures
import grid_variants
import run_grid
from grid_quick import quick_base
from report import write_report

PNG = b"\x89PNG\r\n\x1a\n"
RICH = ["--quick", "--variants", "lora,moelora,talklora", "--lrs", "2e-2,5e-2", "--steps", "30", "--no-progress"]


@pytest.fixture(scope="module")
def rich_grid(tmp_path_factory):
    """A 3-variant grid with an lr search: (folder, first run's summary)."""
    out = tmp_path_factory.mktemp("grid")
    return out, run_grid.main(RICH + ["--out", str(out)])


def test_default_quick_grid_runs_and_reports(tmp_path):
    summary = run_grid.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    assert summary["trained"] == len(grid_variants.QUICK_VARIANTS) * 2  # 2 variants x 2 tasks x 1 seed
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "accuracy.png").read_bytes().startswith(PNG)


def test_cells_hold_scores_counts_losses_routing_and_stability(rich_grid):
    out, summary = rich_grid
    # 3 variants x 2 tasks x 2 lrs searched; the seed-0 cells reuse the search run at the chosen lr.
    assert summary["trained"] == 12 and summary["reused"] == 6
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(cells) == 6
    choice = json.loads((out / "lr_choice.json").read_text())
    for cell in cells.values():
        test = cell["test"]
        assert len(test["hits"]) == test["n"] > 0 and test["low"] <= test["accuracy"] <= test["high"]
        assert cell["parameter_counts"]["trainable"] > 0 and cell["losses"]
        assert cell["lr"] == choice[cell["variant"]]["lr"] and cell["lr_source"] == "search"
        assert "validation" in cell  # it was a search run
    talk = cells["talklora__syn_colors__seed0"]
    routing = talk["routing_test"]
    assert routing["tokens"] > 0 and set(routing["layers"]) == {"0", "1"}
    for figures in routing["modules"].values():
        assert sum(figures["load"]) == pytest.approx(1.0, abs=1e-4) and 0 < figures["load_entropy"] <= 1 + 1e-6
    assert talk["routing_over_training"] and set(talk["stability"]) == {"0.01", "0.05"}
    assert "routing_test" not in cells["lora__syn_colors__seed0"]


def test_report_renders_tables_sentences_and_plots(rich_grid):
    out, _ = rich_grid
    text = write_report(out).read_text()
    for heading in ("## (a) Accuracy", "### syn_colors", "### average over tasks", "## (b) Paired comparisons",
                    "### Where a method loses", "## (c) Routing balance", "## (d) Routing stability"):
        assert heading in text
    assert "| TalkLoRA − MoELoRA | pooled over seeds and tasks |" in text
    assert "| MoELoRA − LoRA | on syn_animals (pooled over seeds) |" in text
    assert "significant" in text and ("is below" in text or " tie " in text)
    assert "TalkLoRA's median ‖Δg‖/‖Δx‖ is" in text
    for name in ("accuracy.png", "routing_balance.png", "routing_over_training.png", "stability.png", "loss_curves.png"):
        assert (out / name).read_bytes().startswith(PNG), name


def test_a_second_run_trains_nothing(rich_grid, monkeypatch):
    out, _ = rich_grid
    monkeypatch.setattr(run_grid, "run_cell", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    summary = run_grid.main(RICH + ["--out", str(out)])
    assert summary["trained"] == 0 and summary["reused"] == 0 and summary["skipped"] == 12 + 6


def test_a_narrower_rerun_keeps_every_axis_in_grid_json(rich_grid, monkeypatch):
    out, _ = rich_grid
    monkeypatch.setattr(run_grid, "run_cell", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    narrow = [a if a != "lora,moelora,talklora" else "talklora" for a in RICH]
    run_grid.main(narrow + ["--out", str(out)])
    assert json.loads((out / "grid.json").read_text())["variants"] == ["lora", "moelora", "talklora"]


def test_a_changed_setting_refuses_the_folder(rich_grid):
    out, _ = rich_grid
    with pytest.raises(SystemExit, match="holds a grid with other settings"):
        run_grid.main([a if a != "30" else "31" for a in RICH] + ["--out", str(out)])


@pytest.mark.parametrize("arch,head", [("bert", "classification"), ("llama", "causal")])
def test_lora_matched_rank_is_the_closest_count(tmp_path, arch, head):
    base = quick_base(tmp_path / arch, arch)
    rank, lora_count, talk_count = grid_variants.matched_lora_rank(base, head, 8)
    assert talk_count == grid_variants.trainable_count(base, head, grid_variants.variant_fields("talklora", 8))
    counts = [grid_variants.trainable_count(base, head, {"method": "lora", "r": k}) for k in range(1, 25)]
    assert rank == grid_variants.closest_by_brute_force(counts, talk_count)
    assert lora_count == counts[rank - 1]


@pytest.mark.parametrize("method", ["moelora", "talklora"])
def test_stability_is_zero_without_noise_and_positive_with_it(tmp_path, method):
    from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(quick_base(tmp_path / "llama", "llama"),
                                          AdapterSettings(method=method, r=8, num_experts=4)).eval()
    ids = torch.randint(6, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding is ignored
    stability = grid_measures.routing_stability(model, [(ids, mask)], sigmas=(0.0, 0.05))
    modules = set(model.routed_module_names())
    for sigma, positive in (("0.0", False), ("0.05", True)):
        figures = stability[sigma]
        assert set(figures["modules"]) == modules and set(figures["layers"]) == {"0", "1"}
        values = list(figures["modules"].values()) + [figures["median"], figures["mean"]]
        assert all((v > 0) if positive else (v == 0) for v in values), (sigma, figures)


def test_a_grid_can_train_a_base_module_in_every_variant(tmp_path):
    """--modules-to-save bert.pooler: every cell trains the pooler too, its count is in every variant's
    (so the parameter-matched LoRA rank is unchanged), and the folder records the setting."""
    from transformers import AutoModel

    base = quick_base(tmp_path / "bert", "bert")
    shared = {"modules_to_save": ["bert.pooler"]}
    pooler = sum(p.numel() for p in AutoModel.from_pretrained(base).pooler.parameters())
    for variant in ("lora", "talklora"):
        fields = grid_variants.variant_fields(variant, 8)
        assert (grid_variants.trainable_count(base, "classification", fields, shared=shared)
                == grid_variants.trainable_count(base, "classification", fields) + pooler)
    assert (grid_variants.matched_lora_rank(base, "classification", 8, shared=shared)[0]
            == grid_variants.matched_lora_rank(base, "classification", 8)[0])
    out = tmp_path / "grid"
    run_grid.main(["--quick", "--variants", "lora", "--steps", "4", "--modules-to-save", "bert.pooler",
                   "--no-progress", "--out", str(out)])
    assert json.loads((out / "grid.json").read_text())["modules_to_save"] == ["bert.pooler"]
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert cells and all(c["fields"]["modules_to_save"] == ["bert.pooler"] for c in cells)


def test_two_shards_share_one_folder_and_run_every_cell_once(tmp_path, monkeypatch):
    """--shard 0/2 and 1/2 in parallel: each cell trained by exactly one process, the lr choice waiting for both
    shards' search cells (the training itself is replaced by a record of which cell ran)."""
    import threading

    calls = []

    def fake_cell(grid, variant, task, seed, lr, validation=False):
        calls.append((variant, task, seed, lr, validation))
        return {"variant": variant, "task": task, "seed": seed, "lr": lr,
                "validation": {"value": 1.0 if lr == 3e-3 and variant == "talklora" else 0.5}}

    monkeypatch.setattr(run_grid, "run_cell", fake_cell)
    monkeypatch.setattr(run_grid, "SEARCH_POLL_SECONDS", 0.02)
    grids = [run_grid.Grid(base="x", base_path="x", head="classification", tasks=["a", "b"],
                           variants=["lora", "talklora"], seeds=[0, 1], steps=1, max_length=8, batch_size=1, r=4,
                           lrs=[1e-3, 3e-3], out=tmp_path) for _ in range(2)]
    threads = [threading.Thread(target=run_grid.run_grid, args=(grids[k],), kwargs={"progress": False, "shard": (k, 2)})
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    search = [c for c in calls if c[4]]
    main = [c for c in calls if not c[4]]
    assert len(search) == len(set(search)) == 2 * 2 * 2  # variants x tasks x lrs, each once
    assert sorted((v, t, s) for v, t, s, _, _ in main) == [(v, t, 1) for v in ("lora", "talklora") for t in "ab"]
    assert {(v, lr) for v, _, _, lr, _ in main} == {("lora", 1e-3), ("talklora", 3e-3)}  # each at its chosen lr
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2 * 2 * 2
    with pytest.raises(SystemExit, match="--shard: must be K/N"):
        run_grid.parse_shard("2/2")


def test_lr_curves_table_and_plot_agree_with_the_grids_choice(rich_grid):
    import lr_curves

    out, _ = rich_grid
    choice = json.loads((out / "lr_choice.json").read_text())  # the last run's variants (a re-run may pick fewer)
    rows = lr_curves.table(out)[2:]
    assert len(rows) == 3 and all("—" not in row for row in rows)  # every searched variant, every task and rate
    for variant, chosen in choice.items():
        row = next(r for r in rows if r.startswith(f"| {lr_curves.label(variant)} |"))
        assert row.endswith(f"| {chosen['lr']:g} |")
    assert lr_curves.plot(out).read_bytes().startswith(PNG)
    assert "![learning-rate curves](lr_curves.png)" in (out / "REPORT.md").read_text()
