"""Server-side storage for Xet uploads: raw xorbs under ``<root>/xet/xorbs/`` and the conversion of
uploaded shards into ordinary, sha256-verified objects of the blob store.

Only the upload direction of Xet is served: once a shard arrives, each file it lists is rebuilt
from the xorbs, checked against the sha256 the client declared, and stored like any LFS object.
Downloads then use the plain ``resolve`` endpoint, so the hub never needs to hand out xorbs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from .objects import HashMismatch, ObjectStore, fsync_dir
from .storage import Repo
from .xet import MAX_XORB_SIZE, ChunkRecord, ShardFile, XetFormatError, is_hash_hex, parse_shard, reconstruct_file, scan_xorb


class XorbStore:
    def __init__(self, root: Path, objects: ObjectStore):
        self.dir = root / "xet" / "xorbs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.objects = objects

    def path(self, xorb_hash: str) -> Path:
        if not is_hash_hex(xorb_hash):
            raise XetFormatError(f"invalid xorb hash {xorb_hash!r}")
        return self.dir / xorb_hash[:2] / xorb_hash

    def exists(self, xorb_hash: str) -> bool:
        return self.path(xorb_hash).is_file()

    def new_temp(self) -> tuple[BinaryIO, str]:
        fd, tmp = tempfile.mkstemp(dir=self.objects.tmp_dir, prefix="xorb-")
        return os.fdopen(fd, "w+b"), tmp

    def install(self, handle: BinaryIO, tmp: str, xorb_hash: str, size: int) -> bool:
        """Validate a fully received xorb and move it into place; False if it was already stored."""
        try:
            if size > MAX_XORB_SIZE:
                raise XetFormatError("xorb larger than 64 MiB")
            scan_xorb(handle, size)  # the chunk headers must tile the body exactly
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            target = self.path(xorb_hash)
            if target.is_file():
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            return True
        finally:
            if not handle.closed:
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def ingest_shard(self, data: bytes, repo: Repo) -> int:
        """Rebuild and store every file of an uploaded shard and grant them to `repo`; returns the
        number of files newly verified. Raises XetFormatError / HashMismatch (-> 400) on bad input."""
        files, _xorbs = parse_shard(data)
        handles: dict[str, tuple[BinaryIO, list[ChunkRecord]]] = {}

        def open_xorb(xorb_hash: str) -> tuple[BinaryIO, list[ChunkRecord]]:
            if xorb_hash not in handles:
                path = self.path(xorb_hash)
                if not path.is_file():
                    raise XetFormatError(f"xorb {xorb_hash} referenced by the shard was never uploaded")
                handle = open(path, "rb")
                handles[xorb_hash] = (handle, scan_xorb(handle, path.stat().st_size))
            return handles[xorb_hash]

        verified = 0
        try:
            for shard_file in files:
                if shard_file.sha256 is None:
                    raise XetFormatError("shard files must carry their sha256 (metadata extension)")
                if repo.has_lfs(shard_file.sha256):
                    continue  # this repo already holds this exact content
                self._rebuild(shard_file, open_xorb)
                repo.grant_lfs(shard_file.sha256)
                verified += 1
        finally:
            for handle, _records in handles.values():
                handle.close()
        return verified

    def _rebuild(self, shard_file: ShardFile, open_xorb) -> None:
        with self.objects.writer(expected_sha256=shard_file.sha256, expected_size=shard_file.size) as writer:
            reconstruct_file(shard_file, open_xorb, writer.write)
            try:
                writer.commit()
            except HashMismatch as error:
                raise HashMismatch(f"file {shard_file.file_hash} of the shard: {error}") from None
