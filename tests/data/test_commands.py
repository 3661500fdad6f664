"""The `data` CLI group: wiring (every leaf has a func) and list/show on the fixture cache."""

from __future__ import annotations

import argparse

import pytest

from talklora_hub.cli import data as commands


def _parser():
    parser = argparse.ArgumentParser(prog="talklora-hub")
    commands.register(parser.add_subparsers(dest="command"))
    return parser


def _leaves(parser, path=()):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield path, parser
    for action in actions:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_leaf_has_a_func():
    leaves = {path: p for path, p in _leaves(_parser())}
    assert {("data", "fetch"), ("data", "bootstrap-models"), ("data", "list"), ("data", "show")} <= set(leaves)
    for path, leaf in leaves.items():
        assert callable(leaf.get_default("func")), path


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_list_and_show_on_fixture_cache(fixture_cache, capsys):
    assert _run(["data", "list", "--cache-dir", str(fixture_cache)]) == 0
    out = capsys.readouterr().out
    assert "spam" in out and "gsm8k" in out and "not fetched" not in out
    assert _run(["data", "show", "fortune_topic", "-n", "2", "--split", "test", "--cache-dir", str(fixture_cache)]) == 0
    out = capsys.readouterr().out
    assert out.count("--- fortune_topic:") == 2 and "Topic:" in out


def test_errors_return_nonzero(tmp_path, capsys):
    assert _run(["data", "show", "nope", "--cache-dir", str(tmp_path)]) == 1
    assert "one of" in capsys.readouterr().err
    assert _run(["data", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "not fetched" in capsys.readouterr().out
    assert _run(["data", "bootstrap-models", "--cache-dir", str(tmp_path)]) == 1
    assert _run(["data"]) == 2


@pytest.mark.parametrize("argv", [["data", "fetch", "nope"]])
def test_fetch_unknown_source(argv, tmp_path, capsys):
    assert _run([*argv, "--cache-dir", str(tmp_path)]) == 1
    assert "names: every source must be one of" in capsys.readouterr().err
