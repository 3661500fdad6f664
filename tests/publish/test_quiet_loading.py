"""The project's own ways of loading a saved model never ask "Do you wish to run the custom code? [y/N]" and
never warn "You are using a model of type `talklora_hub` to instantiate a model of type ``".

The second message follows the first: when a talklora_hub repo is read without trust_remote_code (e.g. by
AutoTokenizer), transformers prompts, and once the custom code is refused it falls back to reading
config.json as a plain PretrainedConfig, whose model_type is "". Every loader must say
trust_remote_code=True for the repo's own code. Standard input is closed or unreadable in every test here,
so a prompt would also fail the load instead of waiting.
"""

import logging
import os
import subprocess
import sys

import pytest

from talklora_hub.publish.artifacts import load_artifact
from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

from ..train.helpers import build_tokenizer, save_tiny_llama

MESSAGES = ("Do you wish to run the custom code", "contains custom code which must be executed",
            "to instantiate a model of type")


@pytest.fixture
def saved(tmp_path):
    """A TalkLoRA causal LM saved with its tokenizer, as `train --output` and the zoo write it."""
    base = save_tiny_llama(tmp_path / "base")
    model = TalkLoRAForCausalLM.from_base(str(base), AdapterSettings(method="talklora", r=8))
    folder = tmp_path / "quiet-talklora"
    model.eval().save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def transformers_log(caplog):
    """caplog, also fed by transformers' own logger (which does not propagate to the root logger)."""
    logger = logging.getLogger("transformers")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="transformers"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def assert_quiet(*texts):
    for text in texts:
        for message in MESSAGES:
            assert message not in text, f"{message!r} in:\n{text[-3000:]}"


def test_load_artifact_and_the_space_loader_are_quiet(saved, capfd, transformers_log):
    from talklora_hub.space.models import load_model

    model = load_artifact(saved)
    assert type(model).__name__ == "TalkLoRAForCausalLM"
    loaded = load_model(str(saved))
    assert loaded is not None
    out, err = capfd.readouterr()
    assert_quiet(out, err, transformers_log.text)


def test_push_command_reads_the_tokenizer_without_a_prompt(hub, saved, capfd, transformers_log):
    from talklora_hub.cli import main

    assert main(["push", str(saved), "user/quiet-talklora", "--task", "spam"]) == 0
    out, err = capfd.readouterr()
    assert "(new commit)" in out
    assert_quiet(out, err, transformers_log.text)


def test_zoo_fresh_load_is_quiet_with_stdin_closed(saved, tmp_path):
    from talklora_hub.jobs.zoo_build import FRESH_LOAD

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(saved), "red blue lion"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "top expert per layer" in done.stdout
    assert_quiet(done.stdout, done.stderr)
