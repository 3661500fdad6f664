"""The bundle on other transformers releases: models of every method, built and saved here (the dev venv),
load with the Auto classes and trust_remote_code in clean venvs that hold only torch, one transformers
release and safetensors (no talklora_hub, accelerate or peft), and give the logits, routing and greedy
generate() tokens of the reference computed here.

The releases come from TALKLORA_TRANSFORMERS_MATRIX (e.g. "5.20.0 5.24.0"); scripts/transformers_matrix.sh
sets it to the oldest supported release and the newest pip can install. Without it these tests skip. The venvs are
cached under .cache/matrix/.

Logits and routing are compared with a tolerance (releases may order float operations differently); the
tokens exactly, on a tiny model whose greedy margins the reference checks are far above that tolerance. The
reference tokens come from a plain greedy loop without a KV cache (for a TT-LoRA MoE, with the experts the
router chose on the prompt held for every new token), so they test generate() itself, not a copy of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM, TalkLoRAForSequenceClassification

from ..modeling.conftest import tiny_base
from ..modeling.test_roundtrip import randomised
from .venvs import cached_venv, clean_env, venv_python

VERSIONS = os.environ.get("TALKLORA_TRANSFORMERS_MATRIX", "").split()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not VERSIONS, reason="set TALKLORA_TRANSFORMERS_MATRIX (scripts/transformers_matrix.sh "
                                                      "does) to the transformers releases to test")]

NEW_TOKENS = 6
MIN_MARGIN = 1e-4  # smallest top-1 / top-2 logit gap the reference accepts: 10x the logits' atol
TOLERANCE = dict(rtol=1e-4, atol=1e-5)

# name -> (auto class, settings); all causal models are tiny random Llamas, the classifier a tiny BERT.
MODELS = {
    "lora": ("AutoModelForCausalLM", dict(method="lora", r=8)),
    "moelora": ("AutoModelForCausalLM", dict(method="moelora", r=8, num_experts=4)),
    "talklora": ("AutoModelForCausalLM", dict(method="talklora", r=8, num_experts=4)),
    "ttlora": ("AutoModelForCausalLM", dict(method="ttlora", r=8)),
    "ttlora_moe": ("AutoModelForCausalLM", dict(method="ttlora", r=8, num_experts=2)),
    "talklora_seqcls": ("AutoModelForSequenceClassification", dict(method="talklora", r=8, num_experts=4)),
}

# Runs in the matrix venv: loads each saved model as a stranger would and records what it computes.
LOADER = textwrap.dedent('''
    import importlib.abc, importlib.util, json, sys, traceback
    present = {name: importlib.util.find_spec(name) is not None for name in ("talklora_hub", "accelerate", "peft")}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "talklora_hub":
                raise ImportError("talklora_hub is blocked in this interpreter")
    sys.meta_path.insert(0, Block())
    import torch, transformers
    from transformers import AutoConfig
    jobs, out = json.load(open(sys.argv[1])), sys.argv[2]
    results = {"versions": {"torch": str(torch.__version__), "transformers": str(transformers.__version__)},
               "present": present, "models": {}}
    for name, job in jobs.items():
        try:
            path = job["path"]
            config = AutoConfig.from_pretrained(path, trust_remote_code=True)
            model = getattr(transformers, job["auto"]).from_pretrained(path, trust_remote_code=True,
                                                                       dtype=torch.float32).eval()
            ids = torch.load(path + "/inputs.pt")
            mask = torch.ones_like(ids)
            with torch.no_grad():
                first = model(ids, attention_mask=mask, output_router_logits=True)
            got = {"config_class": type(config).__name__, "model_module": type(model).__module__,
                   "logits": first.logits, "routing_weights": first.routing_weights,
                   "sequence_router_logits": first.sequence_router_logits}
            if job["auto"] == "AutoModelForCausalLM":
                got["generated"] = model.generate(ids, attention_mask=mask, max_new_tokens=job["new_tokens"],
                                                  do_sample=False)
            results["models"][name] = got
        except Exception:
            results["models"][name] = {"error": traceback.format_exc()}
    torch.save(results, out)
''')


def greedy_reference(model, ids: torch.Tensor, new_tokens: int):
    """Greedy tokens from full forward passes without a cache, and the smallest top-1 / top-2 gap on the way.
    A TT-LoRA MoE keeps the experts its router chose on the prompt, as generation must."""
    sequence, margins = ids, []
    experts = None
    if model.sequence_router is not None:
        experts = model.route_sequences(ids, torch.ones_like(ids)).argmax(-1)
    held = {} if experts is None else {"sequence_experts": experts}
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(sequence, attention_mask=torch.ones_like(sequence), use_cache=False, **held).logits[:, -1]
            top = logits.topk(2).values
            margins.append((top[:, 0] - top[:, 1]).min().item())
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence, min(margins), experts


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder, reference): every model saved by the dev venv with its reference outputs."""
    root = tmp_path_factory.mktemp("matrix-models")
    ids = torch.randint(3, 96, (4, 7), generator=torch.Generator().manual_seed(3))
    saved = {}
    for name, (auto, settings) in MODELS.items():
        if auto == "AutoModelForCausalLM":
            base = tiny_base("llama", initializer_range=0.5)  # wide logits: large greedy margins
            model = randomised(TalkLoRAForCausalLM.from_base(base, AdapterSettings(**settings)))
        else:
            base = tiny_base("bert", head="seqcls", num_labels=3)
            model = randomised(TalkLoRAForSequenceClassification.from_base(base, AdapterSettings(**settings)))
        folder = root / name
        model.save_pretrained(folder)
        torch.save(ids, folder / "inputs.pt")
        with torch.no_grad():
            out = model(ids, attention_mask=torch.ones_like(ids), output_router_logits=True)
        reference = {"logits": out.logits, "routing_weights": out.routing_weights,
                     "sequence_router_logits": out.sequence_router_logits}
        if auto == "AutoModelForCausalLM":
            tokens, margin, experts = greedy_reference(model, ids, NEW_TOKENS)
            assert margin > MIN_MARGIN, f"{name}: greedy margin {margin:.2e} too small for an exact token check"
            if experts is not None:
                # Both experts serve some sequence, so holding the wrong one would change tokens.
                assert set(experts.tolist()) == {0, 1}, experts
            reference.update(generated=tokens, experts=experts)
        saved[name] = (folder, reference, auto)
    return saved


@pytest.fixture(scope="module", params=VERSIONS)
def loaded(request, saved, tmp_path_factory):
    """What the matrix venv of one transformers release computed for every saved model."""
    version = request.param
    venv = cached_venv(f"transformers-{version}", [f"transformers=={version}", "safetensors"])
    work = tmp_path_factory.mktemp(f"matrix-{version}")
    jobs = {name: {"path": str(folder), "auto": auto, "new_tokens": NEW_TOKENS}
            for name, (folder, _, auto) in saved.items()}
    (work / "jobs.json").write_text(json.dumps(jobs))
    out = work / "results.pt"
    env = clean_env(HF_MODULES_CACHE=str(work / "modules"), HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1")
    done = subprocess.run([str(venv_python(venv)), "-c", LOADER, str(work / "jobs.json"), str(out)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-4000:]
    return version, torch.load(out)


def test_matrix_venv_holds_only_torch_transformers_and_safetensors(loaded):
    version, results = loaded
    assert results["versions"]["transformers"] == version
    assert results["present"] == {"talklora_hub": False, "accelerate": False, "peft": False}


@pytest.mark.parametrize("name", list(MODELS))
def test_saved_model_loads_and_computes_the_reference(loaded, saved, name):
    version, results = loaded
    got = results["models"][name]
    assert "error" not in got, f"transformers {version}, {name}:\n{got.get('error')}"
    _, expected, auto = saved[name]
    assert got["config_class"] == "TalkLoRAConfig"
    assert got["model_module"].startswith("transformers_modules."), got["model_module"]
    torch.testing.assert_close(got["logits"], expected["logits"], **TOLERANCE)
    if expected["routing_weights"] is None:
        assert got["routing_weights"] is None
    else:
        assert len(got["routing_weights"]) == len(expected["routing_weights"]) > 0
        for a, b in zip(got["routing_weights"], expected["routing_weights"]):
            torch.testing.assert_close(a, b, **TOLERANCE)
    if expected["sequence_router_logits"] is not None:
        torch.testing.assert_close(got["sequence_router_logits"], expected["sequence_router_logits"], **TOLERANCE)
        assert torch.equal(got["sequence_router_logits"].argmax(-1), expected["experts"])
    if auto == "AutoModelForCausalLM":
        assert torch.equal(got["generated"], expected["generated"]), (
            f"transformers {version}, {name}: generate() gave\n{got['generated'][:, -NEW_TOKENS:]}\n"
            f"the greedy reference is\n{expected['generated'][:, -NEW_TOKENS:]}")
