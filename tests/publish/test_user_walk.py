"""The practitioner's walk, as one test: a CSV of their own -> `talklora-hub train` on a base from the Hub ->
`talklora-hub push` (adapter-only, since the base is pinned by the commit training loaded) -> loaded by repo id in a
fresh interpreter where talklora_hub cannot be imported (torch + transformers + safetensors only), with the same
logits -> reloaded frozen, then trainable, and trained further on its adapter alone."""

import json
import os
import subprocess
import sys

import torch

from talklora_hub import TalkLoRAForCausalLM
from talklora_hub.cli import main

from ..modeling.test_roundtrip import LOADER
from ..train.helpers import save_tiny_llama
from ..train.test_cli_train_file import write_topics


def test_csv_to_train_to_push_to_load_by_repo_id_to_train_more_to_the_space(hub, tmp_path, capsys):
    api = hub.api()
    base_folder = save_tiny_llama(tmp_path / "base")
    api.create_repo("user/walk-base", exist_ok=True)
    api.upload_folder(repo_id="user/walk-base", folder_path=str(base_folder))
    base_commit = api.repo_info("user/walk-base").sha

    csv_file = write_topics(tmp_path / "topics.csv")
    run = tmp_path / "run"
    assert main(["train", "--base", "user/walk-base", "--train-file", csv_file, "--text-column", "sentence",
                 "--label-column", "topic", "--method", "talklora", "--r", "4", "--max-steps", "2", "--batch-size", "4",
                 "--max-length", "24", "--output", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    trained = TalkLoRAForCausalLM.from_pretrained(run / "model")
    assert trained.config.base_model_revision == base_commit  # training pinned the commit it loaded

    assert main(["push", str(run / "model"), "user/topics-walk"]) == 0
    files = {f.rfilename: f.size for f in api.model_info("user/topics-walk", files_metadata=True).siblings}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert files["adapter_model.safetensors"] < (run / "model" / "model.safetensors").stat().st_size / 3

    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    torch.save(ids, tmp_path / "inputs.pt")
    out = tmp_path / "result.pt"
    env = {**os.environ, **hub.env(), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HOME": str(tmp_path / "hf")}
    env.pop("PYTHONPATH", None)
    script = LOADER.replace('ids = torch.load(path + "/inputs.pt")', f'ids = torch.load({str(tmp_path / "inputs.pt")!r})')
    done = subprocess.run([sys.executable, "-c", script, "user/topics-walk", "AutoModelForCausalLM", "float32", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        assert torch.equal(torch.load(out)["out"], trained(ids, attention_mask=torch.ones_like(ids)).logits)

    frozen = TalkLoRAForCausalLM.from_pretrained("user/topics-walk")
    assert frozen.parameter_counts()["trainable"] == 0 and not frozen.training
    more = TalkLoRAForCausalLM.from_pretrained("user/topics-walk", is_trainable=True).train()
    counts = more.parameter_counts()
    assert counts["trainable"] == counts["adapter"] < counts["total"] // 2
    before = {n: p.detach().clone() for n, p in more.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in more.parameters() if p.requires_grad], lr=1e-2)
    more(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {n for n, p in more.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(more.adapter_tensor_names())
    result = json.loads((run / "train_result.json").read_text())
    assert "topics" in result["metrics"]

    # Served in the Space: loaded by repo id (the model's own code), every token routed in every adapted layer.
    from talklora_hub.space.capture import analyze_text
    from talklora_hub.space.models import load_model

    loaded = load_model("user/topics-walk")
    assert loaded.kind == "TalkLoRA · 4 experts per token"
    routing = analyze_text(loaded, "the match went to extra time")
    assert routing.weights.shape[0] == len(trained.routed_module_names()) and routing.weights.shape[-1] == 4
    assert routing.weights.shape[1] == len(routing.tokens)
