"""`talklora-hub train`: train any adapter method on any base model and task (or mixture).

    talklora-hub train --base smollm2-135m-instruct --method talklora --task spam --max-steps 20 --bf16
    talklora-hub train --base all-minilm-l6-v2 --method lora --task spam --output runs/minilm-spam
    talklora-hub train ttlora-moe --base smollm2-135m-instruct --task spam,fortune_topic --output runs/moe
    accelerate launch --num_processes 2 --cpu -m talklora_hub.cli train --base ... --task ...
"""

from __future__ import annotations

import argparse
import json
import sys


def _common(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Arguments shared by `train` and `train ttlora-moe`. With suppress, an unset option leaves the
    value parsed before the subcommand in place."""
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--base", default=default(None),
                        help="base model: a folder, a Hub id, or smollm2-135m-instruct / all-minilm-l6-v2")
    parser.add_argument("--task", "--tasks", dest="task", default=default(None),
                        help="task name, or several joined by commas (a mixture), e.g. spam,gsm8k")
    parser.add_argument("--batch-size", type=int, default=default(8), help="sequences per process per micro-batch")
    parser.add_argument("--max-length", type=int, default=default(256), help="tokens per sequence (default 256)")
    parser.add_argument("--bf16", nargs="?", const=True, default=default(False), choices=[True, "force"],
                        help="bfloat16 autocast where the hardware runs it natively (fp32 elsewhere); "
                             "'--bf16 force' uses it even where emulated")
    parser.add_argument("--seed", type=int, default=default(0))
    parser.add_argument("--cpu", action="store_true", default=default(False), help="train on the CPU even with a GPU")
    parser.add_argument("--output", default=default(None), help="run folder (checkpoints/, model/, train_result.json)")
    parser.add_argument("--max-train-examples", type=int, default=default(None), help="per task")
    parser.add_argument("--max-eval-examples", type=int, default=default(64), help="per task (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=default(256), help="generation tasks (default 256)")
    parser.add_argument("--no-progress", action="store_true", default=default(False), help="no progress bars")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train an adapter (LoRA, MoELoRA, TalkLoRA, TT-LoRA) on a task or task mixture",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(parser)
    parser.add_argument("--method", default="talklora", help="lora | moelora | talklora | ttlora")
    parser.add_argument("--r", type=int, default=32, help="total rank (each of E experts owns r/E)")
    parser.add_argument("--num-experts", type=int, default=None, help="E (default: 4 for the mixtures, else 1)")
    parser.add_argument("--top-k", type=int, default=None, help="top-k routing (default: dense)")
    parser.add_argument("--lora-alpha", type=float, default=None)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--target-modules", default=None, help="comma-separated module names, or 're:REGEX' (full match on the dotted "
                        "module name, e.g. 're:model\\.layers\\.(2[0-9])\\..*(q|v)_proj') (default: per arch)")
    parser.add_argument("--aux-loss-coef", type=float, default=0.0, help="router load-balancing loss weight")
    parser.add_argument("--tt-rank", type=int, default=5)
    parser.add_argument("--tt-alpha", type=float, default=16.0)
    parser.add_argument("--head", default="auto", help="auto | causal | classification")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--scheduler", default="linear", help="linear | cosine | constant")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=None, help="overrides --epochs")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--resume", nargs="?", const=True, default=False,
                        help="continue from the latest checkpoint in --output (or the given checkpoint folder)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after N steps")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate the adapter in --output")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--experts", default=None,
                        help="TT-LoRA MoE stage 2: comma-separated stage-1 expert folders, one per task in order")
    parser.add_argument("--router-ce-weight", type=float, default=21.0)
    parser.add_argument("--push", default=None, metavar="REPO_ID", help="publish the trained model to this Hub repo")
    parser.set_defaults(func=cmd_train)

    recipes = parser.add_subparsers(dest="train_recipe", metavar="[RECIPE]", title="recipes (optional)")
    moe = recipes.add_parser("ttlora-moe", help="the TT-LoRA MoE comparison: one expert per task, the router, "
                                                "and a multi-task LoRA baseline",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(moe, suppress=True)
    moe.add_argument("--expert-steps", type=int, default=200)
    moe.add_argument("--router-steps", type=int, default=100)
    moe.add_argument("--lora-steps", type=int, default=None, help="default: expert steps x tasks")
    moe.add_argument("--expert-lr", type=float, default=2e-3)
    moe.add_argument("--router-lr", type=float, default=1e-3)
    moe.add_argument("--lora-lr", type=float, default=3e-4)
    moe.add_argument("--lora-r", type=int, default=8)
    moe.add_argument("--tt-rank", dest="moe_tt_rank", type=int, default=5)
    moe.add_argument("--tt-alpha", dest="moe_tt_alpha", type=float, default=16.0)
    moe.add_argument("--router-ce-weight", dest="moe_router_ce_weight", type=float, default=21.0)
    moe.add_argument("--no-lora", action="store_true", help="skip the multi-task LoRA baseline")
    moe.add_argument("--no-oracle", action="store_true", help="skip the oracle-routing evaluation")
    moe.set_defaults(func=cmd_ttlora_moe)


def _require(args, name: str, flag: str) -> None:
    if not getattr(args, name, None):
        raise SystemExit(f"talklora-hub train: {flag} is required")


def config_from_args(args):
    from .config import TrainConfig

    targets = parse_target_modules(args.target_modules)
    experts = [p.strip() for p in args.experts.split(",") if p.strip()] if args.experts else None
    return TrainConfig(
        base=args.base, tasks=args.task, method=args.method, r=args.r, num_experts=args.num_experts, top_k=args.top_k,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
        router_aux_loss_coef=args.aux_loss_coef, tt_rank=args.tt_rank, tt_alpha=args.tt_alpha, head=args.head,
        lr=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, lr_scheduler=args.scheduler,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_length=args.max_length, bf16=args.bf16, cpu=args.cpu, seed=args.seed, gradient_checkpointing=args.gradient_checkpointing,
        output=args.output, save_every=args.save_every, resume=args.resume, stop_after=args.stop_after,
        eval_only=args.eval_only, max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        eval_split=args.eval_split, max_new_tokens=args.max_new_tokens, log_every=args.log_every,
        ttlora_experts=experts, router_ce_weight=args.router_ce_weight, push=args.push, progress=not args.no_progress)


def _print_summary(result) -> None:
    summary = {"headline": result.headline, "router": (result.router or {}).get("accuracy"),
               "routing": result.routing.get("overall"), "steps": result.steps, "stopped_early": result.stopped_early,
               "tokens_per_second": result.timing.get("tokens_per_second"),
               "parameters": result.parameter_counts, "result": result.result_path}
    print(json.dumps(summary, indent=2))


def cmd_train(args) -> int:
    _require(args, "base", "--base")
    _require(args, "task", "--task")
    from .trainer import train

    try:
        result = train(config_from_args(args))
    except ValueError as error:
        print(f"talklora-hub train: {error}", file=sys.stderr)
        return 2
    _print_summary(result)
    return 0


def cmd_ttlora_moe(args) -> int:
    _require(args, "base", "--base")
    _require(args, "task", "--task")
    from .recipes import RecipeSettings, comparison_table, ttlora_moe_recipe

    settings = RecipeSettings(
        expert_steps=args.expert_steps, router_steps=args.router_steps, lora_steps=args.lora_steps,
        expert_lr=args.expert_lr, router_lr=args.router_lr, lora_lr=args.lora_lr, lora_r=args.lora_r,
        tt_rank=args.moe_tt_rank, tt_alpha=args.moe_tt_alpha, router_ce_weight=args.moe_router_ce_weight,
        batch_size=args.batch_size, max_length=args.max_length, bf16=args.bf16, seed=args.seed,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        max_new_tokens=args.max_new_tokens, include_lora=not args.no_lora, oracle=not args.no_oracle,
        progress=not args.no_progress)
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    try:
        comparison = ttlora_moe_recipe(args.base, tasks, args.output, settings)
    except ValueError as error:
        print(f"talklora-hub train ttlora-moe: {error}", file=sys.stderr)
        return 2
    print(comparison_table(comparison))
    return 0


def parse_target_modules(value):
    """--target-modules: None (the architecture's default), 're:REGEX' (one regex string) or a comma list."""
    if not value:
        return None
    if value.startswith("re:"):
        return value[3:]
    return [name.strip() for name in value.split(",") if name.strip()]
