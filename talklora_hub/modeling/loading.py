"""Loading a saved model strictly: every adapter tensor present (never a freshly initialised one in its
place), a corrupt weights file named, config/weights disagreements explained, and adapter-only folders
(adapter tensors + the base named by repo id, commit and fingerprint) assembled on their fetched base.

Part of the bundle that travels inside every saved model: imports only the standard library, torch,
transformers, safetensors and sibling files.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .adapter_settings import AdapterSettings, config_error

HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download", "proxies")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterLoadError(ValueError):
    """A saved model whose adapter cannot be loaded as saved: a missing, unexpected or unreadable tensor, or a
    base that is not the one the adapter was trained on."""


def hub_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}


def explain_weight_mismatch(cls, path, kwargs: Dict[str, Any]) -> Optional[ValueError]:
    """A config_error naming the adapter setting whose value in config.json disagrees with the shapes
    of the saved tensors (found by rebuilding the model on the meta device with candidate values)."""
    hub = hub_kwargs(kwargs)
    config = kwargs.get("config")
    if not isinstance(config, cls.config_class):
        config = cls.config_class.from_pretrained(path, **hub)
    saved = saved_tensor_shapes(path, hub)
    expected = expected_shapes(cls, config)
    mismatched = [(n, expected[n], saved[n][0], saved[n][1]) for n in expected  # in module order
                  if n in saved and saved[n][0] != expected[n]]
    if not mismatched:
        return None
    settings = config.adapter_settings
    name, built, found, filename = mismatched[0]
    # Candidate values: the saved sizes (and, for r, E times them: an expert owns r / E), those of the
    # axes that differ first, so that the first rebuild on the meta device usually explains it.
    differing = [f for _, b, shape, _ in mismatched for f, e in zip(shape, b) if f != e]
    dims = differing + [d for _, _, shape, _ in mismatched for d in shape]
    candidates = list(dict.fromkeys(dims + [d * settings.num_experts for d in dims]))
    for key in ("r", "num_experts", "tt_rank"):
        current = getattr(settings, key)
        for value in candidates:
            if value == current:
                continue
            try:
                trial = AdapterSettings.from_dict({**settings.to_dict(), key: value})
            except ValueError:
                continue
            trial_config = copy.deepcopy(config)
            trial_config.adapter = trial.to_dict()
            try:
                shapes = expected_shapes(cls, trial_config)
            except Exception:
                continue
            if all(shapes.get(n, shape) == shape for n, (shape, _) in saved.items()):
                return config_error(
                    f"adapter.{key}", f"in config.json must match the saved weights: {name} has shape "
                    f"{found} in {filename}, which {key}={value} gives, but {key}={current} builds {built}",
                    current, f"restore \"{key}\": {value} in the \"adapter\" section of config.json (the value "
                    f"the weights were trained with), or train a new adapter with {key}={current}.")
    listed = "; ".join(f"{n} has shape {f} in {file} but the config builds {b}"
                       for n, b, f, file in mismatched[:3])
    shown = {k: getattr(settings, k) for k in ("method", "r", "num_experts", "tt_rank", "tt_factors")}
    return config_error(
        "adapter", f"settings in config.json must match the saved weights ({len(mismatched)} tensors disagree: "
        f"{listed})", shown, "restore the adapter settings (and base_config) the weights were saved with, "
        "e.g. from the training record, or retrain with the new settings.")


def saved_tensor_shapes(path, hub: Dict[str, Any]) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """{tensor name: (shape, file name)} read from the safetensors headers of a saved model (a folder or
    a Hub repo, whose files a failed load has already cached)."""
    from safetensors import safe_open

    folder = Path(path) / hub.get("subfolder", "")
    if folder.is_dir():
        files = sorted(folder.glob("*.safetensors"))
    else:
        from transformers.utils import cached_file

        index = cached_file(path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub)
        if index:
            names = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
            files = [Path(cached_file(path, name, **hub)) for name in names]
        else:
            files = [Path(cached_file(path, "model.safetensors", **hub))]
    shapes: Dict[str, Tuple[Tuple[int, ...], str]] = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                shapes[key] = (tuple(handle.get_slice(key).get_shape()), file.name)
    return shapes


def expected_shapes(cls, config) -> Dict[str, Tuple[int, ...]]:
    """The tensor shapes a model of this class builds from config (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = cls(copy.deepcopy(config))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


# ---- strict loading ---------------------------------------------------------------------------------
def check_adapter_loaded(model, loading_info: Dict[str, Any], path) -> None:
    """Raises when the saved weights lacked an adapter tensor (transformers would only log it as missing and
    leave it freshly initialised: a corrupted expert would silently give wrong answers) or held tensors this
    model has no place for."""
    adapter = set(model.adapter_tensor_names())
    missing = sorted(adapter & set(loading_info.get("missing_keys") or ()))
    unexpected = sorted(set(loading_info.get("unexpected_keys") or ()))
    if missing or unexpected:
        parts = ([f"missing adapter tensors {missing[:5]}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")]
                 if missing else []) + ([f"unexpected tensors {unexpected[:5]}"] if unexpected else [])
        raise AdapterLoadError(
            f"the weights saved in {path} do not fit this model's adapter: {'; '.join(parts)}. A missing tensor "
            "would be initialised at random and give wrong outputs, so loading stops. Fix: re-download or re-save "
            "the model (its weights file is incomplete or from another adapter configuration).")


def weight_files(path, hub: Dict[str, Any]) -> List[Path]:
    """The safetensors files of a saved model folder or (already cached) Hub repo."""
    folder = Path(path) / hub.get("subfolder", "")
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors"))
    from transformers.utils import cached_file

    found = []
    for name in ("model.safetensors", ADAPTER_WEIGHTS):
        file = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False, **hub)
        if file:
            found.append(Path(file))
    return found


def unreadable_weights(path, hub: Dict[str, Any]) -> Optional[Tuple[Path, str]]:
    """(file, reason) for the first safetensors file of a saved model whose header or size is broken."""
    from safetensors import safe_open

    for file in weight_files(path, hub):
        try:
            with safe_open(str(file), "pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key).get_shape()
        except Exception as error:  # SafetensorError has no public class in every version
            return file, str(error)
        size = file.stat().st_size
        with open(file, "rb") as raw:
            header = 8 + int.from_bytes(raw.read(8), "little")
        with safe_open(str(file), "pt") as handle:
            needed = header + _data_bytes(handle)
        if size < needed:
            return file, f"the file is {size} bytes but its header describes {needed} (truncated)"
    return None


def _data_bytes(handle) -> int:
    """Bytes of tensor data a safetensors header describes."""
    total = 0
    for key in handle.keys():
        piece = handle.get_slice(key)
        count = 1
        for dim in piece.get_shape():
            count *= dim
        total += count * _DTYPE_BYTES.get(piece.get_dtype(), 4)
    return total


_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def corrupt_weights_error(path, kwargs: Dict[str, Any]) -> Optional[AdapterLoadError]:
    """An error naming the broken weights file of a saved model, or None when every file reads."""
    try:
        found = unreadable_weights(path, hub_kwargs(kwargs))
    except Exception:
        return None
    if found is None:
        return None
    file, reason = found
    return AdapterLoadError(f"the weights file {file.name} of {path} cannot be read: {reason}. Fix: the file is "
                            "truncated or corrupt (an interrupted download or copy); download or save it again.")


# ---- adapter-only folders (and the expert files of talklora_hub.publish, which share these two steps) -------------
def fetch_base(auto_class, repo_id: str, revision: str, fingerprint: Optional[str], source,
               trained_modules: Optional[Sequence[str]] = None, error=AdapterLoadError, **load_kwargs):
    """The base model an adapter names, at its commit, checked against the adapter's recorded weight fingerprint
    (which leaves out trained_modules, the base modules the adapter trains and carries). source names the adapter
    in the error; error is the exception class raised for a mismatch."""
    from .fingerprint import base_fingerprint

    base = auto_class.from_pretrained(repo_id, revision=revision, **load_kwargs)
    found = base_fingerprint(base, trained_modules)
    if fingerprint and found != fingerprint:
        raise error(f"base {repo_id} at commit {revision} has weight fingerprint {found}, but {source} was trained on "
                    f"{fingerprint}. Fix: attach it only to the base (repo and commit) it was trained on.")
    return base


def load_adapter_tensors(model, tensors: Dict[str, torch.Tensor], source, error=AdapterLoadError) -> None:
    """Copies saved adapter tensors into a freshly wrapped model, strictly: the names must be exactly the model's
    adapter (model.adapter_state_dict()) and every shape must match."""
    expected = model.adapter_state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise error(f"the adapter tensors of {source} do not fit the model: missing {missing[:5]}, unexpected "
                    f"{unexpected[:5]}. Fix: attach it to a model built with the adapter settings it was saved with, "
                    "or download or save it again.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise error(f"adapter tensor {name} of {source} has shape {tuple(tensor.shape)}, the model needs "
                        f"{tuple(expected[name].shape)}. Fix: restore the adapter settings the tensors were saved "
                        "with, or attach it to a base of the same architecture.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor.to(expected[name].dtype))


def hub_commit(repo_id: str, revision: Optional[str] = None, **hub) -> Optional[str]:
    """The commit sha a Hub repo id (at revision, default its main branch) resolves to now, read from the path of
    its cached config.json (snapshots/<commit>/), or None when it cannot be resolved (a local folder, offline
    without a cache). Loading a base at this commit pins exactly what was loaded."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        resolved = cached_file(repo_id, "config.json", revision=revision, **hub)
    except Exception:  # not a Hub repo (or unreachable): nothing to pin
        return None
    commit = extract_commit_hash(resolved, None) if resolved else None
    return commit if commit and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def has_pinned_base(config) -> bool:
    """Whether a model's config names its base by a Hub repo id ("owner/name", not a local folder) and a commit sha:
    what an adapter-only save needs to be loadable anywhere."""
    name, revision = config.base_model_name_or_path, config.base_model_revision
    return bool(name and revision and str(name).count("/") == 1 and not os.path.exists(str(name))
                and re.fullmatch(r"[0-9a-f]{40}", str(revision)))


def load_adapter_only(cls, path, config, kwargs: Dict[str, Any]):
    """A model from an adapter-only folder or repo: fetches the base named in config.json (repo id at its
    commit), checks its weight fingerprint, wraps it and loads the adapter tensors strictly."""
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    repo_id, revision = config.base_model_name_or_path, config.base_model_revision
    if not repo_id or not revision:
        raise config_error("base_model_name_or_path / base_model_revision", "in config.json of an adapter-only "
                           "model must name the base's Hub repo and commit", f"{repo_id!r} @ {revision!r}",
                           "re-save the model with adapter_only=True from a base loaded by repo id and revision.")
    load = {k: kwargs[k] for k in ("dtype", "torch_dtype", "device_map", "attn_implementation", "cache_dir",
                                  "token", "local_files_only", "force_download", "quantization_config")
            if kwargs.get(k) is not None}
    source = f"the adapter-only model {path}"
    try:
        base = fetch_base(cls.base_auto_class, repo_id, revision, config.base_model_fingerprint, source,
                          config.adapter_settings.modules_to_save, config=copy.deepcopy(config.base_config), **load)
    except AdapterLoadError:
        raise
    except Exception as error:
        raise AdapterLoadError(
            f"{source} is attached to base {repo_id} at commit {revision}, which could not be loaded "
            f"({type(error).__name__}: {error}). Fix: make that repo and commit reachable (HF_ENDPOINT, a token, or "
            "the cache), or load a full model.") from error
    model = cls(config, base_model=base)
    load_adapter_tensors(model, load_file(cached_file(str(path), ADAPTER_WEIGHTS, **hub_kwargs(kwargs))), source)
    return model.eval()


def save_adapter_only(model, folder: Path) -> None:
    """Writes model's adapter tensors (ADAPTER_WEIGHTS) and a config.json naming its pinned base (repo id, commit,
    weight fingerprint) into folder; load_adapter_only reads them back onto that base."""
    from safetensors.torch import save_file

    from .fingerprint import base_fingerprint

    config = model.config
    if not has_pinned_base(config):
        raise config_error(
            "adapter_only", "needs the base named by a Hub repo id and a commit sha (config.base_model_name_or_path, "
            "config.base_model_revision)", f"{config.base_model_name_or_path!r} @ {config.base_model_revision!r}",
            "load the base with from_base(repo_id, adapter, revision=<commit sha>) (or set both fields), or save "
            "the full model (adapter_only=False).")
    tensors = {k: v.contiguous().cpu() for k, v in model.adapter_state_dict().items()}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    saved = copy.deepcopy(config)  # the model's own config stays a full model's
    saved.adapter_only = True
    saved.base_model_fingerprint = base_fingerprint(model)
    saved.architectures = [type(model).__name__]
    saved.save_pretrained(folder)
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
