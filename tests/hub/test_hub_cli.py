"""The `hub` command group and the client-activation helper."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as constants

import talklora_hub
from talklora_hub.localhub.auth import AuthStore
from talklora_hub.cli.hub import register
from talklora_hub.localhub.clients import use_hub


def test_register_adds_hub_serve():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hub", "serve", "--root", "data", "--port", "9999"])
    assert callable(args.func) and args.port == 9999 and args.host == "127.0.0.1" and args.root == "data"
    args = parser.parse_args(["hub", "create-token", "--root", "data", "--user", "bob", "--role", "read"])
    assert callable(args.func) and args.role == "read"


def test_create_token_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(talklora_hub.__file__).parent.parent))
    result = subprocess.run([sys.executable, "-m", "talklora_hub.cli", "hub", "create-token", "--root", str(tmp_path),
                             "--user", "bob", "--org", "team"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    principal = AuthStore(tmp_path).authenticate(result.stdout.strip())
    assert principal.user == "bob" and principal.orgs == ("team",) and principal.role == "write"


def test_use_hub_patches_and_restores(hub):
    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, os.environ.get("HF_TOKEN"))
    with use_hub(hub.endpoint, "hf_token_x"):
        assert constants.ENDPOINT == hub.endpoint
        assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(hub.endpoint + "/")
        assert os.environ["HF_TOKEN"] == "hf_token_x"
    assert (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, os.environ.get("HF_TOKEN")) == before
