"""Fixtures for the training tests: tiny random base models (saved once per session) and a task
registry restored after every test."""

from __future__ import annotations

import pytest

from .helpers import save_tiny_bert, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return str(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))
