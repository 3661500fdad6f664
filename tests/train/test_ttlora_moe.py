"""TT-LoRA MoE: composing single experts, forcing and prompt-only routing (forward arguments), and the router
stage (our loop and transformers' Trainer)."""

from __future__ import annotations

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import adapter_layers
from talklora_hub.train import TrainConfig, train
from talklora_hub.train.checkpoint import adapter_tensors
from talklora_hub.modeling.compose import compose_ttlora_moe, expert_cores, freeze_experts, sequence_routing_args

from .helpers import animals_task, colors_task

QUIET = dict(progress=False, log_every=5, lr_scheduler="constant", max_length=40, batch_size=8)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Two stage-1 TT-LoRA experts (a few steps each) on the same tiny base."""
    from talklora_hub.data import tasks as registry

    from .helpers import save_tiny_llama

    before = dict(registry.TASKS)
    base = str(save_tiny_llama(tmp_path_factory.mktemp("moe-base")))
    trained = {}
    for make in (colors_task, animals_task):
        item = make(64)
        result = train(TrainConfig(base=base, tasks=[item], method="ttlora", tt_rank=3, lr=1e-2, max_steps=4,
                                   max_eval_examples=0, **QUIET))
        trained[item[0]] = (item, result.model)
    registry.TASKS.clear()
    registry.TASKS.update(before)
    return base, trained


def _stacked(models):
    stacked = {}
    for model in models:
        for name, tensor in expert_cores(model).items():
            stacked.setdefault(name, []).append(tensor)
    return {name: torch.cat(parts, 0) for name, parts in stacked.items()}


def test_compose_stacks_the_expert_cores_and_each_expert_acts_alone(experts):
    base, trained = experts
    models = [model for _, model in trained.values()]
    moe = compose_ttlora_moe(models, base=base).eval()
    assert moe.adapter_settings.num_experts == 2 and moe.sequence_router is not None
    cores = expert_cores(moe)
    for name, tensor in _stacked(models).items():
        assert torch.equal(cores[name], tensor), name
    ids = torch.randint(6, 40, (3, 9))
    with torch.no_grad():
        for e, single in enumerate(models):
            out = moe(input_ids=ids, attention_mask=torch.ones_like(ids), sequence_experts=torch.full((3,), e))
            assert out.sequence_router_logits.shape == (3, 2)
            assert torch.equal(moe.adapter_shared.sequence_experts, torch.full((3,), e))
            torch.testing.assert_close(out.logits, single.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert "_choose_sequence_experts" not in vars(moe)  # no patching: plain forward arguments
    official = compose_ttlora_moe(models, base=base, router_noise="official")
    assert official.adapter_settings.router_noise == "official" and official.sequence_router.noise.bias is not None
    assert moe.adapter_settings.router_noise == "masked-train" and moe.sequence_router.noise.bias is None


def test_router_reads_the_last_prompt_token_not_the_answer(experts):
    base, trained = experts
    moe = compose_ttlora_moe([m for _, m in trained.values()], base=base).eval()
    ids = torch.randint(6, 40, (2, 10))
    prompt_mask = torch.ones_like(ids)
    prompt_mask[:, 6:] = 0
    with torch.no_grad():
        prompt_only = moe(input_ids=ids[:, :6]).sequence_router_logits
        full = moe(input_ids=ids, attention_mask=torch.ones_like(ids),
                   **sequence_routing_args(moe, prompt_mask=prompt_mask)).sequence_router_logits
    torch.testing.assert_close(full, prompt_only)
    assert sequence_routing_args(trained["syn_colors"][1], prompt_mask=prompt_mask) == {}  # not a MoE: nothing


def test_compose_refuses_mismatched_experts(experts, tiny_llama):
    base, trained = experts
    models = [m for _, m in trained.values()]
    with pytest.raises(ValueError, match="at least two"):
        compose_ttlora_moe(models[:1])
    other = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="ttlora", tt_rank=4))
    with pytest.raises(ValueError, match="must share tt_rank with expert 0"):
        compose_ttlora_moe([models[0], other])
    lora = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="lora", r=4))
    with pytest.raises(ValueError, match="single-expert TT-LoRA"):
        compose_ttlora_moe([models[0], lora])
    foreign = TalkLoRAForCausalLM.from_base(tiny_llama, AdapterSettings(method="ttlora", tt_rank=3))
    with torch.no_grad():
        next(p for n, p in foreign.named_parameters() if n.endswith("embed_tokens.weight")).add_(1.0)
    with pytest.raises(ValueError, match="bit-identical base weights"):
        compose_ttlora_moe([models[0], foreign], base=base)


def test_router_stage_trains_only_the_router_and_separates_the_tasks(experts):
    base, trained = experts
    items = [item for item, _ in trained.values()]
    models = [model for _, model in trained.values()]
    before = _stacked(models)
    base_before = {n: p.clone() for n, p in models[0].named_parameters() if not p.requires_grad}
    result = train(TrainConfig(base=base, tasks=items, method="ttlora", ttlora_experts=models, lr=2e-2, max_steps=25,
                               max_eval_examples=None, **QUIET))
    moe = result.model
    assert [n for n, p in moe.named_parameters() if p.requires_grad] == \
        ["sequence_router.gate.weight", "sequence_router.noise.weight"]
    assert result.parameter_counts["trainable"] == 2 * 2 * 32
    cores = expert_cores(moe)
    for name, tensor in before.items():  # the experts are bit-identical after the router stage
        assert torch.equal(cores[name], tensor), name
    params = dict(moe.named_parameters())
    for name, tensor in base_before.items():
        if "tt_cores" not in name:
            assert torch.equal(params[name], tensor), name
    router = result.router
    assert router["n"] >= 8 and router["accuracy"] >= 0.9, router
    assert result.routing["modules"]["sequence_router"]["load"][0] > 0.2
    losses = [r["router_ce"] for r in result.losses]
    assert losses[-1] < losses[0], losses
    assert set(result.metrics) == {"syn_colors", "syn_animals"}


def test_freeze_experts_needs_a_moe(experts):
    _, trained = experts
    single = next(iter(trained.values()))[1]
    with pytest.raises(ValueError, match="must be a TT-LoRA MoE"):
        freeze_experts(single)
    assert adapter_layers(single)
    assert any("tt_cores" in n for n in adapter_tensors(single))


def test_recipe_runs_end_to_end_on_tiny_pieces(tmp_path):
    from talklora_hub.train.ttlora_moe_protocol import RecipeSettings, ttlora_moe_recipe

    from .helpers import save_tiny_llama

    base = str(save_tiny_llama(tmp_path / "base"))
    settings = RecipeSettings(expert_steps=2, router_steps=3, lora_steps=2, batch_size=4, max_length=40,
                              max_eval_examples=3, max_new_tokens=2, progress=False, lora_r=4, tt_rank=3)
    comparison = ttlora_moe_recipe(base, [colors_task(32), animals_task(32)], str(tmp_path / "run"), settings)
    row = comparison["tasks"]["syn_colors"]
    assert set(row) == {"moe", "expert_alone", "moe_oracle_routing", "lora_multitask", "router_accuracy"}
    assert row["moe_oracle_routing"] == row["expert_alone"]  # the composed experts act exactly as alone
    assert comparison["parameters"]["router_trainable"] == 2 * 2 * 32
    assert (tmp_path / "run" / "comparison.md").read_text().startswith("| task | MoE |")
    assert (tmp_path / "run" / "experts" / "syn_colors" / "model" / "config.json").is_file()


def test_router_stage_trains_with_transformers_trainer(tiny_llama, tmp_path):
    """Stage 2 needs no loop of ours: forced experts, the prompt mask and the router's target are batch
    fields the model takes as forward arguments; one Trainer step moves the router and nothing else."""
    from transformers import Trainer, TrainingArguments

    moe = TalkLoRAForCausalLM.from_base(tiny_llama, AdapterSettings(method="ttlora", num_experts=2, tt_rank=3))
    assert freeze_experts(moe) == ["sequence_router.gate.weight", "sequence_router.noise.weight"]
    torch.manual_seed(0)
    rows = []
    for i in range(4):
        ids = torch.randint(6, 40, (10,))
        prompt = torch.zeros(10, dtype=torch.long)
        prompt[:7] = 1
        rows.append({"input_ids": ids, "attention_mask": torch.ones(10, dtype=torch.long),
                     "labels": torch.where(prompt.bool(), -100, ids), "router_attention_mask": prompt,
                     "sequence_experts": torch.tensor(i % 2), "sequence_labels": torch.tensor(i % 2)})
    before = {n: p.detach().clone() for n, p in moe.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0)
    result = Trainer(model=moe, args=args, train_dataset=rows).train()
    assert result.global_step == 1 and result.training_loss > 0
    changed = sorted(n for n, p in moe.named_parameters() if not torch.equal(p.detach(), before[n]))
    assert changed == ["sequence_router.gate.weight", "sequence_router.noise.weight"]
    assert torch.equal(moe.adapter_shared.sequence_experts, torch.tensor([0, 1, 0, 1]))  # the forced experts served


def test_generate_completions_on_left_padded_prompts_equal_each_prompt_alone(experts):
    """evaluate's greedy generation (left-padded batches) on a TT-LoRA MoE, routed and with forced experts."""
    from transformers import AutoTokenizer

    from talklora_hub.train.evaluate import generate_completions

    base, trained = experts
    moe = compose_ttlora_moe([m for _, m in trained.values()], base=base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = ["Colors : red gold . Warm or cool ? Answer :", "Animals : shark . Land or sea ? Result :",
               "Colors : blue teal navy mint jade . Warm or cool ? Answer :"]
    for forced in (None, [1, 0, 1]):
        batched = generate_completions(moe, tokenizer, prompts, 4, 40, batch_size=3, forced_experts=forced)
        single = [generate_completions(moe, tokenizer, [p], 4, 40, batch_size=1,
                                       forced_experts=None if forced is None else [forced[i]])[0]
                  for i, p in enumerate(prompts)]
        assert batched == single, (forced, batched, single)
