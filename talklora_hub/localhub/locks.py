"""The lock that serialises writers of one repo (and of the repo namespace) across threads and processes."""

from __future__ import annotations

import threading
from pathlib import Path

from filelock import FileLock


class ExclusiveLock:
    """Exclusive, non-reentrant lock on a lock file, held against other threads and other processes.

    Across processes it is a `filelock.FileLock` (flock on POSIX), so two servers on the same root
    cannot interleave commits. Without the soft fallback: a soft lock is a marker file that would
    survive a killed server and block the restarted one, while the kernel drops a flock with its
    holder. Inside the process, threads first queue on a thread lock per path: filelock waits by
    polling, which would add up to a poll interval to every contended commit, while a thread lock
    hands over at once (and keeps the lock non-reentrant, as the callers expect)."""

    _locks: dict[str, tuple[threading.Lock, FileLock]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path
        with self._registry_lock:
            if str(path) not in self._locks:
                self._locks[str(path)] = (threading.Lock(), FileLock(path, mode=0o644, fallback_to_soft=False))
            self._thread_lock, self._file_lock = self._locks[str(path)]

    def __enter__(self) -> "ExclusiveLock":
        self._thread_lock.acquire()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock.acquire()
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._file_lock.release()
        finally:
            self._thread_lock.release()

