"""transformers and datasets, unmodified, against the hub: push_to_hub / from_pretrained (also with
remote code) and Dataset.push_to_hub / load_dataset. `LocalHub.activate` points the libraries,
already imported by this test process, at the server."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")


def _tiny_llama():
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_transformers_push_and_from_pretrained(hub, repo_id, tmp_path):
    model = _tiny_llama()
    with hub.activate(cache_dir=tmp_path / "cache"):
        model.push_to_hub(repo_id)
        config = transformers.AutoConfig.from_pretrained(repo_id)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(repo_id).eval()
    assert config.hidden_size == 16 and config.num_hidden_layers == 2
    tokens = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, loaded(tokens).logits)
    files = hub.api().list_repo_files(repo_id)
    assert "model.safetensors" in files and "config.json" in files


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyTalkConfig(PretrainedConfig):
    model_type = "tiny-talk"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
'''

REMOTE_MODEL = '''
import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyTalkConfig


class TinyTalkModel(PreTrainedModel):
    config_class = TinyTalkConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
'''


def test_trust_remote_code_model_by_repo_id(hub, api, repo_id, tmp_path):
    # The dynamic-module cache is isolated for the whole session by tests/conftest.py: patching it per
    # test would leave `transformers_modules` in sys.modules pointing at this test's folder.
    source = tmp_path / "src"
    source.mkdir()
    (source / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (source / "modeling_tiny.py").write_text(REMOTE_MODEL)
    (source / "config.json").write_text(json.dumps({
        "model_type": "tiny-talk", "width": 4,
        "auto_map": {"AutoConfig": "configuration_tiny.TinyTalkConfig", "AutoModel": "modeling_tiny.TinyTalkModel"},
    }))
    from safetensors.torch import save_file

    weights = {"proj.weight": torch.randn(4, 4), "proj.bias": torch.randn(4)}
    save_file(weights, str(source / "model.safetensors"), metadata={"format": "pt"})
    api.create_repo(repo_id)
    api.upload_folder(folder_path=source, repo_id=repo_id)
    with hub.activate(cache_dir=tmp_path / "cache"):
        config = transformers.AutoConfig.from_pretrained(repo_id, trust_remote_code=True)
        model = transformers.AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    assert type(config).__name__ == "TinyTalkConfig" and config.width == 4
    assert type(model).__name__ == "TinyTalkModel"
    assert torch.equal(model.proj.weight, weights["proj.weight"]) and torch.equal(model.proj.bias, weights["proj.bias"])


def test_datasets_push_and_load(hub, repo_id, tmp_path):
    train = datasets.Dataset.from_dict({"text": [f"example {i}" for i in range(50)], "label": [i % 3 for i in range(50)]})
    test = datasets.Dataset.from_dict({"text": ["held out"], "label": [1]})
    with hub.activate(cache_dir=tmp_path / "cache"):
        datasets.DatasetDict({"train": train, "test": test}).push_to_hub(repo_id)
        loaded = datasets.load_dataset(repo_id, cache_dir=str(tmp_path / "datasets"))
        revision = hub.api().dataset_info(repo_id).sha
        pinned = datasets.load_dataset(repo_id, split="test", revision=revision, cache_dir=str(tmp_path / "ds2"))
        streamed = [row["label"] for row in datasets.load_dataset(repo_id, split="train", streaming=True,
                                                                  cache_dir=str(tmp_path / "ds3"))]
    assert loaded["train"].to_dict() == train.to_dict()
    assert streamed == train["label"]
    assert loaded["test"].to_dict() == test.to_dict()
    assert pinned.to_dict() == test.to_dict()
