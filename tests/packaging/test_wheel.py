"""A wheel built from the repo works where it is pip-installed without the dev extra: it carries the bundle
and the card templates, and a clean venv (torch's CPU build, then the wheel's own dependencies) trains a tiny
model for 2 steps, publishes it with its card to an embedded Hub on 127.0.0.1 (data in a local folder) and
loads it back by repo id.

The venv (torch + the main dependencies of pyproject.toml, no dev extra) is cached under .cache/matrix/ and
rebuilt when those dependencies change; the wheel itself is rebuilt and reinstalled on every run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from .venvs import REPO, cached_venv, clean_env, pip, venv_python

pytestmark = pytest.mark.slow

DEPENDENCIES = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

# Runs in the wheel's venv, from a folder outside the checkout.
SCRIPT = textwrap.dedent('''
    import importlib.util, json, sys
    from pathlib import Path
    work = Path(sys.argv[1])
    import talklora_hub
    report = {"package": talklora_hub.__file__,
              "absent": {name: importlib.util.find_spec(name) is None for name in ("peft", "pytest", "playwright")},
              "present": {name: importlib.util.find_spec(name) is not None for name in ("accelerate", "gguf")}}
    assert "site-packages" in report["package"], report["package"]  # the wheel's copy, not the checkout's

    import torch
    from huggingface_hub import ModelCard, hf_hub_download
    sys.path.insert(0, str(work))
    import helpers  # tests/train/helpers.py, copied beside this script
    from talklora_hub.publish import load_artifact, publish_model
    from talklora_hub.localhub.local import LocalHub
    from talklora_hub.train import TrainConfig, train

    base = helpers.save_tiny_llama(work / "base")
    result = train(TrainConfig(base=str(base), tasks=[helpers.colors_task()], method="talklora", r=8, num_experts=4,
                               lr=1e-2, max_steps=2, batch_size=4, max_length=48, max_eval_examples=4,
                               output=str(work / "run"), progress=False, log_every=1, lr_scheduler="constant"))
    report["steps"] = result.steps
    with LocalHub(root=work / "hub" / "data") as hub, hub.activate(cache_dir=work / "hub" / "cache"):
        pushed = publish_model(result.model, result.tokenizer, "user/wheel-talklora", result=result.to_dict(),
                               task="syn_colors")
        card = ModelCard.load(hf_hub_download("user/wheel-talklora", "README.md"))
        loaded = load_artifact("user/wheel-talklora")
    ids = torch.tensor([[1, 7, 8, 9, 10]])
    with torch.no_grad():
        same = torch.equal(loaded(ids).logits, result.model.eval()(ids).logits)
    report.update(commit=pushed.commit, card_library=card.data.library_name, card_tags=card.data.tags,
                  card_text=card.text[:2000], reloaded_identical=same)
    print("REPORT " + json.dumps(report))
''')


ROOT_ONLY = {"talklora_hub", "pyproject.toml", "README.md", "constraints.txt"}


def _outside_the_package(folder, names):
    """At the checkout's root keep only what the build reads; below it skip caches."""
    if Path(folder) == REPO:
        return [name for name in names if name not in ROOT_ONLY]
    return [name for name in names if name in ("__pycache__",) or name.endswith(".egg-info")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tracked and new source files, so the build's own build/ and egg-info stay out of the checkout.
    source = out / "src"
    shutil.copytree(REPO, source, ignore=_outside_the_package)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(out)],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("talklora_hub-*.whl")
    return built


def test_wheel_carries_the_bundle_and_the_card_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (REPO / "talklora_hub" / "publish" / "templates").glob("*.j2")}
    assert {"model.md.j2", "expert.md.j2", "router.md.j2"} <= templates
    assert {f"talklora_hub/publish/templates/{name}" for name in templates} <= names
    bundle = {p.name for p in (REPO / "talklora_hub" / "modeling").glob("*.py")}
    assert {f"talklora_hub/modeling/{name}" for name in bundle} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    main = [r for r in requires if "extra ==" not in r]
    for name in ("accelerate", "gguf", "transformers>=5.20.0"):
        assert any(r.replace(" ", "").startswith(name) for r in main), (name, main)


def test_installed_wheel_trains_publishes_with_a_card_and_loads_back(wheel, tmp_path):
    venv = cached_venv("wheel", list(DEPENDENCIES))
    pip(venv, "--no-deps", "--force-reinstall", str(wheel))
    check = subprocess.run([str(venv_python(venv)), "-m", "pip", "check"], capture_output=True, text=True,
                           env=clean_env(), timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    cli = subprocess.run([str(venv / "bin" / "talklora-hub"), "--help"], capture_output=True, text=True,
                         env=clean_env(), timeout=300, cwd=tmp_path)
    assert cli.returncode == 0 and "zoo" in cli.stdout, cli.stderr[-2000:]

    shutil.copyfile(REPO / "tests" / "train" / "helpers.py", tmp_path / "helpers.py")
    env = clean_env(HF_HOME=str(tmp_path / "hf"), HF_MODULES_CACHE=str(tmp_path / "modules"),
                    HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(venv_python(venv)), "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["absent"] == {"peft": True, "pytest": True, "playwright": True}, report["absent"]
    assert report["present"] == {"accelerate": True, "gguf": True}, report["present"]
    assert report["steps"] == 2
    assert report["commit"] and report["card_library"] == "transformers" and "custom_code" in report["card_tags"]
    assert "trust_remote_code=True" in report["card_text"], report["card_text"]
    assert report["reloaded_identical"]
