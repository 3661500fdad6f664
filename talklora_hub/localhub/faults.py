"""Crash injection for tests of the server's atomicity guarantees.

Setting ``TALKLORA_HUB_CRASH_AT=<point>`` in the server's environment makes the process die
abruptly (``os._exit``, no cleanup, like a power cut or SIGKILL) when it reaches that point.
The points are named where they are used; tests use them to prove that a crash at the worst
moment leaves every repo at its previous revision. Unset (the normal case) this is a no-op."""

from __future__ import annotations

import os

ENV_VAR = "TALKLORA_HUB_CRASH_AT"


def crash_point(name: str) -> None:
    """Die immediately if the environment asks for a crash at `name`."""
    if os.environ.get(ENV_VAR) == name:
        os._exit(97)
