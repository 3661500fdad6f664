"""`talklora-hub train`: train any adapter method on any base model and task (or mixture).

    talklora-hub train --base smollm2-135m-instruct --method talklora --task spam --max-steps 20 --bf16
    talklora-hub train --base all-minilm-l6-v2 --method lora --task spam --output runs/minilm-spam
    talklora-hub train ttlora-moe --base smollm2-135m-instruct --task spam,fortune_topic --output runs/moe
    talklora-hub train --base all-minilm-l6-v2 --train-file data.csv --text-column sentence --label-column topic
    accelerate launch --multi_gpu --num_processes 2 -m talklora_hub.cli train --base ... --task ...  # CPU too

The options are the fields of AdapterSettings and TrainConfig (`train`) or of RecipeSettings (`train
ttlora-moe`), read by transformers' HfArgumentParser: each field is --name (and --name-with-dashes), with
the dataclass's own default. CLI_OPTIONS below keeps the older short flags (--task, --top-k, --scheduler,
--aux-loss-coef, --experts) and gives the fields that are not one plain type their command-line form.
The parsers are built on first use, since the dataclasses' modules import torch: other commands stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import typing
from typing import Any, Dict, Optional, Sequence

RECIPE = "ttlora-moe"

# Command-line form of fields whose type HfArgumentParser does not read as one value, old flag names kept as
# aliases, and help texts: {field name: {"type": command-line type, "aliases": [...], "help": ..., other
# add_argument options}}. Defaults are never set here: they are the dataclasses'.
CLI_OPTIONS: Dict[str, Dict[str, Any]] = {
    # TrainConfig
    "base": {"help": "base model: a folder, a Hub id, or smollm2-135m-instruct / all-minilm-l6-v2"},
    "tasks": {"type": str, "aliases": ["--task"],
              "help": "task name, or several joined by commas (a mixture), e.g. spam,gsm8k"},
    "batch_size": {"help": "sequences per process per micro-batch"},
    "max_length": {"help": "tokens per sequence"},
    "bf16": {"type": str, "nargs": "?", "const": True, "choices": [True, "force"],
             "help": "bfloat16 autocast where the hardware runs it natively (fp32 elsewhere); "
                     "'--bf16 force' uses it even where emulated"},
    "cpu": {"help": "train on the CPU even with a GPU"},
    "output": {"help": "run folder (checkpoints/, model/, train_result.json)"},
    "max_train_examples": {"help": "per task"},
    "max_eval_examples": {"help": "per task"},
    "max_new_tokens": {"help": "generation budget of generation tasks"},
    "progress": {"help": "progress bars"},
    "head": {"help": "auto | causal | classification"},
    "lr_scheduler": {"aliases": ["--scheduler"], "help": "linear | cosine | constant (all with warm-up)"},
    "max_steps": {"help": "overrides --epochs"},
    "save_every": {"help": "checkpoint every N steps"},
    "resume": {"type": str, "nargs": "?", "const": True,
               "help": "continue from the latest checkpoint in --output (or the given checkpoint folder)"},
    "stop_after": {"help": "stop (with a checkpoint) after N steps"},
    "eval_only": {"help": "only evaluate the adapter in --output"},
    "train_file": {"help": "your own data: a .csv, .tsv, .json, .jsonl or .parquet file (UTF-8), one row per example; "
                           "split 80/10/10 by a hash of the text unless --validation-file/--test-file are given"},
    "validation_file": {"help": "held-out rows for validation (same columns as --train-file)"},
    "test_file": {"help": "held-out rows for the test score (same columns as --train-file)"},
    "dataset": {"help": "your own data as a datasets name or a folder written by save_to_disk "
                        "(its train/validation/test splits are kept)"},
    "text_column": {"help": "the column holding the input text"},
    "label_column": {"help": "the column holding the class (default: a column named 'label')"},
    "answer_column": {"help": "for generation: the column holding the answer (instead of --label-column)"},
    "own_task_name": {"aliases": ["--task-name"],
                      "help": "your data's task name in results and cards (default: the file's stem)"},
    "template": {"help": "prompt with a {text} slot and optionally {choices} (the labels joined by 'or')"},
    "base_repo_id": {"help": "the base's Hub repo id when --base is a local folder (the card's base_model)"},
    "ttlora_experts": {"type": Optional[str], "aliases": ["--experts"],
                       "help": "TT-LoRA MoE stage 2: comma-separated stage-1 expert folders, one per task in order"},
    # AdapterSettings (help texts: the fields' own metadata; the method's choices: the registered methods)
    "num_experts_per_tok": {"aliases": ["--top-k"]},
    "target_modules": {"type": Optional[str],
                       "help": "comma-separated module names, or 're:REGEX' (full match on the dotted module name, "
                               "e.g. 're:model\\.layers\\.(2[0-9])\\..*(q|v)_proj') (None: the architecture's default)"},
    "router_aux_loss_coef": {"aliases": ["--aux-loss-coef"]},
    # RecipeSettings (`train ttlora-moe`)
    "lora_steps": {"help": "default: expert steps x tasks"},
    "include_lora": {"help": "the multi-task LoRA baseline (--no-lora: skip it)"},
    "oracle": {"help": "the oracle-routing evaluation"},
}

# Not on the command line: the TT factors are a nested dict (set them from Python); the adapter is built
# from AdapterSettings' own options.
NOT_OPTIONS = {"tt_factors", "adapter"}

# `train ttlora-moe`'s options besides RecipeSettings: what the recipe's runs share.
RECIPE_RUN_FIELDS = ("base", "tasks", "output")


def arguments_view(cls, only: Optional[Sequence[str]] = None) -> type:
    """A dataclass with `cls`'s option fields (names, defaults) in the form HfArgumentParser reads: the
    command-line type, aliases and help of CLI_OPTIONS; --help lists them under the dataclass's name."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name in NOT_OPTIONS or (only is not None and f.name not in only):
            continue
        # A help text shows the default; the field's own help (its metadata) unless CLI_OPTIONS gives another.
        options = {"help": f.metadata.get("help") or f"see {cls.__name__}", **CLI_OPTIONS.get(f.name, {})}
        if cls.__name__ == "AdapterSettings" and f.name == "method":
            options.update(method_option())
        kind = options.pop("type", hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields.append((f.name, kind, dataclasses.field(default=default, metadata=options)))
    return dataclasses.make_dataclass(f"{cls.__name__}Options", fields,
                                      namespace={"_argument_group_name": cls.__name__})


def method_option() -> Dict[str, Any]:
    """--method's metavar and help, from the registered methods (methods.py): a new method appears by itself. No
    argparse `choices`: a wrong name gets AdapterSettings' own error (argument, rule, value, fix) like in Python."""
    from ..modeling.methods import method_names, method_spec

    names = method_names()
    return {"metavar": "{" + ",".join(names) + "}",
            "help": "; ".join(f"{n}: {method_spec(n).description}" for n in names)}


@functools.lru_cache(maxsize=None)
def train_parser(prog: str) -> argparse.ArgumentParser:
    """`talklora-hub train`: AdapterSettings' and TrainConfig's fields, and --push."""
    from transformers import HfArgumentParser

    from ..modeling.adapter_settings import AdapterSettings
    from ..train.config import TrainConfig

    parser = HfArgumentParser([arguments_view(AdapterSettings), arguments_view(TrainConfig)], prog=prog,
                              description=__doc__.splitlines()[0],
                              epilog=f"recipe: `{prog} {RECIPE} --help`, the TT-LoRA MoE comparison")
    parser.add_argument("--push", default=None, metavar="REPO_ID", help="publish the trained model to this Hub repo")
    parser.set_defaults(func=cmd_train)
    return parser


@functools.lru_cache(maxsize=None)
def recipe_parser(prog: str) -> argparse.ArgumentParser:
    """`talklora-hub train ttlora-moe`: the base, tasks and output, and RecipeSettings' fields."""
    from transformers import HfArgumentParser

    from ..train.config import TrainConfig
    from ..train.ttlora_moe_protocol import RecipeSettings

    parser = HfArgumentParser([arguments_view(TrainConfig, only=RECIPE_RUN_FIELDS), arguments_view(RecipeSettings)],
                              prog=prog, description="the TT-LoRA MoE comparison: one expert per task, the router, "
                                                     "and a multi-task LoRA baseline")
    parser.add_argument("--no-lora", dest="include_lora", action="store_false",
                        help="skip the multi-task LoRA baseline")
    parser.set_defaults(func=cmd_ttlora_moe)
    return parser


def _parse_train_arguments(prog: str, args=None, namespace=None):
    """The `train` sub-parser's parse_known_args: `ttlora-moe` first picks the recipe's parser."""
    args = list(sys.argv[1:] if args is None else args)
    if args[:1] == [RECIPE]:
        return recipe_parser(f"{prog} {RECIPE}").parse_known_args(args[1:], namespace)
    return train_parser(prog).parse_known_args(args, namespace)


def register(subparsers) -> None:
    """Adds `train` as a stand-in parser: argparse hands a sub-command's arguments to its parser's
    parse_known_args, which here passes them on to train_parser or recipe_parser. Those import torch (through
    the dataclasses' modules), so they are built only when `train` is parsed, not for every command."""
    stand_in = subparsers.add_parser(
        "train", add_help=False, help="train an adapter (LoRA, MoELoRA, TalkLoRA, TT-LoRA) on a task or task "
                                      f"mixture; `train {RECIPE}`: the TT-LoRA MoE comparison")
    stand_in.parse_known_args = functools.partial(_parse_train_arguments, stand_in.prog)


def _require(args, name: str, flag: str) -> None:
    if not getattr(args, name, None):
        raise SystemExit(f"talklora-hub train: {flag} is required")


def _fields(args: argparse.Namespace, cls) -> Dict[str, Any]:
    """The parsed values of `cls`'s fields."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of parsed `train` arguments (the adapter's fields build its AdapterSettings)."""
    from ..modeling.adapter_settings import AdapterSettings
    from ..train.config import TrainConfig

    adapter = _fields(args, AdapterSettings)
    adapter["target_modules"] = parse_target_modules(adapter.get("target_modules"))
    run = _fields(args, TrainConfig)
    run["ttlora_experts"] = _comma_list(run.get("ttlora_experts")) or None
    return TrainConfig(adapter=AdapterSettings(**adapter), **run)


def _print_summary(result, pushed=None) -> None:
    summary = {"headline": result.headline, "router": (result.router or {}).get("accuracy"),
               "routing": result.routing.get("overall"), "steps": result.steps, "stopped_early": result.stopped_early,
               "tokens_per_second": result.timing.get("tokens_per_second"),
               "parameters": result.parameter_counts, "result": result.result_path,
               "pushed": str(pushed) if pushed is not None else None}
    print(json.dumps(summary, indent=2))


def cmd_train(args) -> int:
    _require(args, "base", "--base")
    if not (getattr(args, "tasks", None) or getattr(args, "train_file", None) or getattr(args, "dataset", None)):
        raise SystemExit("talklora-hub train: --task is required (or your own data: --train-file FILE or "
                         "--dataset NAME_OR_PATH)")
    from ..train.trainer import train

    try:
        result = train(config_from_args(args))
        pushed = _push(result, args.push) if args.push else None
    except ValueError as error:
        print(f"talklora-hub train: {error}", file=sys.stderr)
        return 2
    _print_summary(result, pushed)
    return 0


def _push(result, repo_id: str):
    """--push: training and publishing stay separate libraries; the command line chains them."""
    from ..publish.publisher import publish_result

    if result.stopped_early:
        print(f"talklora-hub train: stopped at step {result.steps}: not pushed (resume to finish, then push)",
              file=sys.stderr)
        return None
    return publish_result(result, repo_id)


def cmd_ttlora_moe(args) -> int:
    _require(args, "base", "--base")
    _require(args, "tasks", "--task")
    from ..train.ttlora_moe_protocol import RecipeSettings, comparison_table, ttlora_moe_recipe

    try:
        comparison = ttlora_moe_recipe(args.base, _comma_list(args.tasks), args.output,
                                       RecipeSettings(**_fields(args, RecipeSettings)))
    except ValueError as error:
        print(f"talklora-hub train {RECIPE}: {error}", file=sys.stderr)
        return 2
    print(comparison_table(comparison))
    return 0


def _comma_list(value: Optional[str]) -> list:
    return [part.strip() for part in value.split(",") if part.strip()] if value else []


def parse_target_modules(value):
    """--target-modules: None (the architecture's default), 're:REGEX' (one regex string) or a comma list."""
    if not value:
        return None
    if value.startswith("re:"):
        return value[3:]
    return _comma_list(value)
