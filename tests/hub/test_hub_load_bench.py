"""Smoke test of the load benchmark (benchmarks/load/bench_hub_load.py): 2 clients, 2 seconds per
phase, run as the command a user would run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "load" / "bench_hub_load.py"


def test_load_benchmark_smoke(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--clients", "2", "--seconds", "2", "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=180,
                            env={**os.environ, "HF_XET_CACHE": str(tmp_path / "xet-cache")})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["integrity"]["ok"] and results["integrity"]["files_checked"] > 0
    assert results["http_5xx"] == 0
    assert results["contention"]["operations"]["commit (no parent)"]["count"] > 0
    assert results["integrity"]["contention"]["acknowledged_commits"] > 0
    assert "| mixed | upload folder |" in (tmp_path / "out" / "results.md").read_text()
