"""Fault injection for tests of the server's atomicity guarantees and of its error handling.

* ``TALKLORA_HUB_CRASH_AT=<point>`` in the server's environment makes the process die abruptly
  (``os._exit``, no cleanup, like a power cut or SIGKILL) when it reaches that point. The points are
  named where they are used; tests use them to prove that a crash at the worst moment leaves every
  repo at its previous revision.
* ``TALKLORA_HUB_DISK_FREE=<bytes>`` makes the server behave as if its disk had only that many bytes
  free: once the data it has written since start-up would exceed them, every further write fails
  with ENOSPC, exactly as on a full disk (`charge_disk` is called before each write of stored data).

Unset (the normal case) both are no-ops."""

from __future__ import annotations

import errno
import os
import threading

ENV_VAR = "TALKLORA_HUB_CRASH_AT"
DISK_FREE_ENV_VAR = "TALKLORA_HUB_DISK_FREE"

# Read once: the knob is set in the server's environment at start-up, and charge_disk runs before
# every write of stored data, where unset it must cost no more than this one `is None` test.
_disk_budget = os.environ.get(DISK_FREE_ENV_VAR)
_disk_lock = threading.Lock()
_disk_used = 0


def crash_point(name: str) -> None:
    """Die immediately if the environment asks for a crash at `name`."""
    if os.environ.get(ENV_VAR) == name:
        os._exit(97)


def charge_disk(nbytes: int) -> None:
    """Account for `nbytes` about to be written; raise ENOSPC if the simulated free space is used up."""
    if _disk_budget is None:
        return
    global _disk_used
    with _disk_lock:
        if _disk_used + nbytes > int(_disk_budget):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _disk_used += nbytes


def simulated_disk_free() -> int | None:
    """Bytes left under TALKLORA_HUB_DISK_FREE, or None when no limit is simulated."""
    if _disk_budget is None:
        return None
    with _disk_lock:
        return max(0, int(_disk_budget) - _disk_used)
