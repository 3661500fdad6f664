"""The zoo recipes still describe the shipped weights, and their `talklora-hub train` command lines train the
same thing. Reads records and parses command lines only: nothing is trained or loaded."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from talklora_hub.cli import build_parser
from talklora_hub.cli.train import config_from_args
from talklora_hub.train import TrainConfig
from talklora_hub.zoo.recipes import RECIPES, train_command_line
from talklora_hub.zoo.shipped import default_zoo_dir, read_record, shipped_entries

SHIPPED = shipped_entries(default_zoo_dir())


def _config(recipe) -> TrainConfig:
    """The recipe's TrainConfig as retraining builds it (a router's experts are the shipped entries; the
    output folder, which save_every needs, is not fingerprinted)."""
    experts = {"ttlora_experts": [f"zoo/{e}" for e in recipe.experts]} if recipe.kind == "router" else {}
    return TrainConfig(**recipe.train, **experts, output="run")


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.kind != "router" and r.name in SHIPPED], ids=lambda r: r.name)
def test_a_recipe_trains_the_adapter_its_shipped_weights_record(recipe):
    """Every field the record holds; lora_dropout among them (0.05, no longer a training default)."""
    recorded = read_record(SHIPPED[recipe.name])["adapter"]
    settings = _config(recipe).adapter.to_dict()
    assert {k: settings[k] for k in recorded} == recorded


BF16_RECIPES = [dataclasses.replace(RECIPES[0], name=f"{RECIPES[0].name}-bf16-{v}", train={**RECIPES[0].train, "bf16": v})
                for v in (True, "force")]


@pytest.mark.parametrize("recipe", RECIPES + BF16_RECIPES, ids=lambda r: r.name)
def test_a_recipes_command_line_builds_the_recipes_config(recipe):
    line = train_command_line(recipe)
    argv = shlex.split(line)
    assert argv[0] == "talklora-hub"
    config = config_from_args(build_parser().parse_args(argv[1:]))
    expected = _config(recipe)
    assert config.adapter == expected.adapter
    assert config.fingerprint() == expected.fingerprint()  # everything that changes what is trained
    assert config.bf16 == expected.bf16
