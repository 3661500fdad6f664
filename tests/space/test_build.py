"""The deployable folder: generated from talklora_hub/space, up to date, self-contained; the `space` CLI;
pushing it and loading models by repo id against a local Hub."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from talklora_hub import cli, spaces_commands
from talklora_hub.space import build
from talklora_hub.space import routing_views as rv

ALLOWED_IMPORTS = {"gradio", "torch", "transformers", "huggingface_hub", "routing_views"}


def test_checked_in_space_folder_is_a_fresh_build():
    assert build.SPACE_DIR.is_dir(), "run `talklora-hub space build`"
    assert build.check_space() == [], "spaces/talklora-routing is stale: run `talklora-hub space build`"
    for name in build.SOURCES:
        assert (build.SPACE_DIR / name).read_bytes() == (build.PACKAGE_DIR / name).read_bytes()


def test_space_imports_only_its_runtime_requirements():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in build.SOURCES:
        tree = ast.parse((build.SPACE_DIR / name).read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
        assert roots - stdlib <= ALLOWED_IMPORTS, f"{name} imports {sorted(roots - stdlib - ALLOWED_IMPORTS)}"
    requirements = (build.SPACE_DIR / "requirements.txt").read_text()
    assert "talklora" not in requirements
    for package in ("torch", "transformers", "safetensors", "gradio", "huggingface_hub"):
        assert package in requirements


def test_readme_front_matter_describes_a_gradio_space():
    import gradio

    assert build.GRADIO_VERSION == gradio.__version__, "pin the Space's sdk_version to the installed gradio"
    text = (build.SPACE_DIR / "README.md").read_text(encoding="utf-8")
    front = text.split("---\n")[1]
    for line in ("sdk: gradio", f"sdk_version: {gradio.__version__}", "app_file: app.py", "title: ", "emoji: ",
                 "models:"):
        assert line in front
    assert f"gradio=={gradio.__version__}" in (build.SPACE_DIR / "requirements.txt").read_text()
    assert rv.readme_models(str(build.SPACE_DIR / "README.md")) == build.DEFAULT_MODELS


def test_build_and_check_through_the_cli(tmp_path, capsys):
    out = tmp_path / "space"
    assert cli.main(["space", "build", "--out", str(out), "--models", "me/a", "me/b"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "requirements.txt", "routing_views.py"]
    assert rv.readme_models(str(out / "README.md")) == ["me/a", "me/b"]
    assert cli.main(["space", "build", "--out", str(out), "--check"]) == 0
    (out / "app.py").write_text("# edited by hand\n")
    (out / "stray.txt").write_text("x")
    assert cli.main(["space", "build", "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert "app.py: differs" in err and "stray.txt: not part of the build" in err
    assert cli.main(["space", "build", "--out", str(out), "--models", "me/a", "me/b"]) == 0
    assert build.check_space(out) == [] and not (out / "stray.txt").exists()


def test_every_leaf_parser_has_a_function():
    parser = cli.build_parser()
    for argv in (["space", "build"], ["space", "serve", "--models", "x", "--port", "9"], ["space", "push", "me/s"]):
        args = parser.parse_args(argv)
        assert callable(args.func) and args.func.__module__ == spaces_commands.__name__
    args = parser.parse_args(["space", "serve"])
    assert (args.host, args.port, args.models) == ("127.0.0.1", 7860, None)
    assert cli.main(["space"]) == 2  # no action: help


def test_serve_launches_on_loopback(monkeypatch):
    seen = {}
    import talklora_hub.space.app as app_module

    monkeypatch.setattr(app_module, "launch_app", lambda models, **kw: seen.update(models=models, **kw))
    monkeypatch.delenv(rv.ZOO_INDEX_ENV, raising=False)
    assert cli.main(["space", "serve", "--models", "a", "b", "--port", "7999", "--zoo", "me/talklora-zoo"]) == 0
    assert seen == {"models": ["a", "b"], "host": "127.0.0.1", "port": 7999, "allow_any": None}
    import os

    assert os.environ[rv.ZOO_INDEX_ENV] == "me/talklora-zoo"


def test_push_uploads_a_fresh_build_as_a_space(monkeypatch):
    calls = []

    class FakeApi:
        endpoint = "http://hub.invalid"

        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))

        def upload_folder(self, folder_path, repo_id, repo_type, **kwargs):
            calls.append(("upload", repo_id, repo_type, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Commit", (), {"oid": "abc123"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert cli.main(["space", "push", "me/routing", "--token", "t", "--models", "me/a"]) == 0
    assert calls[0] == ("init", "t")
    assert calls[1][:2] == ("create", "me/routing") and calls[1][2]["repo_type"] == "space"
    assert calls[1][2]["space_sdk"] == "gradio"
    assert calls[2] == ("upload", "me/routing", "space", ["README.md", "app.py", "requirements.txt",
                                                          "routing_views.py"])


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    try:
        from talklora_hub.hub.local import LocalHub
    except Exception as error:  # the embedded Hub is developed alongside; skip until it imports
        pytest.skip(f"talklora_hub.hub.local.LocalHub is not importable: {error}")
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


def test_push_and_load_by_repo_id_against_a_local_hub(local_hub, tiny_models, tmp_path, monkeypatch, capsys):
    for key, value in local_hub.env().items():
        monkeypatch.setenv(key, value)
    with local_hub.activate(cache_dir=tmp_path / "cache"):
        assert cli.main(["space", "push", f"{local_hub.user}/talklora-routing"]) == 0
        api = local_hub.api()
        files = set(api.list_repo_files(f"{local_hub.user}/talklora-routing", repo_type="space"))
        assert {"README.md", "app.py", "requirements.txt", "routing_views.py"} <= files

        repo = f"{local_hub.user}/tiny-moelora"
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=tiny_models["moelora"], repo_id=repo)
        loaded = rv.load_model(repo)
        assert loaded.method == "moelora" and loaded.token_routed
        assert rv.analyze_text(loaded, "The Senate met").weights.shape[-1] == 4
        with pytest.raises(rv.SpaceError, match=rf"Unknown model `{local_hub.user}/nothing-here`"):
            rv.load_model(f"{local_hub.user}/nothing-here")
