"""Fixtures for the Space tests: tiny random models saved to folders, the deployed Space folder served in a
subprocess that cannot import talklora_hub, and a guard that keeps the test process off the internet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from talklora_hub.space.build import SPACE_DIR

from .tiny_models import save_tiny_models


# Runs the deployed app.py as Spaces do (python app.py in its folder), with talklora_hub unimportable.
BOOT = textwrap.dedent('''
    import importlib.abc, runpy, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "talklora_hub":
                raise ImportError("talklora_hub is blocked: the Space must be self-contained")
    sys.meta_path.insert(0, Block())
    sys.argv = ["app.py"] + sys.argv[1:]
    sys.path.insert(0, ".")
    runpy.run_path("app.py", run_name="__main__")
''')


@pytest.fixture
def offline_hub(monkeypatch):
    """huggingface_hub in offline mode (no lookups at all) for tests of unknown ids."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """{method: folder} of tiny random TalkLoRA / MoELoRA / LoRA / TT-LoRA MoE models with a tokenizer."""
    return {method: str(path) for method, path in save_tiny_models(tmp_path_factory.mktemp("models")).items()}


@pytest.fixture(scope="session")
def loaded(tiny_models) -> dict:
    """{method: LoadedModel}, loaded once for the view tests."""
    from talklora_hub.space.models import load_model

    return {method: load_model(path) for method, path in tiny_models.items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SpaceServer:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, models: dict):
        self.url, self.process, self.log, self.models = url, process, log, models

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def space_server(tiny_models, tmp_path_factory):
    """The checked-in Space folder (spaces/talklora-routing) served on 127.0.0.1 by `python app.py`, in a
    subprocess where talklora_hub cannot be imported and the Hub is unreachable."""
    if not (SPACE_DIR / "app.py").exists():
        pytest.skip(f"{SPACE_DIR} is missing: run `talklora-hub space build`")
    home = tmp_path_factory.mktemp("space-home")
    log = home / "server.log"
    port = free_port()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({
        "TALKLORA_SPACE_MODELS": ",".join(tiny_models[m] for m in ("talklora", "moelora", "lora", "ttlora")),
        "TALKLORA_SPACE_ALLOW_ANY_MODEL": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
        "GRADIO_SERVER_NAME": "127.0.0.1", "TOKENIZERS_PARALLELISM": "false", "TALKLORA_ZOO_INDEX": "",
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the checked-in folder
    })
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", BOOT, "--port", str(port)], cwd=SPACE_DIR, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = SpaceServer(f"http://127.0.0.1:{port}/", process, log, tiny_models)
    deadline = time.monotonic() + 90
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Space exited with {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "config", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Space did not start within 90 s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
