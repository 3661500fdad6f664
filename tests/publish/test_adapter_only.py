"""Adapter-only models: a save of a few kB that names its base by repo id, commit and fingerprint, and loads
with one AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True) (the base is fetched and checked),
on a machine where talklora_hub cannot be imported, with the full model's logits."""

import json
import os
import subprocess
import sys

import pytest
import torch

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.loading import AdapterLoadError

from ..modeling.test_roundtrip import LOADER, randomised


@pytest.fixture(scope="module")
def trained(hub, base_repo):
    repo_id, commit = base_repo
    model = TalkLoRAForCausalLM.from_base(repo_id, AdapterSettings(method="talklora", r=8), revision=commit)
    return randomised(model)


def _folder_bytes(folder):
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")


def test_adapter_only_save_is_small_and_loads_with_the_full_models_logits(trained, ids, tmp_path):
    trained.save_pretrained(tmp_path / "full")
    trained.save_pretrained(tmp_path / "adapter", adapter_only=True)
    names = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names
    assert _folder_bytes(tmp_path / "adapter") * 3 < _folder_bytes(tmp_path / "full")
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["adapter_only"] is True and config["base_model_name_or_path"] == "user/tiny-llama"
    assert config["base_model_fingerprint"].startswith("bf16-sha256:")

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter", trust_remote_code=True)
    assert loaded.parameter_counts()["trainable"] == 0 and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, trained(input_ids=ids).logits)
    resumed = TalkLoRAForCausalLM.from_pretrained(tmp_path / "adapter", is_trainable=True)
    assert resumed.parameter_counts()["trainable"] == trained.parameter_counts()["adapter"]


def test_adapter_only_repo_loads_by_repo_id_without_talklora_hub(hub, trained, ids, tmp_path):
    folder = tmp_path / "adapter"
    trained.save_pretrained(folder, adapter_only=True)
    torch.save(ids, folder / "inputs.pt")
    api = hub.api()
    api.create_repo("user/tiny-talklora-adapter", exist_ok=True)
    api.upload_folder(repo_id="user/tiny-talklora-adapter", folder_path=str(folder))
    out = tmp_path / "result.pt"
    env = {**os.environ, **hub.env(), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("PYTHONPATH", None)
    # The loader reads inputs.pt next to the model: give it the downloaded snapshot's path via the repo id.
    script = LOADER.replace('ids = torch.load(path + "/inputs.pt")',
                            'from huggingface_hub import hf_hub_download\n'
                            'ids = torch.load(hf_hub_download(path, "inputs.pt"))')
    done = subprocess.run([sys.executable, "-c", script, "user/tiny-talklora-adapter", "AutoModelForCausalLM",
                           "float32", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out)
    with torch.no_grad():
        assert torch.equal(result["out"], trained(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)


def test_a_base_at_another_commit_is_refused_naming_repo_and_commit(hub, base_repo, trained, tmp_path):
    folder = tmp_path / "adapter"
    trained.save_pretrained(folder, adapter_only=True)
    config = json.loads((folder / "config.json").read_text())
    config["base_model_fingerprint"] = "bf16-sha256:" + "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match=f"user/tiny-llama at commit {base_repo[1]}"):
        TalkLoRAForCausalLM.from_pretrained(folder)
    config["base_model_name_or_path"] = "user/no-such-base"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match="user/no-such-base"):
        TalkLoRAForCausalLM.from_pretrained(folder)


def test_adapter_only_needs_a_base_named_by_repo_and_commit(tmp_path):
    from ..modeling.conftest import tiny_base

    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="lora", r=8))
    with pytest.raises(ValueError, match="adapter_only"):
        model.save_pretrained(tmp_path / "x", adapter_only=True)
    assert not (tmp_path / "x").exists()
