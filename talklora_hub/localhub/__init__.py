"""The embedded Hub: a Hugging Face Hub-compatible server, so the unmodified huggingface_hub, transformers
and datasets clients work offline.

* `create_app(root)` (server.py) - the FastAPI application serving a hub directory
* `LocalHub` (local.py)          - runs it in a subprocess on 127.0.0.1 (tests, examples, the main job)
* `use_hub` (clients.py)         - points this process's client libraries at a hub
* `talklora-hub hub serve`       - the command line (talklora_hub.cli.hub)
On-disk format: storage.py (repos, refs), tree.py (commits, trees), objects.py (blobs); protocols: api_*.py,
lfs.py (git-lfs), cas.py and xet*.py (Xet); bounded request bodies: bodies.py; errors: web.py.
Nothing here imports the rest of talklora_hub: the server knows repos, not models.
"""

from __future__ import annotations

import importlib

__all__ = ["LocalHub", "create_app", "use_hub"]

# Lazy, so `import talklora_hub.localhub` stays cheap (no FastAPI) for the CLI.
_EXPORTS = {"LocalHub": "local", "create_app": "server", "use_hub": "clients"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
