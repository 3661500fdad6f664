"""Multi-process training really runs N processes: the documented `accelerate launch --multi_gpu
--num_processes 2` trains two gloo processes on the CPU whose losses match one process's on the same global
batch; a launch that starts one process where several were meant says so."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from talklora_hub.train.processes import fell_back_to_one_process, launched_world_size, use_cpu

from .helpers import color_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(launcher, tiny_llama, data, out, *extra):
    args = ["-m", "talklora_hub.cli", "train", "--base", tiny_llama, "--train-file", str(data), "--method", "talklora",
            "--r", "8", "--lora-dropout", "0", "--lr", "2e-2", "--max-steps", "4", "--max-length", "40",
            "--max-eval-examples", "4", "--log-every", "1", "--no-progress", "--seed", "0", "--output", str(out),
            *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((Path(out) / "model" / "train_result.json").read_text())
    return result, load_file(str(Path(out) / "model" / "model.safetensors")), done.stderr


@pytest.mark.slow
def test_accelerate_launch_trains_two_processes_with_one_process_losses(tiny_llama, tmp_path):
    rows = color_rows(80)
    data = tmp_path / "colors.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(rows["text"], rows["label"])])
    # The same global batch of 4: two processes x 2 sequences, or one process x 2 micro-batches of 2, in the same
    # order (BatchPlan hands process p the p-th slice, micro-batch m the m-th).
    two, two_weights, log = _train([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                    "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                    "--dynamo_backend", "no", "--main_process_port", str(_free_port())],
                                   tiny_llama, data, tmp_path / "two", "--batch-size", "2")
    one, one_weights, _ = _train([sys.executable], tiny_llama, data, tmp_path / "one", "--batch-size", "2",
                                 "--grad-accum", "2")
    assert two["timing"]["num_processes"] == 2 and one["timing"]["num_processes"] == 1
    assert "trains alone" not in log
    losses_two, losses_one = ([r["loss"] for r in run["losses"]] for run in (two, one))
    assert len(losses_two) == len(losses_one) == 4
    # Reductions over other layouts differ in the last bits: a tolerance, not equality.
    torch.testing.assert_close(torch.tensor(losses_two), torch.tensor(losses_one), rtol=1e-5, atol=1e-5)
    assert losses_one[-1] != losses_one[0]  # it trained
    adapter = [name for name in one_weights if "lora" in name or "banks" in name]
    assert adapter and one_weights.keys() == two_weights.keys()
    for name in adapter:
        torch.testing.assert_close(two_weights[name], one_weights[name], rtol=1e-4, atol=1e-5)


def test_launched_world_size_reads_torchrun_and_mpi_variables():
    assert launched_world_size({}) == 1
    assert launched_world_size({"WORLD_SIZE": "2"}) == 2
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert use_cpu(True, {}) and not use_cpu(False, {})
    assert use_cpu(False, {"WORLD_SIZE": "2"}) == (not torch.cuda.is_available())


def test_a_launch_that_meant_several_processes_but_started_one_says_so():
    # `accelerate launch --cpu --num_processes 2 script`: one process, MASTER_ADDR and ACCELERATE_USE_CPU set.
    simple = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    message = fell_back_to_one_process(1, simple)
    assert "started ONE process" in message and "accelerate launch --multi_gpu --num_processes N" in message
    assert "torchrun --nproc_per_node N" in message
    assert "WORLD_SIZE" in fell_back_to_one_process(1, {"WORLD_SIZE": "2"})
    assert fell_back_to_one_process(2, {**simple, "WORLD_SIZE": "2"}) is None  # really several
    assert fell_back_to_one_process(1, {"ACCELERATE_USE_CPU": "True"}) is None  # `accelerate launch --cpu` alone
    assert fell_back_to_one_process(1, {}) is None  # plain python
