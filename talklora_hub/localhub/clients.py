"""Point the Hugging Face client libraries *of the current process* at a hub.

Setting ``HF_ENDPOINT`` works for a fresh process, but huggingface_hub, datasets and transformers
read it once, at import time, into module constants (and transformers keeps a shared ``HfApi``).
In a long-lived process (a pytest run, a notebook) that already imported them, `use_hub` patches
those values for the duration of a ``with`` block and restores them afterwards:

* ``HF_ENDPOINT`` / ``HF_TOKEN`` / ``HF_HUB_DISABLE_TELEMETRY`` environment variables (the token is
  read from the environment on every call; subprocesses inherit all three),
* ``huggingface_hub.constants``: ``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE`` (download URLs),
  ``HF_URL_HOSTS``, optionally ``HF_HUB_CACHE`` and ``HF_HUB_DISABLE_XET``,
* ``datasets.config``: ``HF_ENDPOINT``, ``HUB_DATASETS_URL``, and ``USE_PARQUET_EXPORT = False``
  (otherwise ``load_dataset`` asks a "datasets-server." host derived from the endpoint, which
  does not exist here),
* the shared ``HfApi`` of ``transformers.utils.hub`` and fsspec's cached ``HfFileSystem`` instances
  (both remember the endpoint they were created with).

Not thread-safe, and not meant for production processes talking to several hubs at once: there,
pass ``endpoint=`` to ``HfApi`` / ``hf_hub_download`` or run the client in a subprocess with
`LocalHub.env()`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

_DEFAULT_ENDPOINT = "https://huggingface.co"


class _Patcher:
    def __init__(self) -> None:
        self._attrs: list[tuple[object, str, object]] = []
        self._env: list[tuple[str, str | None]] = []

    def attr(self, obj: object, name: str, value: object) -> None:
        self._attrs.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def env(self, name: str, value: str | None) -> None:
        self._env.append((name, os.environ.get(name)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def restore(self) -> None:
        for obj, name, old in reversed(self._attrs):
            setattr(obj, name, old)
        for name, old in reversed(self._env):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        self._attrs.clear()
        self._env.clear()


def _clear_hf_filesystems() -> None:
    try:
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()
    except (ImportError, AttributeError):  # pragma: no cover - depends on versions
        pass


def _reset_transformers_api(endpoint: str) -> None:
    hub = sys.modules.get("transformers.utils.hub")
    api = getattr(hub, "_hf_api", None)
    if api is not None and getattr(api, "endpoint", None) != endpoint:
        hub._hf_api = None  # recreated lazily from the (patched) constants


@contextlib.contextmanager
def use_hub(
    endpoint: str,
    token: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    xet: bool = True,
) -> Iterator[None]:
    """Within the block, huggingface_hub / transformers / datasets calls go to `endpoint` with
    `token` (unless given another token explicitly). `cache_dir` isolates the download cache;
    `xet=False` forces the classic git-lfs upload path (as HF_HUB_DISABLE_XET=1 would)."""
    from huggingface_hub import constants

    endpoint = endpoint.rstrip("/")
    patcher = _Patcher()
    try:
        patcher.env("HF_ENDPOINT", endpoint)
        if token is not None:
            patcher.env("HF_TOKEN", token)
        patcher.env("HF_HUB_DISABLE_TELEMETRY", "1")
        patcher.attr(constants, "ENDPOINT", endpoint)
        patcher.attr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        patcher.attr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        host = urlsplit(endpoint).hostname
        if host and hasattr(constants, "HF_URL_HOSTS"):
            patcher.attr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS) | {host.lower()})
        if cache_dir is not None:
            patcher.env("HF_HUB_CACHE", str(cache_dir))
            patcher.attr(constants, "HF_HUB_CACHE", str(cache_dir))
            patcher.attr(constants, "HUGGINGFACE_HUB_CACHE", str(cache_dir))
        if not xet:
            patcher.env("HF_HUB_DISABLE_XET", "1")
            patcher.attr(constants, "HF_HUB_DISABLE_XET", True)
        datasets_config = sys.modules.get("datasets.config")
        if datasets_config is not None:
            patcher.attr(datasets_config, "HF_ENDPOINT", endpoint)
            patcher.attr(datasets_config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
            patcher.attr(datasets_config, "USE_PARQUET_EXPORT", False)
        hub_module = sys.modules.get("transformers.utils.hub")
        if hub_module is not None and hasattr(hub_module, "_hf_api"):
            patcher.attr(hub_module, "_hf_api", None)
        _clear_hf_filesystems()
        yield
    finally:
        patcher.restore()
        _clear_hf_filesystems()
        # Modules first imported inside the block captured our endpoint at import: put them back
        # on the endpoint the environment now names.
        outside = os.environ.get("HF_ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/")
        datasets_config = sys.modules.get("datasets.config")
        if datasets_config is not None and getattr(datasets_config, "HF_ENDPOINT", None) == endpoint:
            datasets_config.HF_ENDPOINT = outside
            datasets_config.HUB_DATASETS_URL = outside + "/datasets/{repo_id}/resolve/{revision}/{path}"
            datasets_config.USE_PARQUET_EXPORT = True
        _reset_transformers_api(constants.ENDPOINT)
