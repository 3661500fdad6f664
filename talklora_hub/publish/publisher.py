"""Publishing what was trained: a full model, an adapter-only expert or a TT-LoRA MoE router, each
with its model card, in one commit, followed by an update of the zoo index.

    publish_model(model, tokenizer, "user/talklora-smollm2-spam", result=train_result)
    publish_expert(model, "user/ttlora-spam", task="spam", base_repo_id="user/smollm2", base_revision=sha)
    publish_router(moe, "user/ttlora-moe-router", experts=[{"repo_id", "revision", "task"}, ...])

`result` is what the card says about the run: a CardFacts (card_facts.py), or a talklora_hub.train result dict
(TrainResult.to_dict(), train_result.json), read into one by train_facts.facts_from_train_result.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from huggingface_hub import HfApi

from ..modeling.adapter_base import adapter_layers
from ..modeling.loading import has_pinned_base
from .artifacts import ROUTER_FILE, export_expert, export_router, head_of
from .card_facts import CardFacts, as_card_facts
from .cards import (adapter_rows, base_label, card_data, evaluation_rows, hub_base_id, measure_routing, render_card,
                    routing_picture, task_rows, training_rows)
from .push import PushResult, push_folder
from .zoo_index import update_zoo

RESULT_FILE = "train_result.json"
# What the publish calls take as `result`: see the module's docstring.
Result = Optional[Union[CardFacts, Dict[str, Any]]]


def _size_human(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def _headline(facts: Optional[CardFacts]) -> Optional[Dict[str, Any]]:
    rows = evaluation_rows(facts)
    return {"task": rows[0]["task"], "metric": rows[0]["metric"], "value": rows[0]["value"]} if rows else None


def _common_context(model, repo_id: str, facts: Optional[CardFacts], routing, picture) -> Dict[str, Any]:
    counts = model.parameter_counts()
    targets = sorted({name.rsplit(".", 1)[-1] for name in adapter_layers(model)})
    return {"repo_id": repo_id, "revision": "main", "method": model.adapter_settings.method,
            "adapter_rows": adapter_rows(model.config.adapter, targets), "trainable": counts["adapter"],
            "total": counts["total"], "training": training_rows(facts), "evaluation": evaluation_rows(facts),
            "tasks": task_rows(facts), "routing": routing, "picture": picture,
            "comparison": facts.comparison if facts is not None else None}


def _summary(kind: str, model, task: Optional[str], facts: Optional[CardFacts] = None) -> str:
    s = model.adapter_settings
    what = s.spec.title
    experts = f" with {s.num_experts} experts" if s.num_experts > 1 else ""
    tasks = task.split("+") if isinstance(task, str) else []
    on = f" on the task{'s' if len(tasks) > 1 else ''} {', '.join(f'`{t}`' for t in tasks)}" if tasks else ""
    base = base_label(model.config.base_model_name_or_path, facts) or f"`{model.config.base_config.model_type}`"
    return f"A {what} {kind}{experts} on top of {base}{on}, built and published with talklora_hub."


def _write_routing(model, tokenizer, folder: Path):
    routing = measure_routing(model, tokenizer)
    picture = None
    if routing is not None:
        routing_picture(routing, folder / "routing.png")
        picture = "routing.png"
    return routing, picture


def _finish(folder: Path, repo_id: str, repo_type: str, message: str, private: bool, api: Optional[HfApi],
            zoo_entry: Dict[str, Any], zoo_repo: Optional[str]) -> PushResult:
    api = api or HfApi()
    pushed = push_folder(folder, repo_id, repo_type=repo_type, commit_message=message, private=private, api=api)
    if zoo_repo is not False:
        update_zoo({**zoo_entry, "repo_id": repo_id, "revision": pushed.commit}, zoo_repo=zoo_repo, api=api)
    return pushed


def publish_model(model, tokenizer, repo_id: str, result: Result = None, private: bool = False,
                  api: Optional[HfApi] = None, zoo_repo: Optional[str] = None, license: str = "apache-2.0",
                  task: Optional[str] = None, adapter_only: Optional[bool] = None) -> PushResult:
    """A model that loads with one from_pretrained(..., trust_remote_code=True).

    adapter_only: None (default) publishes only the adapter (a few MB) when the base is named by a Hub repo id and
    commit, so loading fetches and checks that base; otherwise (a base from a local folder) the full model.
    True insists on adapter-only (an error without a pinned base), False always uploads the full model."""
    if adapter_only is None:
        adapter_only = has_pinned_base(model.config)
    facts = as_card_facts(result)
    folder = Path(tempfile.mkdtemp(prefix="talklora-publish-"))
    try:
        model.save_pretrained(folder / "repo", adapter_only=adapter_only)
        repo = folder / "repo"
        if tokenizer is not None:
            tokenizer.save_pretrained(repo)
        if facts is not None and facts.result:
            (repo / RESULT_FILE).write_text(json.dumps(facts.result, indent=2, default=str) + "\n")
        routing, picture = _write_routing(model, tokenizer, repo)
        head = head_of(model)
        context = _common_context(model, repo_id, facts, routing, picture)
        weights = sum(f.stat().st_size for f in repo.glob("*.safetensors"))
        context.update(adapter_only=adapter_only, size_human=_size_human(weights),
                       base_repo=model.config.base_model_name_or_path, base_revision=model.config.base_model_revision,
                       title=repo_id.split("/")[-1], summary=_summary("model", model, task, facts),
                       output_router_logits=model.adapter_settings.is_routed,
                       card_data=card_data("model", head, model.adapter_settings.method,
                                           model.config.base_model_name_or_path, facts, repo_id, license))
        (repo / "README.md").write_text(render_card("model", **context))
        entry = {"kind": "model", "method": model.adapter_settings.method,
                 "method_label": model.adapter_settings.spec.label, "head": head,
                 "base": hub_base_id(model.config.base_model_name_or_path, facts), "task": task or _task_names(facts),
                 "headline": _headline(facts)}
        return _finish(repo, repo_id, "model", f"Publish {model.adapter_settings.method} model", private, api,
                       entry, zoo_repo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)



def publish_result(result, repo_id: str, **kwargs) -> PushResult:
    """A finished training run (talklora_hub.train.TrainResult) as a full model: its model, tokenizer and
    result dict (the card's figures). kwargs go to publish_model."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"`repo_id` must be a Hub repo id 'owner/name', got {repo_id!r}. "
                         "Fix: pass e.g. --push me/talklora-spam.")
    if result.stopped_early:
        raise ValueError("`result` must be a finished run (stopped_early is True: it stopped at step "
                         f"{result.steps}). Fix: resume the run to its last step before publishing it.")
    return publish_model(result.model, result.tokenizer, repo_id, result=result.to_dict(), **kwargs)

def publish_expert(model, repo_id: str, task: Optional[str] = None, result: Result = None,
                   base_repo_id: Optional[str] = None, base_revision: Optional[str] = None, private: bool = False,
                   api: Optional[HfApi] = None, zoo_repo: Optional[str] = None, tokenizer=None,
                   license: str = "apache-2.0") -> PushResult:
    """An adapter-only expert (kilobytes to a few MB) that pins its base by repo id and commit."""
    facts = as_card_facts(result)
    folder = Path(tempfile.mkdtemp(prefix="talklora-publish-"))
    try:
        repo = export_expert(model, folder / "repo", task, base_repo_id, base_revision)
        meta = json.loads((repo / "talklora_expert.json").read_text())
        routing, picture = _write_routing(model, tokenizer, repo)
        size = (repo / "adapter_model.safetensors").stat().st_size
        context = _common_context(model, repo_id, facts, routing, picture)
        context.update(title=repo_id.split("/")[-1], summary=_summary("expert", model, task), base=meta["base_model"],
                       tensor_count=len(meta["tensors"]), size_human=_size_human(size),
                       card_data=card_data("expert", meta["head"], model.adapter_settings.method,
                                           meta["base_model"]["repo_id"], facts, repo_id, license))
        (repo / "README.md").write_text(render_card("expert", **context))
        entry = {"kind": "expert", "method": model.adapter_settings.method,
                 "method_label": model.adapter_settings.spec.label, "head": meta["head"],
                 "base": meta["base_model"]["repo_id"], "task": task, "headline": _headline(facts)}
        return _finish(repo, repo_id, "model", f"Publish {model.adapter_settings.method} expert", private, api,
                       entry, zoo_repo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish_router(model, repo_id: str, experts: List[Dict[str, str]], result: Result = None,
                   base_repo_id: Optional[str] = None, base_revision: Optional[str] = None, private: bool = False,
                   api: Optional[HfApi] = None, zoo_repo: Optional[str] = None, license: str = "apache-2.0") -> PushResult:
    """A TT-LoRA MoE router that pins its experts and base by repo id and commit."""
    facts = as_card_facts(result)
    folder = Path(tempfile.mkdtemp(prefix="talklora-publish-"))
    try:
        repo = export_router(model, folder / "repo", experts, base_repo_id, base_revision)
        meta = json.loads((repo / ROUTER_FILE).read_text())
        context = _common_context(model, repo_id, facts, None, None)
        context.update(title=repo_id.split("/")[-1], experts=meta["experts"], base=meta["base_model"],
                       summary=_summary("router", model, None),
                       routing_note="Routing is per sequence: see the evaluation for router accuracy.",
                       card_data=card_data("router", "causal", "ttlora", meta["base_model"]["repo_id"], facts,
                                           repo_id, license))
        (repo / "README.md").write_text(render_card("router", **context))
        entry = {"kind": "router", "method": "ttlora-moe", "head": "causal", "base": meta["base_model"]["repo_id"],
                 "task": [e.get("task") for e in experts], "headline": _headline(facts)}
        return _finish(repo, repo_id, "model", "Publish TT-LoRA MoE router", private, api, entry, zoo_repo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _task_names(facts: Optional[CardFacts]) -> Optional[List[str]]:
    return list(facts.tasks) if facts is not None and facts.tasks else None
