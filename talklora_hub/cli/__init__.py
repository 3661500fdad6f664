"""The `talklora-hub` command line.

The top of the package: one module here per area (walk, data, train, hub, publish, peft, zoo, space, serve), each
exposing `register(subparsers)`; this file only wires them together. Command modules parse arguments and
call the library; they may import any package, and no package imports them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "talklora_hub.cli.walk",
    "talklora_hub.cli.data",
    "talklora_hub.cli.train",
    "talklora_hub.cli.hub",
    "talklora_hub.cli.publish",
    "talklora_hub.cli.peft",
    "talklora_hub.cli.zoo",
    "talklora_hub.cli.space",
    "talklora_hub.cli.serve",
)


def add_command_group(subparsers, name: str, help: str, description: str | None = None, metavar: str = "ACTION"):
    """A command group `talklora-hub NAME ACTION ...`: returns the subparsers its actions are added to (dest
    NAME_command); `talklora-hub NAME` alone prints the group's help and exits with 2."""
    group = subparsers.add_parser(name, help=help, description=description)
    group.set_defaults(func=lambda args: group.print_help() or 2)
    return group.add_subparsers(dest=f"{name}_command", metavar=metavar)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talklora-hub", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # the area has no commands yet
                continue
            raise
        module.register(subparsers)
    return parser


def show_library_messages() -> None:
    """The library reports through `logging` (resumed from ..., evaluating ...); every command shows
    talklora_hub's INFO messages on stderr (progress bars stay tqdm's)."""
    package = logging.getLogger("talklora_hub")
    if not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    package.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    show_library_messages()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
