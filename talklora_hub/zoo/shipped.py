"""The shipped zoo on disk: zoo/<entry>/ in the repository, one folder per recipe.

    zoo/<entry>/adapter_model.safetensors   the adapter's trainable tensors, bf16
    zoo/<entry>/talklora_expert.json        the expert format of talklora_hub.publish.artifacts (the base is
                                            pinned by its weight fingerprint; repo id and commit are filled
                                            in when the entry is published to a Hub)
    zoo/<entry>/router.safetensors          (a TT-LoRA MoE router entry instead: the router's tensors, bf16,
    zoo/<entry>/talklora_router.json         and the router format naming its expert entries in order)
    zoo/<entry>/record.json                 recipe, command, seed, steps, time, machine, metrics with 95%
                                            intervals and per-example hits, the baselines beside them
    zoo/baselines.json                      every task's baselines on its whole test split

Every figure in record.json is measured on the shipped bf16 weights themselves.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

WEIGHTS = "adapter_model.safetensors"
EXPERT_META = "talklora_expert.json"
ROUTER_WEIGHTS = "router.safetensors"
ROUTER_META = "talklora_router.json"
RECORD = "record.json"
BASELINES = "baselines.json"
# The placeholder revision of a base that is the offline bootstrap, not (yet) a Hub commit.
UNPUBLISHED = "unpublished"


def default_zoo_dir() -> Path:
    """The repository's zoo/ folder (beside the package), or $TALKLORA_ZOO_DIR."""
    if os.environ.get("TALKLORA_ZOO_DIR"):
        return Path(os.environ["TALKLORA_ZOO_DIR"])
    return Path(__file__).resolve().parents[2] / "zoo"


def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def hits_string(hits: List[bool]) -> str:
    """Per-example hits as '1'/'0' characters: compact, and diffable in review."""
    return "".join("1" if h else "0" for h in hits)


def round_adapter_to_bf16(model) -> None:
    """Rounds the trainable tensors to bf16 in place, so the scored model is exactly the shipped one."""
    with torch.no_grad():
        for tensor in model.adapter_state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))


def _to_bf16(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def write_entry(folder: Union[str, os.PathLike], model, record: Dict[str, Any], task: str,
                router_experts: Optional[List[Dict[str, str]]] = None) -> Path:
    """Writes the entry atomically: the expert (or, given router_experts, the router) export with bf16
    tensors, and record.json beside it."""
    from ..publish.artifacts import export_expert, export_router
    from ..modeling.saving import staged_directory

    folder = Path(folder)
    with staged_directory(folder) as staging:
        if router_experts is None:
            export_expert(model, staging / "export", task, base_repo_id=record["base"]["name"], base_revision=UNPUBLISHED)
        else:
            export_router(model, staging / "export", router_experts, base_repo_id=record["base"]["name"],
                          base_revision=UNPUBLISHED)
        for item in (staging / "export").iterdir():
            if item.suffix == ".safetensors":
                _to_bf16(item)
            os.replace(item, staging / item.name)
        (staging / "export").rmdir()
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return folder


def read_record(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    return json.loads((Path(folder) / RECORD).read_text())


def shipped_entries(zoo_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Path]:
    """{entry name: folder} of every complete entry (weights, metadata and record present)."""
    root = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    if not root.is_dir():
        return {}
    def complete(p: Path) -> bool:
        return (p / RECORD).is_file() and (all((p / f).is_file() for f in (WEIGHTS, EXPERT_META))
                                           or all((p / f).is_file() for f in (ROUTER_WEIGHTS, ROUTER_META)))

    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and complete(p)}


def _bootstrapped_base(name: str, head: str, num_labels: Optional[int] = None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..data.base_models import base_model_path

    from transformers.utils import logging as hf_logging

    path = base_model_path(name)
    if head != "seqcls":
        return AutoModelForCausalLM.from_pretrained(path)
    # The backbone's checkpoint has no classifier: transformers reports it as newly initialised, but the
    # expert's own tensors replace it at once, so that report would only alarm the reader.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)


def attach_shipped(folder: Union[str, os.PathLike], base=None):
    """The entry as a ready model: its adapter attached to its base (the bootstrapped offline base model
    unless `base` is given), the base checked by fingerprint. A router entry is composed with its expert
    entries (found beside it in the same zoo folder)."""
    from ..publish.artifacts import attach_expert

    folder = Path(folder)
    if (folder / ROUTER_META).is_file():
        return attach_shipped_router(folder, base)
    meta = json.loads((folder / EXPERT_META).read_text())
    if base is None:
        base = _bootstrapped_base(read_record(folder)["base"]["name"], meta["head"], meta.get("num_labels"))
    return attach_expert(folder, base=base)


def attach_shipped_router(folder: Path, base=None):
    """A TT-LoRA MoE router entry composed with its shipped experts on one copy of the base."""
    from safetensors.torch import load_file

    from ..publish.artifacts import ArtifactError, read_expert
    from ..publish.fingerprint import base_fingerprint
    from ..modeling.compose import compose_from_cores

    meta = json.loads((folder / ROUTER_META).read_text())
    parts = [read_expert(folder.parent / e["repo_id"]) for e in meta["experts"]]
    for entry, part in zip(meta["experts"], parts):
        if part["meta"]["base_model"]["fingerprint"] != meta["base_model"]["fingerprint"]:
            raise ArtifactError(f"expert entry {entry['repo_id']} was trained on another base than the router.")
    if base is None:
        base = _bootstrapped_base(read_record(folder)["base"]["name"], "causal")
    if base_fingerprint(base, parts[0]["settings"].modules_to_save) != meta["base_model"]["fingerprint"]:
        raise ArtifactError("the base model is not the one this router was trained on. Fix: pass that base.")
    model = compose_from_cores(base, [p["settings"] for p in parts], [p["tensors"] for p in parts])
    model.sequence_router.load_state_dict({k: v.float() for k, v in load_file(str(folder / ROUTER_WEIGHTS)).items()})
    return model.eval()


def load_baselines(zoo_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    path = (Path(zoo_dir) if zoo_dir else default_zoo_dir()) / BASELINES
    return json.loads(path.read_text()) if path.is_file() else {}
