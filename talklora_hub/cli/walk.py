"""`talklora-hub walk`: the end-to-end walk-through on the offline base model."""

from __future__ import annotations


def register(subparsers) -> None:
    walk = subparsers.add_parser("walk", help="wrap SmolLM2-135M with TalkLoRA, train briefly, save, reload in a "
                                              "fresh interpreter and print per-token routing")
    walk.add_argument("--base", default=None, help="base model folder or repo (default: the bootstrapped SmolLM2)")
    walk.add_argument("--out", default=None, help="where to save the model (default: a temporary folder)")
    walk.add_argument("--steps", type=int, default=8, help="training steps (default 8)")
    walk.set_defaults(func=cmd_walk)


def cmd_walk(args) -> int:
    from ..jobs.walkthrough import run

    base = args.base
    if base is None:
        from ..data.base_models import base_model_path

        base = str(base_model_path("smollm2-135m-instruct"))
    run(base, args.out, args.steps)
    return 0
