"""The reports of benchmarks/quality/mixture_seeds.py and ttlora_interference.py, on hand-made records whose
answers are known: means and stds over seeds, pairing over (seed, example), and the interference table."""

import json
import statistics

import pytest

import mixture_seeds
import ttlora_interference

PNG = b"\x89PNG\r\n\x1a\n"
TASKS = ["spam", "fortune_topic"]


def write_record(folder, record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))


def lm_record(seed, hits):
    """hits: {task: "1011..."} -> a record with the fields the seeds report reads."""
    return {"seed": seed, "tasks": TASKS,
            "metrics": {t: {"accuracy": h.count("1") / len(h), "hits": h} for t, h in hits.items()}}


@pytest.fixture()
def seeds_run(tmp_path):
    """Shipped seed 0 of talklora and lora, and a seed 1 of each in the run folder (record only: no weights)."""
    shipped, out = tmp_path / "zoo", tmp_path / "out"
    hits = {  # (method, seed): {task: hits}
        ("talklora", 0): {"spam": "1100", "fortune_topic": "10"},
        ("talklora", 1): {"spam": "1110", "fortune_topic": "00"},
        ("lora", 0): {"spam": "1111", "fortune_topic": "11"},
        ("lora", 1): {"spam": "1111", "fortune_topic": "10"},
    }
    for (method, seed), h in hits.items():
        folder = (shipped / f"smollm2-{method}-mixture" if seed == 0
                  else out / "zoo" / f"smollm2-{method}-mixture-seed{seed}")
        write_record(folder, lm_record(seed, h))
    (shipped / "baselines.json").write_text(json.dumps({"spam": {"majority": {"value": 0.7}}}))
    return shipped, out, hits


def test_seeds_report_means_over_seeds_and_pairs_seed_with_seed(seeds_run):
    shipped, out, hits = seeds_run
    assert mixture_seeds.main(["--report-only", "--out", str(out), "--zoo", str(shipped)]) == 0
    result = json.loads((out / "seeds.json").read_text())
    talk = result["methods"]["talklora"]
    assert talk["seeds"] == [0, 1]
    assert talk["tasks"]["spam"]["values"] == [0.5, 0.75]
    assert talk["tasks"]["spam"]["std"] == pytest.approx(statistics.stdev([0.5, 0.75]))
    # The mean row averages the tasks within a seed, then over seeds: seed 0 (0.5 + 0.5) / 2, seed 1 (0.75 + 0) / 2.
    assert talk["tasks"]["mean"]["mean"] == pytest.approx((0.5 + 0.375) / 2)
    pair = result["paired"]["talklora - lora"]
    # 2 seeds x (4 + 2) examples, each talklora hit against lora's on the same seed and example.
    assert pair["n"] == 12 and pair["seeds"] == [0, 1]
    talk_hits = sum(h.count("1") for (m, _), t in hits.items() if m == "talklora" for h in t.values())
    lora_hits = sum(h.count("1") for (m, _), t in hits.items() if m == "lora" for h in t.values())
    assert pair["difference"] == pytest.approx((talk_hits - lora_hits) / 12)
    assert "moelora" not in result["methods"] and "talklora - moelora" not in result["paired"]
    assert (out / "seeds.png").read_bytes().startswith(PNG)
    assert "| talklora | 0,1 |" in (out / "SEEDS.md").read_text()


def test_seed_recipes_differ_from_the_shipped_one_by_name_and_seed_only():
    shipped = mixture_seeds.seed_recipe("lora", 0)
    other = mixture_seeds.seed_recipe("lora", 2)
    assert other.name == f"{shipped.name}-seed2" and other.train["seed"] == 2
    assert {k: v for k, v in other.train.items() if k != "seed"} == {k: v for k, v in shipped.train.items() if k != "seed"}


def router_record(tasks, hits, router_accuracy):
    return {"tasks": tasks,
            "metrics": {t: {"accuracy": h.count("1") / len(h), "low": 0.0, "high": 1.0, "n": len(h), "hits": h}
                        for t, h in hits.items()},
            "moe": {"tasks": {t: {"router_accuracy": router_accuracy[t], "expert_alone": h.count("1") / len(h)}
                              for t, h in hits.items()}}}


def test_interference_table_pairs_old_tasks_and_lists_the_new_one(tmp_path):
    shipped, out = tmp_path / "zoo", tmp_path / "out"
    _, new_router = ttlora_interference.recipes("sotu_era")
    old_tasks = list(new_router.task_names[:-1])
    before = {t: "1100" for t in old_tasks}
    after = {**{t: "1100" for t in old_tasks}, old_tasks[0]: "1001", "sotu_era": "10"}
    write_record(shipped / ttlora_interference.OLD_ROUTER, router_record(old_tasks, before, {t: 1.0 for t in old_tasks}))
    write_record(out / "zoo" / new_router.name,
                 router_record([*old_tasks, "sotu_era"], after, {**{t: 1.0 for t in old_tasks}, "sotu_era": 0.5}))
    write_record(out / "zoo" / ttlora_interference.entry_name("sotu_era"), {"parameters": {"trainable": 123}})
    result = ttlora_interference.interference(out / "zoo", shipped, "sotu_era")
    moved, still = result["tasks"][old_tasks[0]], result["tasks"][old_tasks[1]]
    assert moved["flipped"] == 2 and moved["paired"]["difference"] == 0.0  # 1100 -> 1001: two flips, same accuracy
    assert still["flipped"] == 0 and still["paired"]["difference"] == 0.0 and still["paired"]["p_value"] == 1.0
    assert "before" not in result["tasks"]["sotu_era"] and result["tasks"]["sotu_era"]["router_after"] == 0.5
    table = ttlora_interference.markdown(result)
    assert f"| {old_tasks[0]} | 0.500 | 0.500 | +0.000" in table and "| sotu_era (new) |" in table


def test_a_recipe_probe_changes_only_what_it_names(tmp_path):
    import recipe_probe

    shipped = recipe_probe.get_recipe("smollm2-lora-mixture")
    probe = recipe_probe.probe_recipe("smollm2-lora-mixture", max_length=160, bf16=True)
    assert probe.name == "smollm2-lora-mixture-len160"
    assert probe.train == {**shipped.train, "max_length": 160, "bf16": True}
    with pytest.raises(SystemExit, match="change at least one"):
        recipe_probe.probe_recipe("smollm2-lora-mixture", bf16=True)
    single = recipe_probe.probe_recipe("smollm2-lora-mixture", steps=480, tasks=["sotu_party"])
    assert single.name == "smollm2-lora-mixture-only-sotu-party-steps480"
    assert single.train == {**shipped.train, "tasks": ["sotu_party"], "max_steps": 480}
    pooled = recipe_probe.probe_recipe("minilm-talklora-sotu-party", lr=1e-3, modules_to_save=["bert.pooler"])
    assert pooled.name == "minilm-talklora-sotu-party-lr0.001-train-bert-pooler"
    assert pooled.train == {**recipe_probe.get_recipe("minilm-talklora-sotu-party").train, "lr": 1e-3,
                            "modules_to_save": ["bert.pooler"]}
    lora = recipe_probe.probe_recipe("minilm-talklora-fortune-topic", method="lora", seed=2)
    assert lora.name == "minilm-talklora-fortune-topic-lora-seed2"
    assert lora.train["method"] == "lora" and lora.train["num_experts"] is None and lora.train["seed"] == 2
    from talklora_hub.train.config import TrainConfig

    assert TrainConfig(**lora.train, output=str(tmp_path)).adapter.method == "lora"  # a config the trainer takes
    moe = recipe_probe.probe_recipe("minilm-talklora-fortune-topic", method="moelora")
    assert TrainConfig(**moe.train, output=str(tmp_path)).adapter.num_experts == 4  # the method's own default


def test_probe_pairs_pairs_the_same_seed_and_example(tmp_path):
    import probe_pairs
    from talklora_hub.zoo.shipped import EXPERT_META, RECORD, WEIGHTS

    def entry(name, hits):
        folder = tmp_path / name
        folder.mkdir()
        (folder / WEIGHTS).write_bytes(b"w")
        (folder / EXPERT_META).write_text("{}")
        (folder / RECORD).write_text(json.dumps({"metrics": {"spam": {"hits": hits}}}))

    # Seed 0: A right where B is wrong on 2 of 4; seed 1: both alike. Paired over 8 (seed, example) pairs: +0.25.
    entry("a0", "1110"), entry("b0", "1000"), entry("a1", "0101"), entry("b1", "0101")
    table = probe_pairs.pair_table(["a0", "a1"], ["b0", "b1"], [tmp_path], "A", "B")
    assert "| spam | 2 | 0.625 | 0.375 | +0.250 [" in table and "| 8 |" in table
    with pytest.raises(SystemExit, match="one per seed"):
        probe_pairs.pair_table(["a0"], ["b0", "b1"], [tmp_path], "A", "B")
    with pytest.raises(SystemExit, match="no scored record named 'c0'"):
        probe_pairs.pair_table(["c0"], ["b0"], [tmp_path], "A", "B")
