"""The errors of the storage layer; the HTTP layer (web.py) maps each to a status code and an
X-Error-Code the Hub's clients understand."""

from __future__ import annotations


class StorageError(Exception):
    """Base of the errors the HTTP layer maps to status codes."""


class RepoNotFound(StorageError):
    pass


class RepoExists(StorageError):
    pass


class RevisionNotFound(StorageError):
    pass


class EntryNotFound(StorageError):
    pass


class CommitConflict(StorageError):
    """The branch moved since the commit the client based its change on (optimistic locking)."""


class InvalidCommit(StorageError):
    """The commit is malformed: bad op, file/folder clash, unknown LFS object, commit to a non-branch..."""

