"""scripts/resolved_version.py: the transformers matrix reads the newest installable release from pip's
dry-run report, so a listed release pip cannot install (a dependency missing from the registry) is skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "resolved_version.py"

REPORT = {"version": "1", "install": [
    {"metadata": {"name": "safetensors", "version": "0.7.0"}},
    {"metadata": {"name": "Transformers", "version": "5.24.0"}},
    {"metadata": {"name": "huggingface_hub", "version": "1.2.3"}},
]}


def resolve(stdin: str, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *names], input=stdin, capture_output=True, text=True)


def test_prints_the_version_pip_resolved_for_the_named_package_whatever_its_spelling():
    assert resolve(json.dumps(REPORT), "transformers").stdout == "5.24.0\n"
    assert resolve(json.dumps(REPORT), "Huggingface-Hub").stdout == "1.2.3\n"


def test_a_package_the_report_does_not_install_prints_nothing_and_fails():
    done = resolve(json.dumps(REPORT), "kernels")
    assert (done.returncode, done.stdout) == (1, "")


def test_input_that_is_not_a_report_fails_with_a_reason():
    done = resolve("ERROR: No matching distribution found", "transformers")
    assert done.returncode == 1 and done.stdout == "" and "not a pip report" in done.stderr


def test_a_wrong_number_of_arguments_prints_the_usage():
    done = resolve(json.dumps(REPORT))
    assert done.returncode == 2 and "Usage" in done.stderr
