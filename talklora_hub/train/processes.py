"""How many processes a training run has, and whether that is what its launcher meant.

Launchers that start N processes (`torchrun --nproc_per_node N`, `accelerate launch --multi_gpu
--num_processes N`, which runs torchrun) give each one WORLD_SIZE=N; MPI (`accelerate launch --cpu
--mpirun_hostfile ...`) gives PMI_SIZE / OMPI_COMM_WORLD_SIZE / MV2_COMM_WORLD_SIZE. `accelerate launch --cpu
--num_processes N` without a hostfile starts ONE process (accelerate's CPU mode relies on MPI to start the
others) and sets only MASTER_ADDR and ACCELERATE_USE_CPU: that run trains alone, on 1/N of the intended global
batch, and `fell_back_to_one_process` says so.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

import torch

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

MULTI_PROCESS_COMMANDS = ("`torchrun --nproc_per_node N -m talklora_hub.cli train ...`, or `accelerate launch "
                          "--multi_gpu --num_processes N -m talklora_hub.cli train ...` (it runs torchrun; on a "
                          "machine without a GPU the processes train on the CPU with gloo, and `train --cpu` "
                          "keeps them there where GPUs exist)")


def launched_world_size(env: Mapping[str, str] = os.environ) -> int:
    """The number of processes the launcher says it started (1 when no launcher variable is set)."""
    for name in WORLD_SIZE_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def use_cpu(requested: bool, env: Mapping[str, str] = os.environ) -> bool:
    """Accelerator's cpu flag: as requested, and also under a multi-process launcher on a machine without a GPU,
    where accelerate needs cpu=True to set up gloo DDP."""
    return requested or (launched_world_size(env) > 1 and not torch.cuda.is_available())


def fell_back_to_one_process(num_processes: int, env: Mapping[str, str] = os.environ) -> Optional[str]:
    """A warning when this run has one process but its launcher meant several; None otherwise."""
    if num_processes > 1:
        return None
    meant = launched_world_size(env)
    if meant > 1:
        return (f"the launcher started {meant} processes (WORLD_SIZE or the MPI size says so) but this one trains "
                f"alone (accelerate found num_processes=1). Fix: launch with {MULTI_PROCESS_COMMANDS}.")
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env:
        return ("`accelerate launch` was given --num_processes > 1 (or --num_machines > 1) but started ONE process: "
                "without --multi_gpu (or an MPI hostfile with --cpu) it runs the script once, so this run trains "
                "alone, on 1/N of the intended global batch. Fix: launch with " + MULTI_PROCESS_COMMANDS + ".")
    return None
