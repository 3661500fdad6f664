"""Unit tests of the on-disk format (no server): objects, trees, commits, refs, names."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from talklora_hub.localhub.objects import HashMismatch, ObjectStore, git_blob_oid, lfs_pointer
from talklora_hub.localhub.paths import InvalidName, check_file_path, check_ref_name
from talklora_hub.localhub.storage import (
    AddFile,
    CommitConflict,
    DeleteFile,
    DeleteFolder,
    EntryNotFound,
    ExclusiveLock,
    FileEntry,
    HubStorage,
    InvalidCommit,
    RepoExists,
    RevisionNotFound,
    apply_operations,
    list_folder,
)


def test_git_ids_match_git():
    assert git_blob_oid(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert lfs_pointer("ab" * 32, 12).decode() == (
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 12\n")


def test_object_store_verifies_and_leaves_no_partial_files(tmp_path):
    store = ObjectStore(tmp_path)
    sha = store.put_bytes(b"data")
    assert store.read(sha) == b"data" and store.put_bytes(b"data") == sha
    with pytest.raises(HashMismatch), store.writer(expected_sha256="0" * 64) as writer:
        writer.write(b"other")
        writer.commit()
    with pytest.raises(HashMismatch), store.writer(expected_size=3) as writer:
        writer.write(b"toolong")
    assert not store.exists("0" * 64)
    assert list(store.tmp_dir.iterdir()) == []


def _entry(store: ObjectStore, data: bytes) -> FileEntry:
    return FileEntry.regular(data, store.put_bytes(data))


def test_tree_operations(tmp_path):
    store = ObjectStore(tmp_path)
    tree = apply_operations({}, [AddFile("a/b.txt", _entry(store, b"1")), AddFile("c.txt", _entry(store, b"2"))])
    assert list_folder(tree, "", recursive=False) == [("directory", "a"), ("file", "c.txt")]
    assert list_folder(tree, "", recursive=True) == [("directory", "a"), ("file", "c.txt"), ("file", "a/b.txt")]
    with pytest.raises(EntryNotFound):
        list_folder(tree, "nope", recursive=False)
    with pytest.raises(InvalidCommit):  # "a" cannot be a file and a folder
        apply_operations(tree, [AddFile("a", _entry(store, b"x"))])
    with pytest.raises(InvalidCommit):
        apply_operations(tree, [AddFile("c.txt/d", _entry(store, b"x"))])
    with pytest.raises(EntryNotFound):
        apply_operations(tree, [DeleteFile("missing")])
    assert apply_operations(tree, [DeleteFolder("a")]) == {"c.txt": tree["c.txt"]}


def test_commits_refs_and_resolution(tmp_path):
    storage = HubStorage(tmp_path)
    repo = storage.create("model", "alice", "m", owner="alice")
    with pytest.raises(RepoExists):
        storage.create("model", "Alice", "M", owner="alice")  # repo ids are case-insensitive
    initial = repo.head()
    first = repo.commit("main", [AddFile("x.txt", _entry(storage.objects, b"1"))], author="alice", title="one")
    second = repo.commit("main", [AddFile("x.txt", _entry(storage.objects, b"2"))], author="alice", title="two",
                         parent_commit=first.id)
    with pytest.raises(CommitConflict):
        repo.commit("main", [DeleteFile("x.txt")], author="alice", title="stale", parent_commit=first.id)
    assert [c.id for c in repo.history(repo.head())] == [second.id, first.id, initial]
    repo.create_ref("tags", "v1", first.id)
    repo.create_ref("branches", "feature/x", "v1")
    assert repo.resolve("v1") == repo.resolve("feature/x") == repo.resolve(first.id[:8]) == first.id
    assert repo.resolve("refs/heads/main") == second.id
    with pytest.raises(RevisionNotFound):
        repo.resolve("nope")
    with pytest.raises(InvalidCommit):
        repo.commit(first.id, [], author="alice", title="detached")
    assert storage.read_file(repo.get_commit(first.id), "x.txt") == b"1"


def test_failed_ref_update_leaves_branch_untouched(tmp_path, monkeypatch):
    storage = HubStorage(tmp_path)
    repo = storage.create("dataset", "bob", "d", owner="bob")
    head = repo.head()

    def power_cut(refs):
        raise OSError("disk gone")

    monkeypatch.setattr(type(repo), "_write_refs", lambda self, refs: power_cut(refs))
    with pytest.raises(OSError):
        repo.commit("main", [AddFile("a", _entry(storage.objects, b"a"))], author="bob", title="lost")
    monkeypatch.undo()
    assert repo.head() == head and "a" not in repo.get_commit(head).tree


@pytest.mark.parametrize("path", ["../a", "/a", "a/../b", "a\\b", "a\0b", "", "a//b", ".git/x", "a/./b", "a\nb"])
def test_bad_paths(path):
    with pytest.raises(InvalidName):
        check_file_path(path)


def test_good_paths_and_refs():
    assert check_file_path("dir/sub/file name.txt") == "dir/sub/file name.txt"
    assert check_file_path("folder/", allow_empty=True) == "folder"
    assert check_ref_name("feature/x-1") == "feature/x-1"
    for bad in ("../x", "a//b", "a/", "x.lock"):
        with pytest.raises(InvalidName):
            check_ref_name(bad)


# ---------------------------------------------------------------------------- locks

HOLD_LOCK = """
import sys, time
from pathlib import Path
from talklora_hub.localhub.storage import ExclusiveLock
with ExclusiveLock(Path(sys.argv[1])):
    Path(sys.argv[2]).touch()   # tells the parent the lock is held
    time.sleep(float(sys.argv[3]))
"""


def _holder(tmp_path, seconds: float) -> subprocess.Popen:
    """A child process that holds the lock at tmp_path/'.lock' for `seconds`; returned once it holds it."""
    ready = tmp_path / "held"
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / ".lock"), str(ready), str(seconds)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.01)
    return child


def test_lock_excludes_threads_of_the_process(tmp_path):
    inside, most = [0], [0]

    def worker():
        for _ in range(20):
            with ExclusiveLock(tmp_path / ".lock"):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_lock_excludes_another_process_until_it_lets_go(tmp_path):
    child = _holder(tmp_path, 1.0)
    started = time.monotonic()
    with ExclusiveLock(tmp_path / ".lock"):
        waited = time.monotonic() - started
    assert waited > 0.5 and child.wait(timeout=30) == 0


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    """A server killed while committing must not block the next one: the kernel drops a flock with
    its holder (a marker-file lock would stay behind)."""
    child = _holder(tmp_path, 60)
    child.kill()
    child.wait(timeout=10)
    started = time.monotonic()
    with ExclusiveLock(tmp_path / ".lock"):
        assert time.monotonic() - started < 5
