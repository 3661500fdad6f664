"""The `talklora-hub` command line. Thin on purpose: each area of the package owns its subcommands
in a `commands.py` module exposing `register(subparsers)`; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "talklora_hub.modeling_commands",
    "talklora_hub.data.commands",
    "talklora_hub.train.commands",
    "talklora_hub.hub.commands",
    "talklora_hub.hub.publish_commands",
    "talklora_hub.zoo.commands",
    "talklora_hub.spaces_commands",
)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
