"""Two CPU processes (gloo) under torch.distributed.run train the same adapter: both end identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_end_with_identical_adapters(tiny_llama, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(worker), tiny_llama, str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    worlds = [(tmp_path / f"world-rank{r}.txt").read_text().split()[:2] for r in (0, 1)]
    assert worlds == [["2", "2"], ["2", "2"]]
    a, b = (load_file(str(tmp_path / f"adapter-rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name
    fresh = load_file(str(next((tmp_path / "checkpoints").iterdir()) / "adapter.safetensors"))
    assert any(not torch.equal(fresh[n], torch.zeros_like(fresh[n])) for n in fresh if "banks" in n)  # it trained
    result = json.loads((tmp_path / "train_result.json").read_text())
    assert result["timing"]["num_processes"] == 2 and result["steps"] == 4
    assert sorted(p.name for p in next((tmp_path / "checkpoints").iterdir()).glob("rng-*")) == \
        ["rng-0.json", "rng-0.safetensors", "rng-1.json", "rng-1.safetensors"]
