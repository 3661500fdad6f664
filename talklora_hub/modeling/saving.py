"""Writing a folder so that its path always holds a complete version: the old one or the new one.

The new version is written into a hidden sibling folder, then swapped with the old one in one atomic
step (Linux renameat2 RENAME_EXCHANGE). Where that call does not exist, two renames are used and a save
killed between them leaves the old version in a hidden `.NAME.old-*` sibling: the next save or load of
that path puts it back (recover_interrupted_save), so nothing a user had is ever lost.

Part of the bundle that travels inside every saved model: imports only the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fnmatch
import functools
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

# Files a model save owns: a stale one (e.g. shards of an earlier, larger save) must not survive a new save.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth")
RETIRED_MARK = ".old-"

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def owned_by_model_save(name: str) -> bool:
    """True for names a model save writes or must remove (weights and their indexes)."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHT_PATTERNS)


@contextlib.contextmanager
def staged_directory(save_directory: Union[str, os.PathLike],
                     keep_existing: Optional[Callable[[str], bool]] = None) -> Iterator[Path]:
    """Yields an empty sibling folder to write into; when the block ends without error, it takes the place of
    save_directory atomically, so readers see the old folder or the new one, never a half-written one.

    keep_existing(name): for each top-level entry of the old folder that the block did not write, whether to
    carry it into the new version (e.g. a tokenizer saved beside the model first). None carries nothing."""
    target = Path(save_directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if keep_existing is not None and target.is_dir():
            _carry_over(target, staging, keep_existing)
        # mkdtemp makes a private (0700) folder and safetensors writes private (0600) files; a saved model is
        # meant to be shared like any other folder, so both follow the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        for path in staging.rglob("*"):
            if not path.is_symlink():
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _carry_over(old: Path, new: Path, keep: Callable[[str], bool]) -> None:
    """Links (or copies) the old folder's entries the new one lacks and `keep` accepts into the new one."""
    for entry in old.iterdir():
        destination = new / entry.name
        if destination.exists() or destination.is_symlink() or not keep(entry.name):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), destination)
        elif entry.is_dir():
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(destination))


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)  # no bytes copied: the old folder is removed right after
    except OSError:
        shutil.copy2(source, destination)


def replace_directory(staging: Path, target: Path) -> None:
    """Puts staging at target. With an existing target: one atomic exchange where the OS has it, else two
    renames (a crash between them is repaired by recover_interrupted_save). staging holds the old version
    afterwards (the caller removes it)."""
    if not target.exists():
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        return
    retired = target.parent / f".{target.name}{RETIRED_MARK}{uuid.uuid4().hex[:8]}"
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0


@functools.lru_cache(maxsize=1)
def _renameat2():
    """libc's renameat2, looked up once (find_library runs ldconfig), or None off Linux / without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def retired_versions(target: Path) -> Sequence[Path]:
    """Hidden `.NAME.old-*` siblings a two-rename save left behind, newest first."""
    found = [p for p in target.parent.glob(f".{target.name}{RETIRED_MARK}*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_interrupted_save(target: Union[str, os.PathLike]) -> None:
    """Repairs a save killed between its two renames: with nothing at target, the newest retired version goes
    back in place; with a complete target, retired versions are leftovers and are removed."""
    target = Path(target)
    retired = retired_versions(target)
    if not retired:
        return
    if not target.exists():
        with contextlib.suppress(OSError):  # another process may be restoring it at the same moment
            os.replace(retired[0], target)
            retired = retired[1:]
    for leftover in retired:
        shutil.rmtree(leftover, ignore_errors=True)
