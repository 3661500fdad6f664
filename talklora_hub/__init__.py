"""talklora_hub: mixture-of-LoRA-experts adapters (TalkLoRA, MoELoRA, LoRA, TT-LoRA MoE) for any
transformers model, with models whose code travels inside every saved repo.

    from talklora_hub import AdapterSettings, TalkLoRAForCausalLM, TrainConfig, train, publish_model, load_artifact

    model = TalkLoRAForCausalLM.from_base("HuggingFaceTB/SmolLM2-135M-Instruct",
                                          AdapterSettings(method="talklora", r=16, num_experts=4))
    model.print_trainable_parameters()
    result = train(TrainConfig(base=..., tasks=["spam"], ...))      # or train a model you wrapped yourself
    publish_model(result.model, result.tokenizer, "me/talklora-spam", result=result.to_dict())
    model = load_artifact("me/talklora-spam")                         # a model, an expert or a router repo

The layers, lowest first (a package imports only those below it; tests/test_layering.py checks):
modeling -> data, analysis, localhub -> train -> evaluation, publish -> zoo, space -> jobs -> cli.
Names are imported lazily, so `import talklora_hub` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterSettings": "modeling", "TalkLoRAConfig": "modeling", "TalkLoRAModel": "modeling",
    "TalkLoRAForCausalLM": "modeling", "TalkLoRAForSequenceClassification": "modeling",
    "compose_ttlora_moe": "modeling.compose",
    "TrainConfig": "train", "TrainResult": "train", "train": "train",
    "publish_model": "publish", "publish_expert": "publish", "publish_router": "publish",
    "publish_result": "publish", "load_artifact": "publish", "list_zoo": "publish",
    "LocalHub": "localhub",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name == "train":  # the subpackage, callable as the train function (see talklora_hub/train/__init__.py)
        return importlib.import_module(".train", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
