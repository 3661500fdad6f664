"""The `train` command line, --push hand-over, and tiny slices of the real tasks where cached."""

from __future__ import annotations

import json

import pytest

from talklora_hub.cli import build_parser, main
from talklora_hub.train import TrainConfig, train
from talklora_hub.cli.train import cmd_train, cmd_ttlora_moe, config_from_args

from .helpers import colors_task


def test_train_parser_builds_the_config():
    args = build_parser().parse_args(["train", "--base", "b", "--method", "lora", "--task", "spam,gsm8k", "--r", "8",
                                      "--max-steps", "5", "--bf16", "--resume", "--output", "o"])
    assert args.func is cmd_train
    cfg = config_from_args(args)
    assert cfg.tasks == ["spam", "gsm8k"] and cfg.adapter.method == "lora" and cfg.adapter.r == 8 and cfg.max_steps == 5
    assert cfg.bf16 and cfg.resume is True and cfg.output == "o"


def _config(*argv):
    return config_from_args(build_parser().parse_args(["train", "--base", "b", "--task", "spam", *argv]))


def test_train_options_are_the_dataclasses_fields_with_their_defaults():
    from talklora_hub.modeling import AdapterSettings

    assert _config() == TrainConfig(base="b", tasks="spam")  # no default of its own on the command line
    cfg = _config("--method", "moelora", "--num-experts-per-tok", "2", "--router-aux-loss-coef", "0.01",
                  "--lr-scheduler", "cosine", "--lora-dropout", "0.1", "--ttlora-experts", "", "--talk-init", "identity",
                  "--max-grad-norm", "0.5", "--share-expert-banks", "false")
    assert cfg.adapter == AdapterSettings(method="moelora", num_experts_per_tok=2, router_aux_loss_coef=0.01,
                                          lora_dropout=0.1, talk_init="identity", share_expert_banks=False)
    assert cfg.lr_scheduler == "cosine" and cfg.max_grad_norm == 0.5 and cfg.ttlora_experts is None


def test_the_older_flags_keep_working():
    cfg = _config("--method", "talklora", "--top-k", "2", "--aux-loss-coef", "0.01", "--scheduler", "constant",
                  "--target-modules", "re:model\\.layers\\.(2[0-9])\\..*(q|v)_proj", "--bf16", "force", "--no-progress")
    assert cfg.adapter.num_experts_per_tok == 2 and cfg.adapter.router_aux_loss_coef == 0.01
    assert cfg.adapter.target_modules == "model\\.layers\\.(2[0-9])\\..*(q|v)_proj"
    assert cfg.lr_scheduler == "constant" and cfg.bf16 == "force" and cfg.progress is False
    assert _config("--target-modules", "q_proj, v_proj").adapter.target_modules == ["q_proj", "v_proj"]
    cfg = _config("--method", "ttlora", "--task", "spam,sotu_party", "--experts", "e1,e2", "--resume", "ck",
                  "--output", "o")
    assert cfg.ttlora_experts == ["e1", "e2"] and cfg.resume == "ck"
    args = build_parser().parse_args(["train", "--base", "b", "--task", "spam", "--push", "me/model"])
    assert args.push == "me/model" and "push" not in TrainConfig.__dataclass_fields__  # training does not publish


def test_ttlora_moe_options_default_to_the_recipe_settings():
    from talklora_hub.cli.train import _fields
    from talklora_hub.train.ttlora_moe_protocol import RecipeSettings

    args = build_parser().parse_args(["train", "ttlora-moe", "--base", "b", "--task", "spam,fortune_topic"])
    assert RecipeSettings(**_fields(args, RecipeSettings)) == RecipeSettings()
    args = build_parser().parse_args(["train", "ttlora-moe", "--base", "b", "--task", "spam", "--no-lora",
                                      "--no-oracle", "--no-progress", "--bf16", "force"])
    assert (args.include_lora, args.oracle, args.progress, args.bf16) == (False, False, False, "force")


def test_ttlora_moe_recipe_parser():
    args = build_parser().parse_args(["train", "ttlora-moe", "--base", "b", "--task", "spam,fortune_topic",
                                      "--expert-steps", "3", "--tt-rank", "4", "--batch-size", "2"])
    assert args.func is cmd_ttlora_moe
    assert (args.base, args.tasks, args.expert_steps, args.tt_rank, args.batch_size) == \
        ("b", "spam,fortune_topic", 3, 4, 2)
    assert args.max_eval_examples == 64  # shared options keep their defaults


def test_cli_reports_bad_arguments_clearly(capsys):
    assert main(["train", "--base", "b", "--task", "spam", "--method", "dora"]) == 2
    assert "`method` must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--task is required"):
        main(["train", "--base", "b"])


def test_push_hands_model_tokenizer_and_result_to_the_publisher(tiny_llama, tmp_path, monkeypatch):
    from talklora_hub.publish import publisher

    calls = []
    monkeypatch.setattr(publisher, "publish_model", lambda model, tokenizer, repo_id, result=None:
                        calls.append((model, tokenizer, repo_id, result)) or "url")
    result = train(TrainConfig(base=tiny_llama, tasks=[colors_task(16)], method="lora", r=4, max_steps=1,
                               batch_size=4, max_length=32, output=str(tmp_path), progress=False))
    assert publisher.publish_result(result, "me/model") == "url"
    (model, tokenizer, repo, payload), = calls
    assert model is result.model and tokenizer is result.tokenizer and repo == "me/model"
    assert payload == json.loads((tmp_path / "model" / "train_result.json").read_text())
    assert payload["headline"] == result.headline
    with pytest.raises(ValueError, match="`repo_id` must be a Hub repo id"):
        publisher.publish_result(result, "no-owner")


# ---- real tasks (skipped when the offline cache lacks them) ----------------------------------------
def _cached(task: str) -> bool:
    try:
        from talklora_hub.data import load_task

        load_task(task)
        return True
    except (FileNotFoundError, ValueError):
        return False


@pytest.mark.skipif(not _cached("spam"), reason="spam source not fetched")
def test_cli_trains_a_real_task_slice_with_the_smollm2_tokenizer(tmp_path, capsys):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from talklora_hub.data.base_models import base_model_path

    try:
        folder = base_model_path("smollm2-135m-instruct")
    except FileNotFoundError:
        pytest.skip("SmolLM2 not bootstrapped")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=2, eos_token_id=2, bos_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    code = main(["train", "--base", str(tmp_path / "base"), "--task", "spam", "--method", "talklora", "--r", "8",
                 "--num-experts", "2", "--max-steps", "2", "--batch-size", "2", "--max-length", "48",
                 "--max-train-examples", "8", "--max-eval-examples", "3", "--output", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert printed["headline"] == saved["headline"] and saved["metrics"]["spam"]["n"] == 3
    assert saved["data"]["train"]["spam"] == 8 and saved["steps"] == 2
