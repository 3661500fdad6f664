"""Publishing and loading the three artifact kinds through a real Hub server on 127.0.0.1."""

import json
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard, hf_hub_download
from transformers import AutoModelForCausalLM

from talklora_hub.publish.artifacts import ArtifactError, load_artifact
from talklora_hub.publish.card_facts import CardFacts
from talklora_hub.publish.publisher import publish_expert, publish_model, publish_router
from talklora_hub.publish.zoo_index import list_zoo
from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.compose import compose_ttlora_moe

from ..modeling.conftest import tiny_base
from ..modeling.test_roundtrip import LOADER

RECORD = {"training": {"tasks": ["spam"], "steps": 3, "learning_rate": 3e-4},
          "evaluation": [{"task": "spam", "split": "test", "metric": "accuracy", "value": 0.875, "count": 8}],
          "datasets": ["user/spam"]}
RESULT = CardFacts(tasks=["spam"], training=RECORD["training"], evaluation=RECORD["evaluation"],
                   datasets=RECORD["datasets"], result=RECORD)


def wrapped(base_repo, method="talklora", seed=0, **settings):
    repo, sha = base_repo
    model = TalkLoRAForCausalLM.from_base(repo, AdapterSettings(method=method, r=8, **settings), revision=sha)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("adapter_only", [False, None], ids=["full", "adapter-only-by-default"])
def test_full_model_publishes_with_card_and_loads_by_repo_id_in_fresh_interpreter(hub, base_repo, ids, tmp_path,
                                                                                 adapter_only):
    model = wrapped(base_repo)
    repo = "user/talk-full" if adapter_only is False else "user/talk-adapter"
    pushed = publish_model(model, None, repo, result=RESULT, api=hub.api(), adapter_only=adapter_only)
    files = set(hub.api().list_repo_files(repo))
    weights = "model.safetensors" if adapter_only is False else "adapter_model.safetensors"
    assert {"config.json", weights, "modeling_talklora.py", "README.md", "routing.png", "train_result.json"} <= files
    assert ("adapter_model.safetensors" in files) == (adapter_only is None)  # a pinned base: adapter-only by default
    card = ModelCard.load(repo)
    assert card.data.base_model == "user/tiny-llama" and card.data.library_name == "transformers"
    assert {"talklora", "mixture-of-experts", "lora", "custom_code"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "text-generation" and card.data.license == "apache-2.0"
    assert card.data.eval_results[0].metric_value == 0.875 and card.data.datasets == ["user/spam"]
    assert "trust_remote_code=True" in card.text and 'revision="main"' in card.text
    assert f"{model.parameter_counts()['trainable']:,}" in card.text

    torch.save(ids, tmp_path / "inputs.pt")
    loader = LOADER.replace('ids = torch.load(path + "/inputs.pt")', f'ids = torch.load({str(tmp_path / "inputs.pt")!r})')
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "mods")}
    out = tmp_path / "out.pt"
    done = subprocess.run([sys.executable, "-c", loader, repo, "AutoModelForCausalLM", "float32", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        assert torch.equal(torch.load(out)["out"], model(ids, attention_mask=torch.ones_like(ids)).logits)
    assert pushed.changed


def test_republishing_unchanged_content_makes_no_commit_and_old_revisions_still_load(hub, base_repo, ids):
    model = wrapped(base_repo, seed=1)
    first = publish_model(model, None, "user/talk-pinned", api=hub.api(), zoo_repo=False)
    again = publish_model(model, None, "user/talk-pinned", api=hub.api(), zoo_repo=False)
    assert again.changed is False and again.commit == first.commit
    newer = wrapped(base_repo, seed=2)
    second = publish_model(newer, None, "user/talk-pinned", api=hub.api(), zoo_repo=False)
    assert second.commit != first.commit
    old = AutoModelForCausalLM.from_pretrained("user/talk-pinned", revision=first.commit, trust_remote_code=True)
    new = AutoModelForCausalLM.from_pretrained("user/talk-pinned", trust_remote_code=True)
    with torch.no_grad():
        assert torch.equal(old(ids).logits, model(ids).logits)
        assert torch.equal(new(ids).logits, newer(ids).logits)


def test_expert_repo_pins_its_base_and_refuses_another_base(hub, base_repo, ids):
    expert = wrapped(base_repo, "ttlora")
    pushed = publish_expert(expert, "user/tt-expert", task="spam", result=RESULT, api=hub.api())
    meta = json.loads(open(hf_hub_download("user/tt-expert", "talklora_expert.json")).read())
    assert meta["base_model"]["repo_id"] == "user/tiny-llama" and meta["base_model"]["revision"] == base_repo[1]
    files = set(hub.api().list_repo_files("user/tt-expert")) - {".gitattributes"}
    assert files == {"README.md", "adapter_model.safetensors", "talklora_expert.json"}  # no base weights
    loaded = load_artifact("user/tt-expert", revision=pushed.commit)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expert(ids).logits)
    card = ModelCard.load("user/tt-expert")
    assert card.data.base_model_relation == "adapter" and "ttlora" in card.data.tags

    other = tiny_base("llama", seed=5)
    with pytest.raises(ArtifactError, match="not the one this expert was trained on"):
        from talklora_hub.publish.artifacts import attach_expert, _local_folder
        attach_expert(_local_folder("user/tt-expert", None), base=other)


def test_expert_whose_shapes_do_not_fit_is_refused(hub, base_repo, tmp_path):
    from talklora_hub.publish.artifacts import attach_expert, export_expert

    expert = wrapped(base_repo, "lora")
    folder = export_expert(expert, tmp_path / "e")
    meta = json.loads((folder / "talklora_expert.json").read_text())
    meta["adapter"]["r"] = 4  # the tensors hold rank 8
    (folder / "talklora_expert.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="has shape"):
        attach_expert(folder)


def test_router_repo_composes_pinned_experts(hub, base_repo, ids):
    experts = [wrapped(base_repo, "ttlora", seed=s) for s in (3, 4)]
    pushed = [publish_expert(e, f"user/tt-task{i}", task=f"task{i}", api=hub.api()) for i, e in enumerate(experts)]
    moe = compose_ttlora_moe(experts, tiny_base("llama"))
    moe.config.base_model_name_or_path, moe.config.base_model_revision = base_repo
    listed = [{"repo_id": p.repo_id, "revision": p.commit, "task": f"task{i}"} for i, p in enumerate(pushed)]
    publish_router(moe, "user/tt-router", experts=listed, api=hub.api())
    loaded = load_artifact("user/tt-router")
    with torch.no_grad():
        out, expected = loaded(ids), moe.eval()(ids)
    assert torch.equal(out.logits, expected.logits)
    assert torch.equal(out.sequence_router_logits, expected.sequence_router_logits)
    card = ModelCard.load("user/tt-router")
    assert "user/tt-task0" in card.text and pushed[1].commit in card.text

    from talklora_hub.publish.artifacts import _local_folder, attach_router
    with pytest.raises(ArtifactError, match="trained on experts"):
        attach_router(_local_folder("user/tt-router", None), experts=list(reversed(listed)))


def test_zoo_index_lists_everything_published(hub, base_repo):
    publish_model(wrapped(base_repo, "moelora"), None, "user/moe-full", result=RESULT, api=hub.api(), task="spam")
    entries = {e["repo_id"]: e for e in list_zoo(api=hub.api())}
    assert entries["user/moe-full"]["method"] == "moelora" and entries["user/moe-full"]["kind"] == "model"
    assert entries["user/moe-full"]["headline"] == {"task": "spam", "metric": "accuracy", "value": 0.875}
    assert entries["user/moe-full"]["revision"] == hub.api().repo_info("user/moe-full").sha
    readme = open(hf_hub_download("user/talklora-zoo", "README.md", repo_type="dataset")).read()
    assert "`user/moe-full`" in readme and "moelora" in readme
    ModelCard(readme)


def test_peft_export_loads_in_peft_with_identical_logits(tmp_path, ids):
    from peft import PeftModel

    from talklora_hub.publish.peft_interop import export_peft, import_peft_experts

    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(method="lora", r=4, lora_alpha=8)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_()
        expected = model(ids).logits
    export_peft(model, tmp_path / "peft")
    with torch.no_grad():
        assert torch.equal(PeftModel.from_pretrained(tiny_base("llama"), tmp_path / "peft").eval()(ids).logits, expected)
        assert torch.equal(import_peft_experts([tmp_path / "peft"], tiny_base("llama")).eval()(ids).logits, expected)
        # Two identical experts under any routing equal the single adapter.
        moe = import_peft_experts([tmp_path / "peft", tmp_path / "peft"], tiny_base("llama")).eval()
        torch.testing.assert_close(moe(ids).logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ArtifactError, match="only method='lora'"):
        export_peft(TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8)), tmp_path / "x")


def test_cli_push_pull_and_zoo_list(hub, base_repo, tmp_path):
    wrapped(base_repo, "lora").save_pretrained(tmp_path / "m")
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp_path / "hf")}

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "talklora_hub.cli", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "(new commit)" in cli("push", str(tmp_path / "m"), "user/cli-lora", "--task", "spam")
    assert "(unchanged, no commit)" in cli("push", str(tmp_path / "m"), "user/cli-lora", "--task", "spam")
    assert "method=lora" in cli("pull", "user/cli-lora")
    listing = cli("zoo", "list")
    assert "user/cli-lora" in listing and "lora" in listing


def test_exports_replace_the_folder_whole_and_are_readable(base_repo, tmp_path):
    import stat

    from talklora_hub.publish.artifacts import export_expert

    target = tmp_path / "expert"
    target.mkdir()
    (target / "stale.txt").write_text("from an older export")
    folder = export_expert(wrapped(base_repo, "lora"), target)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_model.safetensors", "talklora_expert.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert"]  # no staging or retired folders left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask for f in folder.iterdir())
