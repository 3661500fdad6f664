"""Saved models load where talklora_hub is not importable, through the Auto classes with
trust_remote_code, and give bit-identical logits and identical generate() tokens."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from talklora_hub.modeling import (AdapterSettings, TalkLoRAForCausalLM, TalkLoRAForSequenceClassification,
                                   TalkLoRAModel)
from talklora_hub.modeling.modeling_talklora import BUNDLE_DIR

from .conftest import tiny_base

# Runs in a fresh interpreter: talklora_hub is made unimportable before anything else happens.
LOADER = textwrap.dedent('''
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "talklora_hub" or name.startswith("talklora_hub."):
                raise ImportError("talklora_hub is blocked in this interpreter")
    sys.meta_path.insert(0, Block())
    try:
        import talklora_hub
        raise SystemExit("talklora_hub was importable")
    except ImportError:
        pass
    import torch, transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
    path, auto_name, dtype, out = sys.argv[1:5]
    auto = getattr(transformers, auto_name)
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert type(config).__name__ == "TalkLoRAConfig", type(config)
    model = auto.from_pretrained(path, trust_remote_code=True, dtype=getattr(torch, dtype))
    assert "talklora_hub" not in type(model).__module__.split(".")[0]
    ids = torch.load(path + "/inputs.pt")
    with torch.no_grad():
        first = model(ids, attention_mask=torch.ones_like(ids), output_router_logits=True)
    result = {"out": first[0] if auto_name != "AutoModel" else first.last_hidden_state,
              "routing": first.routing_weights}
    if auto_name == "AutoModelForCausalLM":
        result["generated"] = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                             do_sample=False)
    torch.save(result, out)
''')


def load_in_fresh_interpreter(path, auto_name, dtype, tmp_path):
    out = tmp_path / f"result_{auto_name}.pt"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", LOADER, str(path), auto_name, dtype, str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


def randomised(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("method", ["lora", "moelora", "talklora", "ttlora"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_causal_lm_round_trip_in_fresh_interpreter(method, dtype, tmp_path):
    base = tiny_base("llama", dtype=getattr(torch, dtype))
    model = randomised(TalkLoRAForCausalLM.from_base(base, AdapterSettings(method=method, r=8)))
    ids = torch.randint(3, 96, (2, 7))
    save = tmp_path / "model"
    model.save_pretrained(save)
    torch.save(ids, save / "inputs.pt")
    with torch.no_grad():
        expected = model(ids, attention_mask=torch.ones_like(ids), output_router_logits=True)
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    got = load_in_fresh_interpreter(save, "AutoModelForCausalLM", dtype, tmp_path)
    assert torch.equal(got["out"], expected.logits)
    assert torch.equal(got["generated"], generated)
    if method in ("moelora", "talklora"):
        assert all(torch.equal(a, b) for a, b in zip(got["routing"], expected.routing_weights))


def test_bare_and_classification_auto_classes_round_trip(tmp_path):
    ids = torch.randint(3, 96, (2, 7))
    bare = randomised(TalkLoRAModel.from_base(tiny_base("llama", head="bare"), AdapterSettings(r=8)))
    bare.save_pretrained(tmp_path / "bare")
    torch.save(ids, tmp_path / "bare" / "inputs.pt")
    with torch.no_grad():
        expected = bare(ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.equal(load_in_fresh_interpreter(tmp_path / "bare", "AutoModel", "float32", tmp_path)["out"], expected)

    cls = randomised(TalkLoRAForSequenceClassification.from_base(tiny_base("bert", head="seqcls", num_labels=3),
                                                                 AdapterSettings(method="talklora", r=8)))
    cls.save_pretrained(tmp_path / "cls")
    torch.save(ids, tmp_path / "cls" / "inputs.pt")
    with torch.no_grad():
        expected = cls(ids, attention_mask=torch.ones_like(ids)).logits
    got = load_in_fresh_interpreter(tmp_path / "cls", "AutoModelForSequenceClassification", "float32", tmp_path)
    assert torch.equal(got["out"], expected)


def test_causal_checkpoint_loads_as_bare_model_with_same_hidden_states(tmp_path):
    model = randomised(TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8)))
    model.save_pretrained(tmp_path)
    bare = TalkLoRAModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 96, (2, 7))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True).hidden_states[-1]
        assert torch.equal(bare(ids).last_hidden_state, expected)


def test_shared_banks_are_saved_once_and_stay_shared_after_loading(tmp_path):
    model = randomised(TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="talklora", r=8)))
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert sorted(k for k in keys if "banks" in k) == [f"adapter_shared.banks.{p}" for p in
                                                       ("down_proj", "k_proj", "q_proj", "up_proj", "v_proj")]
    assert not any(k.endswith("lora_B") for k in keys)
    loaded = TalkLoRAForCausalLM.from_pretrained(tmp_path)
    q_layers = [m for n, m in loaded.named_modules() if n.endswith("q_proj")]
    assert q_layers[0].expert_bank is q_layers[1].expert_bank
    torch.testing.assert_close(loaded.adapter_shared.banks["q_proj"], model.adapter_shared.banks["q_proj"])


def test_saved_folder_holds_safetensors_config_with_auto_map_and_the_bundle(tmp_path):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8))
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    bundle = {p.name for p in BUNDLE_DIR.glob("*.py") if p.name != "__init__.py"}
    assert bundle <= files
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "talklora_hub"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_talklora.TalkLoRAForCausalLM"
    assert config["base_config"]["model_type"] == "llama" and config["adapter"]["method"] == "talklora"
    # Saving again over an existing folder replaces it whole, leaving no staging folders behind.
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_unknown_config_keys_are_tolerated(tmp_path):
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["some_future_key"] = 1
    config["adapter"]["some_future_setting"] = "x"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="some_future_setting"):
        TalkLoRAForCausalLM.from_pretrained(tmp_path)


ALLOWED_TOP_LEVEL = {"torch", "transformers", "safetensors"} | set(sys.stdlib_module_names)


def test_bundle_imports_only_stdlib_torch_transformers_safetensors_and_itself():
    for path in BUNDLE_DIR.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in ALLOWED_TOP_LEVEL, (path.name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1, (path.name, node.module)
                    assert (BUNDLE_DIR / f"{node.module}.py").exists(), (path.name, node.module)
                else:
                    assert node.module.split(".")[0] in ALLOWED_TOP_LEVEL, (path.name, node.module)


def test_routing_trace_during_generate_covers_every_new_token():
    model = randomised(TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="talklora", r=8)))
    ids = torch.randint(3, 96, (1, 5))
    with model.trace_routing() as trace:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    weights = trace.weights()
    # prompt pass + one pass per new token except the last one (it is sampled, never read)
    assert len(trace.steps) == 4 and out.shape[1] == 9
    assert weights.shape == (10, 1, 8, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(10, 1, 8))
    with torch.no_grad():
        full = model(out[:, :8], output_router_logits=True)
    torch.testing.assert_close(weights, torch.stack(full.routing_weights), rtol=1e-4, atol=1e-5)
    assert trace.module_names == list(full.router_module_names)
