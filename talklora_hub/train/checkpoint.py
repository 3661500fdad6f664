"""Checkpoints that let a run continue exactly where it stopped.

A checkpoint is a folder checkpoints/step-000120/ holding
    adapter.safetensors        the adapter tensors (trainable ones, plus frozen experts of a MoE)
    optimizer.safetensors      AdamW's per-parameter tensors, keyed "<param index>.<name>"
    optimizer.json             the optimizer's param groups and non-tensor state
    scheduler.json             the LR scheduler's state
    rng-<process>.safetensors  torch CPU (and CUDA) generator states of each process
    rng-<process>.json         Python's and NumPy's generator states of each process
    trainer_state.json         step, config fingerprint, loss history, routing totals, timing
It is written into a hidden sibling folder and renamed into place once complete, so an interrupted
save never leaves a checkpoint that looks finished; older checkpoints beyond `keep` are removed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output: str | os.PathLike) -> Path:
    return Path(output) / "checkpoints"


def list_checkpoints(output: str | os.PathLike) -> List[Path]:
    """Complete checkpoints in step order."""
    root = checkpoint_dir(output)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))
             and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output: str | os.PathLike) -> Optional[Path]:
    found = list_checkpoints(output)
    return found[-1] if found else None


def adapter_tensor_names(model: torch.nn.Module) -> List[str]:
    """Everything that is not the frozen base: trainable tensors, adapter tensors (frozen experts of a
    TT-LoRA MoE included), shared banks and the sequence router."""
    from ..modeling.adapter_base import adapter_layers

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name, layer in adapter_layers(model).items():
        names += [f"{name}.{p}" for p in layer.adapter_parameter_names()]
    names += [n for n, _ in model.named_parameters() if n.startswith(("adapter_shared.", "sequence_router."))]
    return sorted(set(names))


def adapter_tensors(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().contiguous() for n in adapter_tensor_names(model)}


def load_adapter_tensors(model: torch.nn.Module, tensors: Dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in adapter_tensor_names(model) if n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise ValueError(f"checkpoint: the adapter tensors do not fit this model (missing {missing[:5]}, unknown "
                         f"{unknown[:5]}). Fix: resume with the same method, rank, experts and base as the run that "
                         "wrote it.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"checkpoint: tensor {name} has shape {tuple(tensor.shape)}, the model "
                                 f"{tuple(params[name].shape)}. Fix: resume with the run's own settings.")
            params[name].copy_(tensor.to(params[name].dtype))


# ---- optimizer / scheduler / RNG ---------------------------------------------------------------
def _split_state(state: Dict[str, Any]):
    """optimizer.state_dict() -> (tensors, json-able rest)."""
    tensors, rest = {}, {"state": {}, "param_groups": state["param_groups"]}
    for index, entry in state["state"].items():
        plain = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        rest["state"][str(index)] = plain
    return tensors, rest


def _join_state(tensors: Dict[str, torch.Tensor], rest: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    other: Dict[str, Any] = {"python": [py[0], list(py[1]), py[2]]}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        other["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    except ImportError:  # numpy is optional
        pass
    return tensors, other


def set_rng_state(tensors: Dict[str, torch.Tensor], other: Dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = other["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in other:
        import numpy as np

        kind, keys, pos, has_gauss, cached = other["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: None))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")  # key order kept: module order is meaningful


# ---- save / load -------------------------------------------------------------------------------
def save_checkpoint(output, step: int, model, optimizer, scheduler, trainer_state: Dict[str, Any],
                    accelerator, keep: int = 2) -> Path:
    """Writes the checkpoint of `step` (every process must call this: each saves its RNG state)."""
    root = checkpoint_dir(output)
    final = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.partial"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    tensors, other = rng_state()
    rank = accelerator.process_index
    save_file(tensors, str(staging / f"rng-{rank}.safetensors"))
    _write_json(staging / f"rng-{rank}.json", other)
    if main:
        save_file(adapter_tensors(model), str(staging / "adapter.safetensors"))
        opt_tensors, opt_rest = _split_state(optimizer.state_dict())
        save_file(opt_tensors, str(staging / "optimizer.safetensors"))
        _write_json(staging / "optimizer.json", _json_safe(opt_rest))
        _write_json(staging / "scheduler.json", _json_safe(scheduler.state_dict()))
        _write_json(staging / "trainer_state.json", _json_safe({**trainer_state, "num_processes": accelerator.num_processes}))
    accelerator.wait_for_everyone()
    if main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_trainer_state(path: Path) -> Dict[str, Any]:
    return json.loads((Path(path) / "trainer_state.json").read_text())


def load_checkpoint(path, model, optimizer, scheduler, accelerator) -> Dict[str, Any]:
    """Restores adapter, optimizer, scheduler and this process's RNG; returns the trainer state."""
    path = Path(path)
    state = load_trainer_state(path)
    if state.get("num_processes", 1) != accelerator.num_processes:
        raise ValueError(f"resume: the checkpoint {path} was written by {state.get('num_processes')} processes, this run "
                         f"has {accelerator.num_processes}. Fix: resume with the same number of processes (the data "
                         "order per process depends on it).")
    load_adapter_tensors(model, load_file(str(path / "adapter.safetensors")))
    if optimizer is not None:
        rest = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(_join_state(load_file(str(path / "optimizer.safetensors")), rest))
    if scheduler is not None:
        sched = json.loads((path / "scheduler.json").read_text())
        sched.pop("lr_lambdas", None)
        scheduler.load_state_dict({**scheduler.state_dict(), **sched})
    rank = accelerator.process_index
    set_rng_state(load_file(str(path / f"rng-{rank}.safetensors")), json.loads((path / f"rng-{rank}.json").read_text()))
    return state
