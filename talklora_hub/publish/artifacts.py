"""The three kinds of artifacts the zoo publishes, as folders, and how each is loaded back.

1. Full model: save_pretrained's folder (weights, config with auto_map, the bundle's code), loadable by
   `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)` anywhere.
2. Expert: only the adapter's tensors (`adapter_model.safetensors`) and `talklora_expert.json`, which
   names the base by repo id AND commit and records the base's weight fingerprint.
3. Router (TT-LoRA MoE): the router's tensors (`router.safetensors`) and `talklora_router.json`, which
   names every expert and the base by repo id AND commit.

`load_artifact(repo_or_path)` assembles the whole model from any of the three in one call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from safetensors.torch import load_file, save_file

from ..modeling import AdapterSettings, TalkLoRAForCausalLM, TalkLoRAForSequenceClassification, TalkLoRAModel
from ..modeling.loading import fetch_base, load_adapter_tensors
from ..modeling.modeling_talklora import TalkLoRAPreTrainedModel
from ..modeling.saving import staged_directory
from .fingerprint import base_fingerprint

EXPERT_FILE = "talklora_expert.json"
ROUTER_FILE = "talklora_router.json"
EXPERT_WEIGHTS = "adapter_model.safetensors"
ROUTER_WEIGHTS = "router.safetensors"
FORMAT_VERSION = 1

HEADS = {"causal": TalkLoRAForCausalLM, "seqcls": TalkLoRAForSequenceClassification, "bare": TalkLoRAModel}


class ArtifactError(ValueError):
    """An artifact that cannot be assembled: wrong base, wrong shapes, mismatched experts."""


def head_of(model: TalkLoRAPreTrainedModel) -> str:
    return next(name for name, cls in HEADS.items() if isinstance(model, cls))


def base_reference(model: TalkLoRAPreTrainedModel, repo_id: Optional[str] = None,
                   revision: Optional[str] = None) -> Dict[str, Any]:
    """Where the base came from (repo id + commit) and its fingerprint, for expert and router files."""
    config = model.config
    repo_id = repo_id or config.base_model_name_or_path
    revision = revision or config.base_model_revision
    if not repo_id or not revision:
        raise ArtifactError(
            f"`base_repo_id`/`base_revision` must name the base model's Hub repo and commit, got "
            f"{repo_id!r}/{revision!r}. Fix: load the base by repo id (from_base(repo_id, revision=...)) or pass "
            "base_repo_id= and base_revision= (a commit sha) when publishing.")
    return {"repo_id": repo_id, "revision": revision, "fingerprint": base_fingerprint(model),
            "model_type": config.base_config.model_type,
            "architecture": type(model.inner_model).__name__}


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def export_expert(model: TalkLoRAPreTrainedModel, folder: Union[str, os.PathLike], task: Optional[str] = None,
                  base_repo_id: Optional[str] = None, base_revision: Optional[str] = None,
                  extra: Optional[Dict[str, Any]] = None) -> Path:
    """Writes an adapter-only expert: its trainable tensors and the metadata to rebuild it on its base."""
    with staged_directory(folder) as staging:
        tensors = {k: v.contiguous().cpu() for k, v in model.adapter_state_dict().items()}
        save_file(tensors, str(staging / EXPERT_WEIGHTS), metadata={"format": "pt"})
        _write_json(staging / EXPERT_FILE, {
            "kind": "talklora-expert", "format_version": FORMAT_VERSION, "head": head_of(model),
            "adapter": model.config.adapter, "task": task,
            "base_model": base_reference(model, base_repo_id, base_revision),
            "num_labels": model.config.base_config.num_labels if head_of(model) == "seqcls" else None,
            "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())}, **(extra or {})})
    return Path(folder).resolve()


def export_router(model: TalkLoRAForCausalLM, folder: Union[str, os.PathLike], experts: Sequence[Dict[str, str]],
                  base_repo_id: Optional[str] = None, base_revision: Optional[str] = None,
                  extra: Optional[Dict[str, Any]] = None) -> Path:
    """Writes a TT-LoRA MoE router; `experts` lists {"repo_id", "revision", "task"} in expert order."""
    if model.sequence_router is None:
        raise ArtifactError("export_router needs a TT-LoRA MoE model (method='ttlora', num_experts > 1).")
    if len(experts) != model.adapter_settings.num_experts:
        raise ArtifactError(f"`experts` must list num_experts={model.adapter_settings.num_experts} experts, "
                            f"got {len(experts)}. Fix: pass one entry per expert, in the model's expert order.")
    with staged_directory(folder) as staging:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.sequence_router.state_dict().items()}
        save_file(tensors, str(staging / ROUTER_WEIGHTS), metadata={"format": "pt"})
        _write_json(staging / ROUTER_FILE, {
            "kind": "talklora-router", "format_version": FORMAT_VERSION, "experts": list(experts),
            "base_model": base_reference(model, base_repo_id, base_revision),
            "router": {"num_experts": len(experts), "hidden_size": model.config.get_text_config().hidden_size},
            **(extra or {})})
    return Path(folder).resolve()


# ---- loading -----------------------------------------------------------------------------------
def _local_folder(repo_or_path: Union[str, os.PathLike], revision: Optional[str]) -> Path:
    path = Path(repo_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(repo_or_path), revision=revision))


def artifact_kind(folder: Path) -> str:
    if (folder / EXPERT_FILE).exists():
        return "expert"
    if (folder / ROUTER_FILE).exists():
        return "router"
    if (folder / "config.json").exists():
        return "model"
    raise ArtifactError(f"{folder} holds no talklora_hub artifact (no {EXPERT_FILE}, {ROUTER_FILE} or config.json).")


def load_base(reference: Dict[str, Any], head: str = "causal", trained_modules: Optional[Sequence[str]] = None,
              **load_kwargs):
    """The recorded base model at the recorded commit, checked against the recorded fingerprint (which leaves
    out trained_modules, the base modules the artifact trains and carries)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = {"causal": AutoModelForCausalLM, "seqcls": AutoModelForSequenceClassification, "bare": AutoModel}[head]
    return fetch_base(auto, reference["repo_id"], reference["revision"], reference["fingerprint"], "the artifact",
                      trained_modules, error=ArtifactError, **load_kwargs)


def attach_expert(folder: Path, base=None, **load_kwargs) -> TalkLoRAPreTrainedModel:
    """Rebuilds an expert on its base (loaded from the recorded repo/commit unless given), strictly."""
    meta = json.loads((folder / EXPERT_FILE).read_text())
    head = meta.get("head", "causal")
    extra = {"num_labels": meta["num_labels"]} if head == "seqcls" and meta.get("num_labels") else {}
    trained = meta["adapter"].get("modules_to_save")
    if base is None:
        base = load_base(meta["base_model"], head, trained, **extra, **load_kwargs)
    elif base_fingerprint(base, trained) != meta["base_model"]["fingerprint"]:
        raise ArtifactError(f"the given base model is not the one this expert was trained on "
                            f"({meta['base_model']['repo_id']}@{meta['base_model']['revision']}). "
                            "Fix: pass that base, or no base to load it from the Hub.")
    model = HEADS[head].from_base(base, AdapterSettings.from_dict(meta["adapter"]))
    model.config.base_model_name_or_path = meta["base_model"]["repo_id"]
    model.config.base_model_revision = meta["base_model"]["revision"]
    model.config.base_model_fingerprint = meta["base_model"]["fingerprint"]
    load_adapter_tensors(model, load_file(str(folder / EXPERT_WEIGHTS)), f"the expert {folder.name}",
                         error=ArtifactError)
    return model.eval()


def read_expert(folder: Path) -> Dict[str, Any]:
    """An expert's metadata and tensors, without building a model."""
    meta = json.loads((folder / EXPERT_FILE).read_text())
    return {"meta": meta, "settings": AdapterSettings.from_dict(meta["adapter"]),
            "tensors": load_file(str(folder / EXPERT_WEIGHTS))}


def attach_router(folder: Path, experts: Optional[List[Dict[str, str]]] = None,
                  **load_kwargs) -> TalkLoRAForCausalLM:
    """Loads every expert the router names (all trained on the router's base, checked by fingerprint),
    stacks them into a TT-LoRA MoE on one copy of the base, and adds the router."""
    from ..modeling.compose import compose_from_cores

    meta = json.loads((folder / ROUTER_FILE).read_text())
    recorded = [{"repo_id": e["repo_id"], "revision": e["revision"]} for e in meta["experts"]]
    if experts is not None and [{"repo_id": e["repo_id"], "revision": e["revision"]} for e in experts] != recorded:
        raise ArtifactError(f"the router was trained on experts {recorded}, got {experts}. "
                            "Fix: use the recorded experts (same repos, same commits, same order).")
    tensors = load_file(str(folder / ROUTER_WEIGHTS))
    if tensors["gate.weight"].shape[0] != len(recorded):
        raise ArtifactError(f"router weights route to {tensors['gate.weight'].shape[0]} experts but "
                            f"{len(recorded)} are listed.")
    parts = [read_expert(_local_folder(e["repo_id"], e["revision"])) for e in recorded]
    for entry, part in zip(recorded, parts):
        if part["meta"]["base_model"]["fingerprint"] != meta["base_model"]["fingerprint"]:
            raise ArtifactError(f"expert {entry['repo_id']}@{entry['revision']} was trained on another base "
                                f"({part['meta']['base_model']['repo_id']}) than the router's "
                                f"({meta['base_model']['repo_id']}).")
    base = load_base(meta["base_model"], "causal", parts[0]["settings"].modules_to_save, **load_kwargs)
    model = compose_from_cores(base, [p["settings"] for p in parts], [p["tensors"] for p in parts])
    model.sequence_router.load_state_dict(tensors)
    model.config.base_model_name_or_path = meta["base_model"]["repo_id"]
    model.config.base_model_revision = meta["base_model"]["revision"]
    return model.eval()


def load_artifact(repo_or_path: Union[str, os.PathLike], revision: Optional[str] = None, **load_kwargs):
    """Any artifact (full model, expert or router; local folder or repo id) as a ready model."""
    folder = _local_folder(repo_or_path, revision)
    kind = artifact_kind(folder)
    if kind == "expert":
        return attach_expert(folder, **load_kwargs)
    if kind == "router":
        return attach_router(folder, **load_kwargs)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    architectures = config.architectures or ["TalkLoRAForCausalLM"]
    cls = {"TalkLoRAForSequenceClassification": TalkLoRAForSequenceClassification,
           "TalkLoRAModel": TalkLoRAModel}.get(architectures[0], TalkLoRAForCausalLM)
    return cls.from_pretrained(folder, **load_kwargs)
