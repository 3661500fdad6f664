"""Validation of everything a client can put into a name: repo types, repo ids, branch names, file paths.

Every string that ends up in a filesystem path on the server goes through one of these functions first;
the storage layer assumes its inputs are valid and never joins raw client strings itself."""

from __future__ import annotations

import re

REPO_TYPES = ("model", "dataset", "space")
# URL prefix in front of "{namespace}/{name}" for each repo type, as the Hub (and its clients) spell it.
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# Same shape as the Hub's rule: starts alphanumeric, then letters, digits, '-', '_', '.'; at most 96 chars.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Namespaces that would collide with routes of the server ("/api/...", "/datasets/...").
RESERVED_NAMESPACES = frozenset({"api", "datasets", "spaces", "models", "xet-cas", "lfs-objects", "v1", "v2"})
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
MAX_PATH_LENGTH = 1000


def _has_control_characters(text: str) -> bool:
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


class InvalidName(ValueError):
    """A client-supplied name or path is not acceptable (the server answers 400)."""


def check_repo_type(repo_type: str | None) -> str:
    """Normalise a repo type ('models' and None are accepted for 'model')."""
    if repo_type in (None, "", "models"):
        return "model"
    if repo_type in ("datasets", "spaces"):
        repo_type = repo_type[:-1]
    if repo_type not in REPO_TYPES:
        raise InvalidName(f"Invalid repo type {repo_type!r}: must be one of {', '.join(REPO_TYPES)}.")
    return repo_type


def check_name(value: str, what: str = "name") -> str:
    """Validate one component of a repo id (namespace or repo name)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidName(f"Invalid {what} {value!r}: use letters, digits, '-', '_' or '.', starting alphanumeric.")
    if ".." in value or "--" in value or value.endswith(".git") or value.endswith("."):
        raise InvalidName(f"Invalid {what} {value!r}: '..', '--', a trailing '.' or '.git' are not allowed.")
    return value


def check_namespace(value: str) -> str:
    check_name(value, "namespace")
    if value.lower() in RESERVED_NAMESPACES:
        raise InvalidName(f"Namespace {value!r} is reserved.")
    return value


def check_ref_name(value: str) -> str:
    """Validate a branch or tag name (slashes allowed, as in git, but no '..' or empty segments)."""
    if isinstance(value, str) and _has_control_characters(value):
        raise InvalidName(f"Invalid branch or tag name {value!r}: control characters are not allowed.")
    if not isinstance(value, str) or not _REF_RE.match(value):
        raise InvalidName(f"Invalid branch or tag name {value!r}.")
    parts = value.split("/")
    if any(part in ("", ".", "..") or part.endswith(".lock") for part in parts) or value.endswith("/"):
        raise InvalidName(f"Invalid branch or tag name {value!r}.")
    return value


MAX_REVISION_LENGTH = 256


def check_revision(value) -> str:
    """Validate a revision as a client names it (branch, tag, 'refs/heads/x', commit id or prefix)
    before it is looked up: a string, at most 256 characters, no control characters. Those could
    never name a ref, and echoing them back (error messages, headers) would only cause trouble."""
    if not isinstance(value, str) or not value:
        raise InvalidName("The revision must be a non-empty string.")
    if len(value) > MAX_REVISION_LENGTH:
        raise InvalidName(f"Invalid revision: longer than {MAX_REVISION_LENGTH} characters.")
    if _has_control_characters(value):
        raise InvalidName(f"Invalid revision {value!r}: control characters are not allowed.")
    return value


def check_file_path(path: str, *, allow_empty: bool = False) -> str:
    """Validate a path inside a repo and return it normalised (no leading/trailing slash).

    Rejected: absolute paths, '..' or '.' segments, empty segments ('a//b'), backslashes (so that a
    Windows client cannot smuggle 'a\\..\\b'), NUL and other control characters, and '.git' segments."""
    if not isinstance(path, str):
        raise InvalidName("Path must be a string.")
    if path.startswith("/"):
        raise InvalidName(f"Invalid path {path!r}: absolute paths are not allowed.")
    stripped = path.rstrip("/")
    if stripped == "":
        if allow_empty:
            return ""
        raise InvalidName("Empty path.")
    if len(stripped) > MAX_PATH_LENGTH:
        raise InvalidName("Path too long.")
    if "\\" in stripped:
        raise InvalidName(f"Invalid path {path!r}: backslashes are not allowed.")
    if _has_control_characters(stripped):
        raise InvalidName(f"Invalid path {path!r}: control characters are not allowed.")
    for part in stripped.split("/"):
        if part in ("", ".", ".."):
            raise InvalidName(f"Invalid path {path!r}: empty, '.' and '..' segments are not allowed.")
        if part == ".git":
            raise InvalidName(f"Invalid path {path!r}: '.git' is not allowed.")
    return stripped


def repo_url_path(repo_type: str, repo_id: str) -> str:
    """'datasets/ns/name' style path of a repo, as used in resolve and git URLs."""
    return f"{URL_PREFIXES[repo_type]}{repo_id}"
