"""Fixtures for the data tests: the raw fixture sources, a cache laid out as a fetch leaves it, and
a task registry reset after every test."""

from __future__ import annotations

from pathlib import Path

import pytest
from .talklora_raw_fixtures import BUILDERS


@pytest.fixture(scope="session")
def raw_sources(tmp_path_factory) -> dict[str, Path]:
    """{source name: folder} of every fixture source, built once per test session."""
    base = tmp_path_factory.mktemp("raw")
    return {name: build(base / name) for name, build in BUILDERS.items()}


@pytest.fixture()
def fixture_cache(tmp_path, raw_sources) -> Path:
    """A cache folder whose sources/ holds the fixture sources (symlinked), as a fetch would leave it."""
    cache = tmp_path / "cache"
    (cache / "sources").mkdir(parents=True)
    for name, folder in raw_sources.items():
        (cache / "sources" / name).symlink_to(folder, target_is_directory=True)
    return cache
