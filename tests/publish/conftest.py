"""A LocalHub server per test module, with a tiny base model published as `user/tiny-llama`."""

import pytest
import torch

from talklora_hub.localhub.local import LocalHub

from ..modeling.conftest import tiny_base


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    with LocalHub(root=root / "data") as server:
        with server.activate(cache_dir=root / "cache"):
            yield server


@pytest.fixture(scope="module")
def base_repo(hub):
    """(repo id, commit) of a tiny random Llama pushed to the hub."""
    tiny_base("llama").push_to_hub("user/tiny-llama")
    return "user/tiny-llama", hub.api().repo_info("user/tiny-llama").sha


@pytest.fixture
def ids():
    torch.manual_seed(2)
    return torch.randint(3, 96, (2, 7))
