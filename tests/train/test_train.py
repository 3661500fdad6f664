"""train(): loss goes down, results are recorded, resume is exact, errors are clear."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from talklora_hub.train import TrainConfig, train
from talklora_hub.train.checkpoint import adapter_tensors, list_checkpoints
from talklora_hub.train.data import BatchPlan, collate, encode_examples, fit_prompt, join_causal

from .helpers import animals_task, build_tokenizer, colors_task, sums_task

QUIET = dict(progress=False, log_every=2, lr_scheduler="constant")


def test_causal_talklora_lowers_loss_and_records_everything(tiny_llama, tmp_path):
    result = train(TrainConfig(base=tiny_llama, tasks=[colors_task()], method="talklora", r=8, num_experts=4, lr=5e-2,
                               max_steps=12, batch_size=8, max_length=48, output=str(tmp_path), **QUIET))
    losses = [r["loss"] for r in result.losses]
    assert losses[-1] < losses[0] - 2.0, losses
    assert result.head == "causal" and result.steps == 12 and not result.stopped_early
    assert result.metrics["syn_colors"]["n"] >= 1 and 0.0 <= result.headline["syn_colors"] <= 1.0
    # routing health per module, per layer and overall, over the whole run
    modules, layers = result.routing["modules"], result.routing["layers"]
    assert len(modules) == 10 and list(layers) == ["0", "1"]
    first = next(iter(modules.values()))
    assert {"load", "mean_entropy", "normalized_entropy", "load_cv", "max_share", "dead_experts"} <= set(first)
    assert len(first["load"]) == 4 and abs(sum(first["load"]) - 1) < 1e-4
    assert "routing" in result.losses[0] and set(result.losses[0]["routing_layers"]) == {"0", "1"}
    # the saved model, its result json, and the checkpoint
    saved = json.loads((tmp_path / "model" / "train_result.json").read_text())
    assert saved["headline"] == result.headline and saved["config"]["adapter"]["method"] == "talklora"
    assert saved["parameter_counts"]["trainable"] < saved["parameter_counts"]["total"]
    assert saved["timing"]["tokens_per_second"] > 0 and saved["data"]["train"]["syn_colors"] > 0
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "train_result.json").is_file()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000012"]


def test_encoder_classification_head_lowers_loss(tiny_bert):
    result = train(TrainConfig(base=tiny_bert, tasks=[colors_task()], method="lora", r=8, lr=2e-2, max_steps=12,
                               batch_size=8, max_length=32, **QUIET))
    assert result.head == "classification"
    assert result.model.config.base_config.num_labels == 2
    losses = [r["loss"] for r in result.losses]
    assert losses[-1] < losses[0], losses
    assert "accuracy" in result.metrics["syn_colors"]


def test_mixture_of_classification_and_generation_tasks(tiny_llama):
    result = train(TrainConfig(base=tiny_llama, tasks=[colors_task(), sums_task()], method="moelora", r=8,
                               num_experts=2, num_experts_per_tok=1, lr=1e-2, max_steps=3, batch_size=4, max_length=40,
                               max_new_tokens=3, **QUIET))
    assert set(result.metrics) == {"syn_colors", "syn_sums"}
    assert "accuracy" in result.metrics["syn_colors"]
    assert "exact_match_final_number" in result.metrics["syn_sums"]
    assert result.metrics["syn_sums"]["samples"]


def _adapter(result):
    return adapter_tensors(result.model)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_continues_exactly_where_it_stopped(tiny_llama, tmp_path, grad_accum, caplog):
    common = dict(base=tiny_llama, tasks=[colors_task()], method="talklora", r=8, num_experts=4, num_experts_per_tok=2,
                  lora_dropout=0.1, lr=1e-2, max_steps=6, batch_size=4, grad_accum=grad_accum, max_length=40,
                  max_eval_examples=0, **QUIET)
    straight = train(TrainConfig(**common, output=str(tmp_path / "straight")))
    first = train(TrainConfig(**common, output=str(tmp_path / "resumed"), stop_after=3))
    assert first.stopped_early and first.steps == 3 and first.metrics == {}
    assert not (tmp_path / "resumed" / "model").exists()
    with caplog.at_level(logging.INFO, logger="talklora_hub"):
        resumed = train(TrainConfig(**common, output=str(tmp_path / "resumed"), resume=True))
    assert resumed.steps == 6
    assert any(r.getMessage().startswith("resumed from") and "at step 3/6" in r.getMessage() for r in caplog.records)
    a, b = _adapter(straight), _adapter(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [(r["step"], r["loss"]) for r in straight.losses] == [(r["step"], r["loss"]) for r in resumed.losses]
    assert straight.routing["modules"] == resumed.routing["modules"]


def test_resume_refuses_other_settings(tiny_llama, tmp_path):
    common = dict(base=tiny_llama, tasks=[colors_task()], method="lora", r=4, max_steps=2, batch_size=4,
                  max_length=32, max_eval_examples=0, output=str(tmp_path), **QUIET)
    train(TrainConfig(**common, stop_after=1))
    with pytest.raises(ValueError, match="`resume` must continue a run with the same settings"):
        train(TrainConfig(**{**common, "lr": 1e-3}, resume=True))


# ---- data pieces --------------------------------------------------------------------------------
def test_causal_encoding_masks_the_prompt_and_ends_with_eos():
    prompt, target = list(range(10, 40)), [7, 8]
    ids, plen = join_causal(prompt, target, eos=2, max_length=16)
    assert len(ids) == 16 and ids[-3:] == [7, 8, 2] and plen == 13
    assert ids[:plen] == fit_prompt(prompt, 13) and ids[plen - 1] == 39  # the prompt's tail survives
    tok = build_tokenizer()
    name, dd = colors_task(8)
    from talklora_hub.train.data import resolve_tasks

    data = resolve_tasks([(name, dd)], "causal", 0, None, None, "test")
    batch = collate(encode_examples(data.splits["train"][:2], tok, "causal", 64, data), "causal", tok.pad_token_id)
    labels, mask, prompt_mask = batch["labels"], batch["attention_mask"], batch["prompt_mask"]
    assert ((labels != -100) == (mask.bool() & ~prompt_mask.bool())).all()
    last = mask.sum(1) - 1
    assert (batch["input_ids"][torch.arange(2), last] == tok.eos_token_id).all()


def test_batch_plan_is_a_function_of_seed_and_step_and_splits_processes():
    plans = [BatchPlan(10, 2, 1, 2, rank, seed=3) for rank in (0, 1)]
    assert plans[0].steps_per_epoch == 3
    for step in range(7):
        a, b = plans[0].micro_batches(step), plans[1].micro_batches(step)
        assert len(a[0]) == len(b[0]) == 2 and not set(a[0]) & set(b[0]) or step % 3 == 2
    epoch0 = [i for step in range(2) for rank in (0, 1) for i in plans[rank].micro_batches(step)[0]]
    assert len(set(epoch0)) == 8
    assert BatchPlan(10, 2, 1, 2, 0, seed=3).micro_batches(5) == plans[0].micro_batches(5)


# ---- errors ---------------------------------------------------------------------------------------
def test_unknown_task_name_is_a_clear_error(tiny_llama):
    with pytest.raises(ValueError, match="task: must be a registered task name.*got 'no_such_task'"):
        train(TrainConfig(base=tiny_llama, tasks="no_such_task", max_steps=1, **QUIET))


def test_unknown_method_fails_before_loading_anything():
    with pytest.raises(ValueError, match="`method` must be one of .*got 'dora'"):
        TrainConfig(base="anything", tasks="spam", method="dora")


def test_empty_dataset_errors(tiny_llama):
    from datasets import Dataset, DatasetDict

    from talklora_hub.data import load_task_from_dataset

    with pytest.raises(ValueError, match="data: must contain at least one example"):
        load_task_from_dataset(Dataset.from_dict({"text": [], "label": []}), name="empty")
    name, dd = colors_task(16)
    nothing = DatasetDict({split: ds.select([]) for split, ds in dd.items()})
    with pytest.raises(ValueError, match="`tasks` task 'syn_colors' must have examples, got \\{'train': 0"):
        train(TrainConfig(base=tiny_llama, tasks=[(name, nothing)], max_steps=1, **QUIET))
    no_train = DatasetDict({"train": dd["train"].select([]), "validation": dd["validation"], "test": dd["test"]})
    with pytest.raises(ValueError, match="`tasks` every task needs training examples; \\['syn_colors'\\]"):
        train(TrainConfig(base=tiny_llama, tasks=[(name, no_train)], max_steps=1, **QUIET))


def test_missing_label_column_errors(tiny_llama, tiny_bert):
    name, dd = colors_task(16)
    with pytest.raises(ValueError, match="must have a 'label' column"):
        train(TrainConfig(base=tiny_llama, tasks=[(name, dd.remove_columns("label"))], max_steps=1, **QUIET))
    sums = sums_task(8)
    with pytest.raises(ValueError, match="generation task without a 'label' column"):
        train(TrainConfig(base=tiny_bert, tasks=[sums], max_steps=1, **QUIET))


def test_mixture_without_examples_errors(tiny_llama):
    from datasets import DatasetDict

    empty = []
    for make in (colors_task, animals_task):
        name, dd = make(8)
        empty.append((name, DatasetDict({split: ds.select([]) for split, ds in dd.items()})))
    with pytest.raises(ValueError, match="tasks: the mixture has no examples"):
        train(TrainConfig(base=tiny_llama, tasks=empty, max_steps=1, **QUIET))


def test_config_errors_name_argument_value_and_fix():
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer, got 0. Fix:"):
        TrainConfig(base="b", tasks="spam", batch_size=0)
    with pytest.raises(ValueError, match="`output` must be set to checkpoint or resume"):
        TrainConfig(base="b", tasks="spam", resume=True)
    with pytest.raises(ValueError, match="`num_experts` must be 1 for method='ttlora' when training"):
        TrainConfig(base="b", tasks="spam", method="ttlora", num_experts=3)
    with pytest.raises(ValueError, match="`tasks` must name each task once"):
        TrainConfig(base="b", tasks="spam,spam")


def test_the_adapter_is_an_adapter_settings_passed_whole_or_by_its_fields():
    from talklora_hub.modeling import AdapterSettings

    flat = TrainConfig(base="b", tasks="spam", method="moelora", r=8, num_experts_per_tok=2, lora_dropout=0.1)
    whole = TrainConfig(base="b", tasks="spam",
                        adapter=AdapterSettings(method="moelora", r=8, num_experts_per_tok=2, lora_dropout=0.1))
    assert flat == whole and flat.fingerprint() == whole.fingerprint()
    assert flat.adapter.num_experts == 4 and flat.to_dict()["adapter"] == flat.adapter.to_dict()
    # AdapterSettings' defaults, not copies of them: nothing set is AdapterSettings()
    assert TrainConfig(base="b", tasks="spam").adapter == AdapterSettings()
    with pytest.raises(ValueError, match="`num_experts_per_tok` must be in \\[1, num_experts=4\\], got 5. Fix:"):
        TrainConfig(base="b", tasks="spam", method="talklora", num_experts_per_tok=5)
    with pytest.raises(ValueError, match="`lora_droput` is neither a TrainConfig nor an AdapterSettings field, "
                                         "got 0.1. Fix: use 'lora_dropout'"):
        TrainConfig(base="b", tasks="spam", lora_droput=0.1)
    with pytest.raises(ValueError, match="`top_k` is neither a TrainConfig nor an AdapterSettings field, got 2"):
        TrainConfig(base="b", tasks="spam", top_k=2)
    with pytest.raises(ValueError, match="`adapter` cannot be combined with flat AdapterSettings fields, got \\['r'\\]"):
        TrainConfig(base="b", tasks="spam", adapter=AdapterSettings(), r=8)
    with pytest.raises(ValueError, match="`adapter` must be an AdapterSettings, got 'dict'"):
        TrainConfig(base="b", tasks="spam", adapter={"method": "lora"})


def test_the_fingerprint_covers_every_adapter_field():
    from talklora_hub.modeling import AdapterSettings

    base = TrainConfig(base="b", tasks="spam").fingerprint()
    changed = {"method": "moelora", "r": 16, "num_experts": 2, "num_experts_per_tok": 1, "lora_alpha": 8.0,
               "lora_dropout": 0.05, "target_modules": ["q_proj"], "share_expert_banks": False, "talk_init": "identity",
               "router_aux_loss_coef": 0.01, "router_jitter_noise": 0.01, "tt_rank": 3, "tt_alpha": 8.0,
               "tt_factors": {"q_proj": [[4, 4], [4, 4]]}, "modules_to_save": ["score"], "router_noise": "official",
               "talk_trainable": False}
    fields = {f.name for f in __import__("dataclasses").fields(AdapterSettings)}
    assert set(changed) == fields, "a new AdapterSettings field needs a case here"
    for name, value in changed.items():
        extra = {"talk_init": "identity"} if name == "talk_trainable" else {}
        assert TrainConfig(base="b", tasks="spam", **{name: value}, **extra).fingerprint() != base, name


def test_answer_only_logits_give_the_models_own_loss_and_scores(tiny_llama):
    from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
    from talklora_hub.train.evaluate import score_choices
    from talklora_hub.train.trainer import forward_loss

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(tiny_llama, AdapterSettings(method="talklora", r=8, router_aux_loss_coef=0.1))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    name, dd = colors_task(16)
    from talklora_hub.train.data import resolve_tasks

    data = resolve_tasks([(name, dd)], "causal", 0, None, None, "test")
    batch = collate(encode_examples(data.splits["train"][:3], tok, "causal", 64, data), "causal", tok.pad_token_id)
    model.train()
    _, full = forward_loss(model, batch, "causal", False, True, 0.1)
    _, kept = forward_loss(model, batch, "causal", True, True, 0.1)
    torch.testing.assert_close(kept, full)
    model.eval()
    prompts, options = ["Colors : red gold . Warm or cool ? Answer :"] * 2, [[" warm", " cool"], [" cool", " warm"]]
    kept_scores = score_choices(model, tok, prompts, options, 48)
    import talklora_hub.train.evaluate as ev

    original = ev.accepts_logits_to_keep
    ev.accepts_logits_to_keep = lambda m: False
    try:
        full_scores = score_choices(model, tok, prompts, options, 48)
    finally:
        ev.accepts_logits_to_keep = original
    torch.testing.assert_close(torch.tensor(kept_scores), torch.tensor(full_scores))
    # The same choice scored at another batch position: equal up to float32 reduction order (kernels
    # may block a batch differently by row), not bit for bit. A swapped or wrong score is off by far more.
    torch.testing.assert_close(torch.tensor(kept_scores[0]), torch.tensor(kept_scores[1][::-1]), rtol=1e-5, atol=1e-4)
    assert abs(kept_scores[0][0] - kept_scores[0][1]) > 1e-2  # the two choices really differ


def test_eval_only_scores_the_saved_run(tiny_llama, tmp_path):
    common = dict(base=tiny_llama, tasks=[colors_task()], method="lora", r=4, lr=5e-2, max_steps=3, batch_size=4,
                  max_length=40, output=str(tmp_path), **QUIET)
    trained = train(TrainConfig(**common))
    again = train(TrainConfig(**common, eval_only=True))
    assert again.metrics == trained.metrics
    assert json.loads((tmp_path / "train_result.json").read_text())["steps"] == 3  # the run's record is kept
    assert json.loads((tmp_path / "eval_result.json").read_text())["metrics"] == json.loads(json.dumps(trained.metrics))
    for n, t in adapter_tensors(trained.model).items():
        assert torch.equal(adapter_tensors(again.model)[n], t)


def test_bf16_falls_back_to_fp32_where_it_would_be_emulated(monkeypatch):
    from talklora_hub.train import build  # bf16_plan reads native_bf16 from its own module

    monkeypatch.setattr(build, "native_bf16", lambda on_cpu: False)
    assert build.bf16_plan(True, on_cpu=True)[0] == "no" and "AVX512-BF16" in build.bf16_plan(True, True)[1]
    assert build.bf16_plan("force", on_cpu=True) == ("bf16", None)
    assert build.bf16_plan(False, on_cpu=True) == (None, None)
    monkeypatch.setattr(build, "native_bf16", lambda on_cpu: True)
    assert build.bf16_plan(True, on_cpu=True) == ("bf16", None)
