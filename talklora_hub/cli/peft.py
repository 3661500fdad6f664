"""`talklora-hub peft ...`: PEFT LoRA adapters in and out (see docs/peft.md).

    talklora-hub peft export MODEL OUT_DIR                 a saved plain LoRA -> a PEFT adapter folder
    talklora-hub peft import PEFT_DIR... OUT_DIR [--base BASE] [--num-experts-per-tok K]
                                                           one PEFT LoRA -> a LoRA model; several -> a MoELoRA

An import is exact (logits equal PEFT's) or refused with the adapter_config.json field that prevents it.
"""

from __future__ import annotations

from pathlib import Path

from . import add_command_group


def _export(args) -> int:
    from ..publish.artifacts import load_artifact
    from ..publish.peft_interop import export_peft

    folder = export_peft(load_artifact(args.model), args.out)
    print(f"PEFT adapter written to {folder}")
    return 0


def _import(args) -> int:
    from ..publish.peft_interop import import_peft_experts

    base = args.base
    if base is not None and not Path(base).exists():
        from ..data.base_models import resolve_base

        base = resolve_base(base)
    model = import_peft_experts(args.adapters, base, num_experts_per_tok=args.num_experts_per_tok)
    model.save_pretrained(args.out)
    source = base or model.config.base_model_name_or_path
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source).save_pretrained(args.out)
    except (OSError, ValueError) as error:
        print(f"note: no tokenizer saved with the model ({source}: {type(error).__name__})")
    settings = model.adapter_settings
    print(f"{settings.method} model (r={settings.r}, experts={settings.num_experts}, scale={settings.scaling:g}) "
          f"written to {Path(args.out).resolve()}")
    return 0


def register(subparsers) -> None:
    """Add the `peft` command group to the talklora-hub CLI."""
    actions = add_command_group(subparsers, "peft",
                                help="export a LoRA as a PEFT adapter, or import PEFT LoRA adapters",
                                description=__doc__.splitlines()[0])

    export = actions.add_parser("export", help="write a saved plain LoRA model as a PEFT adapter folder")
    export.add_argument("model", help="a talklora_hub LoRA model: a save_pretrained folder, expert or repo id")
    export.add_argument("out", help="the folder to write adapter_config.json and adapter_model.safetensors to")
    export.set_defaults(func=_export)

    imported = actions.add_parser("import", help="PEFT LoRA adapter(s) as a LoRA (one) or MoELoRA (several) model")
    imported.add_argument("adapters", nargs="+", help="PEFT LoRA adapter folders or repo ids")
    imported.add_argument("out", help="the folder to save the model (and the base's tokenizer) to")
    imported.add_argument("--base", default=None, help="the base model (folder, repo id or bootstrapped name); "
                          "default: the adapter's base_model_name_or_path")
    imported.add_argument("--num-experts-per-tok", type=int, default=None,
                          help="several adapters: top-k routing over them (default: dense)")
    imported.set_defaults(func=_import)
