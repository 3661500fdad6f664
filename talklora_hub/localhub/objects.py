"""Content-addressed blob store: every file content the hub holds (small git files and LFS objects
alike) lives once under ``objects/ab/cd/<sha256>``.

Writes go to a temp file in ``<root>/tmp`` (same filesystem), are hashed while written, fsynced and
only then renamed into place, so a blob is either complete and verified or absent: a crash or a
dropped connection mid-write leaves at most an orphan temp file, which `ObjectStore.clean_tmp`
removes at server start."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from .faults import charge_disk, simulated_disk_free

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"


class HashMismatch(ValueError):
    """Uploaded content does not hash to the announced oid (or has the wrong size)."""


def git_blob_oid(data: bytes) -> str:
    """The git object id (sha1 of 'blob <size>\\0<content>') that git and the Hub report for a file."""
    header = f"blob {len(data)}\0".encode()
    return hashlib.sha1(header + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file standing in the git tree for an LFS object."""
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode()


def fsync_dir(path: Path) -> None:
    """Persist a rename: the directory entry must reach the disk, not just the file data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
    try:
        with os.fdopen(fd, "wb") as handle:
            charge_disk(len(data))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(path.parent)


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class BlobWriter:
    """Streams one blob into the store. Use as a context manager: leaving the block without
    `commit()` (error, disconnect) deletes the partial temp file and stores nothing."""

    def __init__(self, store: "ObjectStore", expected_sha256: str | None, expected_size: int | None):
        self._store = store
        self._expected_sha256 = expected_sha256
        self._expected_size = expected_size
        fd, self._tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256: str | None = None

    def write(self, data: bytes) -> None:
        if self._expected_size is not None and self.size + len(data) > self._expected_size:
            raise HashMismatch(f"More than the announced {self._expected_size} bytes were sent.")
        charge_disk(len(data))
        self._handle.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Verify the content and move it into the store; returns its sha256."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        digest = self._hash.hexdigest()
        if self._expected_size is not None and self.size != self._expected_size:
            raise HashMismatch(f"Received {self.size} bytes, expected {self._expected_size}.")
        if self._expected_sha256 is not None and digest != self._expected_sha256:
            raise HashMismatch(f"Content hashes to sha256 {digest}, not the announced {self._expected_sha256}.")
        self._store._install(self._tmp, digest)
        self.sha256 = digest
        return digest

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._handle.closed:
            self._handle.close()
        _unlink(self._tmp)  # no-op after a successful commit (the temp was renamed away)


class ObjectStore:
    """The blob store of one hub root."""

    def __init__(self, root: Path):
        self.dir = root / "objects"
        self.tmp_dir = root / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"Not a sha256: {sha256!r}")
        return self.dir / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return bool(SHA256_RE.match(sha256)) and self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def free_bytes(self) -> int:
        """Space left for new objects (the simulated free space instead, when tests set one)."""
        free = shutil.disk_usage(self.dir).free
        simulated = simulated_disk_free()
        return free if simulated is None else min(free, simulated)

    def writer(self, expected_sha256: str | None = None, expected_size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected_sha256, expected_size)

    def put_bytes(self, data: bytes) -> str:
        with self.writer(expected_size=len(data)) as writer:
            writer.write(data)
            return writer.commit()

    def _install(self, tmp: str, sha256: str) -> None:
        target = self.path(sha256)
        if target.is_file():
            _unlink(tmp)  # same content already stored: content addressing makes this a no-op
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        fsync_dir(target.parent)

    def clean_tmp(self) -> int:
        """Remove temp files left by a crash or a dropped upload. Only safe while no request runs."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            try:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
                removed += 1
            except OSError:
                pass
        return removed
