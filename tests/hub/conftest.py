"""Fixtures for the hub tests: real server processes on 127.0.0.1, and a guard that fails any test
trying to reach a host other than the loopback interface (the suite must never touch the internet)."""

from __future__ import annotations

import itertools
import os
import re

import pytest

from talklora_hub.localhub import LocalHub

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def isolated_xet_cache(tmp_path_factory):
    """hf_xet keeps a per-endpoint chunk/shard cache (default ~/.cache/huggingface/xet); every test
    hub is a new endpoint, so keep those caches out of the home directory. Must be set before the
    process's first Xet upload creates its session (subprocess clients inherit it)."""
    previous = os.environ.get("HF_XET_CACHE")
    os.environ["HF_XET_CACHE"] = str(tmp_path_factory.mktemp("xet-cache"))
    yield
    if previous is None:
        os.environ.pop("HF_XET_CACHE", None)
    else:
        os.environ["HF_XET_CACHE"] = previous


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """One server for most tests. A tiny tree page size makes every client exercise pagination."""
    with LocalHub(tmp_path_factory.mktemp("hub"), tree_page_size=7) as running:
        yield running


@pytest.fixture
def fresh_hub(tmp_path):
    """A server of its own, for tests that kill or restart it."""
    with LocalHub(tmp_path / "hub") as running:
        yield running


@pytest.fixture
def api(hub):
    return hub.api()


@pytest.fixture
def repo_name(request):
    """A repo name unique to the test (all tests share the session hub)."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    return f"{base}-{next(_counter)}"


@pytest.fixture
def repo_id(hub, repo_name):
    return f"{hub.user}/{repo_name}"
