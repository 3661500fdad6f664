import pytest

from ..train.helpers import save_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return str(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))
