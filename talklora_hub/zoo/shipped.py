"""The shipped zoo on disk: zoo/<entry>/ in the repository, one folder per recipe.

    zoo/<entry>/adapter_model.safetensors   the adapter's trainable tensors, bf16
    zoo/<entry>/talklora_expert.json        the expert format of talklora_hub.hub.artifacts (the base is
                                            pinned by its weight fingerprint; repo id and commit are filled
                                            in when the entry is published to a Hub)
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
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(param.to(torch.bfloat16).to(param.dtype))


def write_entry(folder: Union[str, os.PathLike], model, record: Dict[str, Any], task: str) -> Path:
    """Writes the entry atomically: the expert export with bf16 tensors, then record.json beside it."""
    from safetensors.torch import load_file, save_file

    from ..hub.artifacts import export_expert
    from ..modeling.modeling_talklora import staged_directory

    folder = Path(folder)
    with staged_directory(folder) as staging:
        export_expert(model, staging / "expert", task, base_repo_id=record["base"]["name"], base_revision=UNPUBLISHED)
        tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(staging / "expert" / WEIGHTS)).items()}
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
        os.replace(staging / "expert" / EXPERT_META, staging / EXPERT_META)
        (staging / "expert" / WEIGHTS).unlink()
        (staging / "expert").rmdir()
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return folder


def read_record(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    return json.loads((Path(folder) / RECORD).read_text())


def shipped_entries(zoo_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Path]:
    """{entry name: folder} of every complete entry (weights, metadata and record present)."""
    root = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if p.is_dir() and all((p / f).is_file() for f in (WEIGHTS, EXPERT_META, RECORD))}


def attach_shipped(folder: Union[str, os.PathLike], base=None):
    """The entry as a ready model: its adapter attached to its base (the bootstrapped offline base model
    unless `base` is given), the base checked by fingerprint."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..data.base_models import base_model_path
    from ..hub.artifacts import attach_expert

    folder = Path(folder)
    meta = json.loads((folder / EXPERT_META).read_text())
    if base is None:
        path = base_model_path(read_record(folder)["base"]["name"])
        if meta["head"] == "seqcls":
            base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=meta["num_labels"])
        else:
            base = AutoModelForCausalLM.from_pretrained(path)
    return attach_expert(folder, base=base)


def load_baselines(zoo_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    path = (Path(zoo_dir) if zoo_dir else default_zoo_dir()) / BASELINES
    return json.loads(path.read_text()) if path.is_file() else {}
