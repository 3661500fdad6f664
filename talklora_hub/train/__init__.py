"""Training for talklora_hub: one entry point for every adapter method, base model and task.

    from talklora_hub.train import TrainConfig, train
    result = train(TrainConfig(base="smollm2-135m-instruct", method="talklora", tasks=["spam"], max_steps=20))

    talklora-hub train --base smollm2-135m-instruct --method talklora --task spam --max-steps 20 --bf16
    talklora-hub train ttlora-moe --base smollm2-135m-instruct --task spam,fortune_topic --output runs/moe

Modules: config (TrainConfig), trainer (train, TrainResult; its steps in build, steps and results),
processes (how many processes a launcher started), data (tasks -> batches), evaluate
(per-task metrics, router accuracy), routing_health (expert load / entropy / CV / dead experts),
checkpoint (exact resume), recipes (the TT-LoRA MoE comparison). TT-LoRA MoE composition lives
with the models (talklora_hub.modeling.compose); the command line in talklora_hub.cli.train; publishing
a result in talklora_hub.publish. Names are imported lazily so `import talklora_hub.train` stays light.
"""

from __future__ import annotations

import importlib
import sys
import types

_EXPORTS = {
    "TrainConfig": "config", "train": "trainer", "TrainResult": "trainer",
    "router_accuracy": "evaluate", "RoutingHealth": "routing_health",
    "ttlora_moe_recipe": "recipes", "compare_ttlora_moe": "recipes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """`from talklora_hub import train` must give something that trains: Python binds the name `train` on the
    parent package to this subpackage as soon as anything imports it, so the subpackage itself is callable and
    forwards to trainer.train (`talklora_hub.train.train` stays the function itself)."""

    def __call__(self, *args, **kwargs):
        return __getattr__("train")(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
