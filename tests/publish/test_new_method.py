"""A fifth adapter method added in a file of its own (tests/modeling/toy_method/adapter_codelora.py), with no edit
anywhere else: it is offered by the CLI, trains, saves, loads by the Auto classes in a fresh interpreter where
talklora_hub cannot be imported (its file travels in the saved folder), gets a card, and the Space shows its
routing per token; all of it read from its one MethodSpec."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from talklora_hub.modeling.methods import (MethodSpec, load_method_file, method_names, method_spec, register_method,
                                           unregister_method)

from ..modeling.test_roundtrip import LOADER
from ..train.helpers import colors_task, save_tiny_llama

TOY = Path(__file__).resolve().parents[1] / "modeling" / "toy_method" / "adapter_codelora.py"


@pytest.fixture
def codelora():
    module = load_method_file(TOY)
    yield module
    unregister_method("codelora")


def test_a_method_in_its_own_file_trains_saves_loads_gets_a_card_and_shows_routing(codelora, hub, tmp_path):
    from talklora_hub.cli.train import method_option
    from talklora_hub.publish.publisher import publish_model
    from talklora_hub.space.capture import analyze_text
    from talklora_hub.space.models import load_model
    from talklora_hub.train import TrainConfig, train

    assert "codelora" in method_names() and "codelora: E LoRA experts" in method_option()["help"]
    base = save_tiny_llama(tmp_path / "base")
    result = train(TrainConfig(base=str(base), tasks=[colors_task()], method="codelora", r=4, lr=2e-2, max_steps=6,
                               batch_size=4, max_length=40, max_eval_examples=4, progress=False, log_every=2))
    model = result.model.eval()
    assert model.adapter_settings.num_experts == 2  # the spec's default
    layers = [m for m in model.modules() if type(m).__name__ == "CodeLoRALinear"]
    assert layers and all(layer.lora_B.abs().sum() > 0 for layer in layers)  # B starts at zero: it trained
    assert model.parameter_counts()["adapter"] == sum(
        layer.lora_A.numel() + layer.code_router.numel() + layer.lora_B.numel() for layer in layers)

    folder = tmp_path / "model"
    model.save_pretrained(folder)
    result.tokenizer.save_pretrained(folder)
    assert "from .adapter_codelora import CodeLoRALinear" in (folder / "method_plugins.py").read_text()
    assert (folder / "adapter_codelora.py").read_text() == TOY.read_text()
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    torch.save(ids, folder / "inputs.pt")
    out = tmp_path / "result.pt"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", LOADER, str(folder), "AutoModelForCausalLM", "float32", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(out)
    with torch.no_grad():
        expected = model(ids, attention_mask=torch.ones_like(ids), output_router_logits=True)
    assert torch.equal(got["out"], expected.logits)
    assert len(got["routing"]) == len(layers)  # its routing is recorded like the built-in routed methods'

    pushed = publish_model(model, None, "user/tiny-codelora", api=hub.api(), zoo_repo=False)
    card = Path(hub.api().hf_hub_download("user/tiny-codelora", "README.md")).read_text()
    assert "A CodeLoRA model with 2 experts" in card and pushed.repo_id == "user/tiny-codelora"

    loaded = load_model(str(folder))
    assert loaded.kind == "CodeLoRA · 2 experts per token" and loaded.token_routed
    routing = analyze_text(loaded, "red blue green")
    assert routing.weights is not None and routing.weights.shape[0] == len(layers) and routing.weights.shape[-1] == 2


def test_a_method_declares_its_own_setting_which_is_validated_saved_and_reloaded(codelora, tmp_path):
    from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
    from talklora_hub.publish.cards import adapter_rows

    assert AdapterSettings(method="codelora").method_settings == {"code_temperature": 1.0}  # the declared default
    assert AdapterSettings().method_settings == {} and "method_settings" not in AdapterSettings().to_dict()
    settings = AdapterSettings(method="codelora", r=4, method_settings={"code_temperature": 0.5})
    assert AdapterSettings.from_dict(settings.to_dict()) == settings != AdapterSettings(method="codelora", r=4)
    base = save_tiny_llama(tmp_path / "base")
    model = TalkLoRAForCausalLM.from_base(str(base), settings)
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["adapter"]
    assert saved["method_settings"] == {"code_temperature": 0.5}
    again = TalkLoRAForCausalLM.from_pretrained(tmp_path / "model")
    assert again.adapter_settings.method_settings == {"code_temperature": 0.5}
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():  # the setting is read: a sharper router routes (and computes) otherwise
        sharp = model(ids, output_router_logits=True).routing_weights[0]
        plain = TalkLoRAForCausalLM.from_base(str(base), AdapterSettings(method="codelora", r=4))
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(sharp, plain(ids, output_router_logits=True).routing_weights[0])
    assert ("code_temperature", 0.5) in adapter_rows(settings.to_dict())  # the card shows it

    with pytest.raises(ValueError, match=r"`method_settings\['code_temperature'\]` must be > 0, got -1.0\. "
                                         r"Fix: use e\.g\. 1\.0"):
        AdapterSettings(method="codelora", method_settings={"code_temperature": -1.0})
    with pytest.raises(ValueError, match=r"`method_settings\['code_temperature'\]` must be a float, got 'hot'"):
        AdapterSettings(method="codelora", method_settings={"code_temperature": "hot"})
    with pytest.raises(ValueError, match=r"`method_settings` takes only the settings method='codelora' declares "
                                         r"\(\['code_temperature'\]\), got \['code_temp'\]\. Fix:"):
        AdapterSettings(method="codelora", method_settings={"code_temp": 0.5})
    with pytest.raises(ValueError, match=r"`method_settings` takes only the settings method='lora' declares"):
        AdapterSettings(method="lora", method_settings={"code_temperature": 0.5})
    with pytest.raises(ValueError, match=r"`settings` must be MethodSettings with distinct names"):
        register_method(dataclasses.replace(method_spec("codelora"), settings=method_spec("codelora").settings * 2))


def test_registering_refuses_a_taken_name_or_an_unknown_routing(codelora):
    spec = method_spec("codelora")
    with pytest.raises(ValueError, match="`name` must be unique"):
        register_method(MethodSpec(name="codelora", label="x", layer_class=json.JSONDecoder))
    with pytest.raises(ValueError, match="`routing` must be one of"):
        register_method(MethodSpec(name="other", label="x", layer_class=spec.layer_class, routing="per-layer"))
    assert method_spec("codelora") is spec and method_spec("other") is None


def test_an_unregistered_method_is_refused_with_the_registered_names():
    from talklora_hub.modeling import AdapterSettings

    with pytest.raises(ValueError, match=r"`method` must be one of \['lora', 'moelora', 'talklora', 'ttlora'\]"):
        AdapterSettings(method="codelora")
