"""Session-wide isolation, applied before any test imports transformers or huggingface_hub.

Hugging Face caches (downloads, and the dynamic modules that trust_remote_code imports) go to a fresh
temporary folder, so the tests never read or write the user's ~/.cache/huggingface, and no test can
leave `transformers_modules` pointing somewhere the next one cannot see.
"""

import os
import tempfile

_ROOT = tempfile.mkdtemp(prefix="talklora-tests-hf-")
os.environ["HF_HOME"] = os.path.join(_ROOT, "home")
os.environ["HF_MODULES_CACHE"] = os.path.join(_ROOT, "modules")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import socket  # noqa: E402

import pytest  # noqa: E402

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Every test stays on this machine: DNS lookups and connections to anything but loopback fail
    (Python-level sockets of the test process; subprocesses get their addresses from the tests)."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL_HOSTS:
            raise socket.gaierror(f"tests must stay offline (lookup of {name!r} blocked)")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL_HOSTS:
            raise OSError(f"tests must stay offline (connection to {address!r} blocked)")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def _isolated_task_registry():
    """Tasks a test registers (its own data) must not leak into the next test."""
    from talklora_hub.data import tasks

    before = dict(tasks.TASKS)
    yield
    tasks.TASKS.clear()
    tasks.TASKS.update(before)
