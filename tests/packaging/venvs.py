"""Clean virtual environments for the packaging tests, cached under .cache/matrix/ (gitignored).

Each holds only what a stranger would install: torch's local CPU build first (so pip never pulls the CUDA
wheels), then the named packages with `-c constraints.txt`. A venv is reused while its recipe (Python,
torch pin, packages) is unchanged; a half-built one (no stamp) is rebuilt from scratch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TALKLORA_VENV_CACHE", REPO / ".cache" / "matrix"))
CONSTRAINTS = REPO / "constraints.txt"
TORCH_PIN = next(line.strip() for line in CONSTRAINTS.read_text().splitlines() if line.startswith("torch"))
STAMP = "talklora-venv.json"


def clean_env(**extra: str) -> dict:
    """The environment for commands run in a cached venv: nothing that points back at the dev venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(command: Sequence[str], **kwargs) -> None:
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=clean_env(),
                          stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, command))}` failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


def pip(folder: Path, *args: str) -> None:
    """`pip install -q -c constraints.txt ARGS` inside the venv."""
    _run([venv_python(folder), "-m", "pip", "install", "-q", "-c", CONSTRAINTS, *args])


def cached_venv(name: str, packages: List[str]) -> Path:
    """The folder of venv `name` holding torch (pinned) and `packages`, built once and reused."""
    folder = CACHE / name
    recipe = {"python": sys.version.split()[0], "base": sys.base_prefix, "torch": TORCH_PIN,
              "packages": sorted(packages)}
    with _locked(name):
        stamp = folder / STAMP
        if stamp.exists() and json.loads(stamp.read_text()) == recipe and venv_python(folder).exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        # The base interpreter (not the dev venv's), so nothing of the dev venv is visible inside.
        base_python = Path(sys.base_prefix) / "bin" / Path(sys.executable).name
        _run([base_python if base_python.exists() else sys.executable, "-m", "venv", folder])
        try:
            _run([venv_python(folder), "-m", "pip", "install", "-q", TORCH_PIN])
        except RuntimeError:
            _run([venv_python(folder), "-m", "pip", "install", "-q", "-c", CONSTRAINTS, "torch",
                  "--index-url", "https://download.pytorch.org/whl/cpu"])
        if packages:
            pip(folder, *packages)
        stamp.write_text(json.dumps(recipe, indent=1))
        print(f"built venv {folder} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return folder


def recipe_digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
