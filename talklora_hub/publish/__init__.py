"""Publishing to whatever Hub huggingface_hub points at (the real one, or talklora_hub.localhub).

* `publish_model` / `publish_expert` / `publish_router` / `publish_result` (publisher.py) - one commit each,
  with a model card (cards.py, templates/) and an entry in the zoo index
* `load_artifact` (artifacts.py) - a full model, an expert or a router repo as a ready model
* `list_zoo` (zoo_index.py)      - the zoo index
* push.py                        - one folder as one commit (atomic: a failed upload leaves no commit)
* fingerprint.py, peft_interop.py - base pinning and the PEFT export of a plain LoRA
"""

from __future__ import annotations

import importlib

__all__ = ["publish_model", "publish_expert", "publish_router", "publish_result", "load_artifact", "list_zoo"]

# Lazy, so `import talklora_hub.publish` stays cheap (no transformers) for the CLI.
_EXPORTS = {"publish_model": "publisher", "publish_expert": "publisher", "publish_router": "publisher",
            "publish_result": "publisher", "load_artifact": "artifacts", "list_zoo": "zoo_index"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
