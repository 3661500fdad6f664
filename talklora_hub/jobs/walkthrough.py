"""The end-to-end walk the README's main job runs: wrap the offline SmolLM2-135M base with TalkLoRA,
train it a few steps, save it, reload it with trust_remote_code in a fresh interpreter where
talklora_hub cannot be imported, check the logits agree bit for bit, and print per-token routing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import List

import torch
from tqdm.auto import tqdm

from ..analysis.routing_stats import balance_summary, top_expert_per_layer
from ..modeling import AdapterSettings, TalkLoRAForCausalLM

TRAIN_TEXTS = [
    "Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse,",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "The Senate and House of Representatives met today to discuss the budget for the coming year.",
    "Q: What is 12 plus 30? A: 12 + 30 = 42. The answer is 42.",
]
PROBE_TEXT = "Call me Ishmael. def add(a, b): return a + b. The Senate met today. 12 + 30 = 42."

# The first lines of a script run in a fresh interpreter: talklora_hub is made unimportable, so only torch,
# transformers and the code shipped inside the model can be what loads it.
BLOCK_OWN_PACKAGE = textwrap.dedent('''
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "talklora_hub":
                raise ImportError("blocked")
    sys.meta_path.insert(0, Block())
''')

FRESH_LOADER = BLOCK_OWN_PACKAGE + textwrap.dedent('''
    import json
    import torch
    from transformers import AutoModelForCausalLM
    path, out = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    ids = torch.tensor(json.load(open(path + "/probe_ids.json")))
    with torch.no_grad():
        result = model(ids, output_router_logits=True)
    torch.save({"logits": result.logits, "weights": result.routing_weights,
                "names": result.router_module_names, "class": type(model).__module__}, out)
''')


def train_briefly(model, tokenizer, steps: int, lr: float = 3e-3) -> List[float]:
    """A few AdamW steps of language modelling on TRAIN_TEXTS, so the experts are no longer at init."""
    batch = tokenizer(TRAIN_TEXTS, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in (bar := tqdm(range(steps), desc="training TalkLoRA")):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def routing_table(tokens: List[str], weights, names) -> str:
    """One line per token: the top expert of every layer (averaged over the layer's modules)."""
    top = top_expert_per_layer(weights, names)
    layers = list(top)
    lines = [f"{'token':>14}  top expert per layer {layers[0]}..{layers[-1]}"]
    for t, token in enumerate(tokens):
        experts = "".join(str(int(top[layer][0, t])) for layer in layers)
        shown = token.replace("\n", "\\n")[:14]
        lines.append(f"{shown:>14}  {experts}")
    return "\n".join(lines)


def run(base_path: str, out_dir: str | None = None, steps: int = 8) -> dict:
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    print(f"[1/4] wrapping {base_path} with TalkLoRA (r=32, E=4, shared B banks)")
    model = TalkLoRAForCausalLM.from_base(base_path, AdapterSettings(method="talklora", r=32, num_experts=4,
                                                                     lora_dropout=0.05))
    counts = model.parameter_counts()
    print(f"      trainable {counts['trainable']:,} of {counts['total']:,} parameters")
    print(f"[2/4] training {steps} steps")
    losses = train_briefly(model, tokenizer, steps)
    out = Path(out_dir or tempfile.mkdtemp(prefix="talklora-walk-")) / "talklora-smollm2"
    print(f"[3/4] saving to {out} and reloading with trust_remote_code in a fresh interpreter")
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    (out / "probe_ids.json").write_text(json.dumps(ids.tolist()))
    with torch.no_grad():
        expected = model(ids, output_router_logits=True)
    result_file = out.parent / "fresh_result.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", FRESH_LOADER, str(out), str(result_file)], check=True, env=env)
    fresh = torch.load(result_file)
    identical = torch.equal(fresh["logits"], expected.logits)
    print(f"      loaded as {fresh['class']}; logits bit-identical: {identical}")
    if not identical:
        raise SystemExit("the reloaded model's logits differ from the saved model's")
    print("[4/4] per-token routing of the probe text (reloaded model)")
    tokens = [tokenizer.decode([i]) for i in ids[0].tolist()]
    print(routing_table(tokens, fresh["weights"], fresh["names"]))
    summary = balance_summary(torch.stack(fresh["weights"]))
    print("      balance over all modules: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in summary.items()))
    return {"path": str(out), "losses": losses, "identical": identical, "balance": summary}
