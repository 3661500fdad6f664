"""The Hub side of talklora_hub.

Serving (an embedded Hugging Face Hub-compatible server, so the unmodified huggingface_hub /
transformers / datasets clients work offline):
* `create_app(root)` (server.py) - the FastAPI application serving a hub directory
* `LocalHub` (local.py)          - runs it in a subprocess on 127.0.0.1 (tests, examples)
* `use_hub` (clients.py)         - points this process's client libraries at a hub
* `talklora-hub hub serve`       - the command line (commands.py)
On-disk format: storage.py and objects.py; protocols: api_*.py, lfs.py (git-lfs), cas.py (Xet).

Publishing (to whatever Hub huggingface_hub points at):
* `publish_model` / `publish_expert` / `publish_router` (publish.py) - one commit each, with a model card
* `load_artifact` (artifacts.py) - a full model, an expert or a router repo as a ready model
* `list_zoo` (zoo.py)            - the zoo index; `talklora-hub push | pull | zoo list` on the shell
"""

from __future__ import annotations

import importlib

__all__ = ["LocalHub", "create_app", "use_hub", "publish_model", "publish_expert", "publish_router",
           "load_artifact", "list_zoo"]

# Lazy, so `import talklora_hub.hub` stays cheap (no FastAPI, no transformers) for the CLI.
_EXPORTS = {"LocalHub": "local", "create_app": "server", "use_hub": "clients", "publish_model": "publish",
            "publish_expert": "publish", "publish_router": "publish", "load_artifact": "artifacts",
            "list_zoo": "zoo"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
