"""Plumbing shared by the HTTP routes: the per-app context, Hub-style errors, authentication and
repo lookup with visibility and permission checks.

Errors follow the Hub's conventions because the clients branch on them: a JSON body
``{"error": message}`` plus the headers ``X-Error-Code`` (RepoNotFound, RevisionNotFound,
EntryNotFound...) and ``X-Error-Message``. huggingface_hub maps ``X-Error-Code`` to its exception
classes, and transformers/datasets rely on EntryNotFound to probe optional files cheaply."""

from __future__ import annotations

import base64
import errno
from dataclasses import dataclass
from urllib.parse import unquote

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from .auth import AuthStore, Principal, can_read
from .objects import HashMismatch
from .paths import InvalidName, check_name, check_namespace, check_repo_type, repo_url_path
from .storage import (
    CommitConflict,
    EntryNotFound,
    HubStorage,
    InvalidCommit,
    Repo,
    RepoExists,
    RepoNotFound,
    RevisionNotFound,
    repo_not_found,
)
from .xet import XetFormatError


@dataclass
class HubContext:
    storage: HubStorage
    auth: AuthStore
    tree_page_size: int = 1000
    instance_id: str = ""


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def ctx_of(request: Request) -> HubContext:
    return request.app.state.hub


def header_safe(text: str, limit: int = 500) -> str:
    """`text` made fit for an HTTP header value: printable latin-1 only, one line, bounded. Messages
    quote client input (paths, revisions); a NUL or CR/LF reaching a header would make the server
    drop the connection instead of answering (h11 refuses to send it)."""
    text = text[:limit].replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return "".join(ch if " " <= ch <= "~" or "\xa0" <= ch <= "\xff" else "?" for ch in text)


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    # The full message stays in the JSON body; the header carries a sanitised copy.
    all_headers = {"X-Error-Message": header_safe(message), **(headers or {})}
    if code:
        all_headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=all_headers)


# (status, X-Error-Code) for each storage-level error
_ERROR_MAP = {
    RepoNotFound: (404, "RepoNotFound"),
    RevisionNotFound: (404, "RevisionNotFound"),
    EntryNotFound: (404, "EntryNotFound"),
    RepoExists: (409, None),
    CommitConflict: (412, None),
    InvalidCommit: (400, None),
    InvalidName: (400, None),
    HashMismatch: (400, None),
    XetFormatError: (400, None),
}


# A write failing with one of these means the disk (or the hub's quota) is full: not a bug of the
# server, and not transient either, so the client must hear it plainly instead of a retried 500.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
INSUFFICIENT_STORAGE = 507
# hf_xet retries *every* 5xx with exponential backoff (a 507 from a xorb upload kept it busy 154 s
# here) and shows only the status line, so the Xet CAS routes answer a full disk with a 4xx it treats
# as final: 413, "the content is larger than the server is able to process". Users of huggingface_hub
# normally never get that far: preupload refuses with 507 first when the files cannot fit.
CAS_PATH_PREFIX = "/xet-cas/"
CAS_DISK_FULL_STATUS = 413


def disk_full_message(reason: str) -> str:
    return (f"Insufficient storage: the hub could not store your upload because {reason}. Nothing was "
            "committed and the repo is unchanged; free some space on the hub server, then retry.")


def disk_full_response(request: Request, error: OSError) -> JSONResponse:
    """507 Insufficient Storage naming the cause. huggingface_hub does not retry it (it retries 408,
    429, 500, 502, 503 and 504 only), so the user sees this message at once."""
    cause = "its storage quota is exhausted" if error.errno == errno.EDQUOT else "its disk is full"
    message = disk_full_message(f"{cause} ({error.strerror or errno.errorcode.get(error.errno, error.errno)})")
    status = CAS_DISK_FULL_STATUS if request.url.path.startswith(CAS_PATH_PREFIX) else INSUFFICIENT_STORAGE
    return error_response(status, message, "InsufficientStorage")


def install_error_handlers(app) -> None:
    async def hub_error(request: Request, exc: HubHTTPError):
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    async def os_error(request: Request, exc: OSError):
        if exc.errno not in DISK_FULL_ERRNOS:
            raise exc  # a genuine server fault: the default 500 (and its logged traceback)
        return disk_full_response(request, exc)

    async def client_gone(request: Request, exc: ClientDisconnect):
        # The client dropped the connection mid-body: nothing was committed, nobody reads this.
        return error_response(400, "Client disconnected before the request body was complete")

    app.add_exception_handler(HubHTTPError, hub_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(OSError, os_error)
    for error_class, (status, code) in _ERROR_MAP.items():
        async def handler(request: Request, exc: Exception, status=status, code=code):
            return error_response(status, str(exc) or exc.__class__.__name__, code)

        app.add_exception_handler(error_class, handler)


# ---------------------------------------------------------------------------- authentication


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":  # git / git-lfs send "user:token"
        try:
            return base64.b64decode(value).decode().partition(":")[2] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def principal_of(request: Request) -> Principal | None:
    """The authenticated caller, None when anonymous. A token that is present but unknown is a 401
    (not anonymous access): silently downgrading would hide private repos behind confusing 404s."""
    token = bearer_token(request)
    if token is None:
        return None
    principal = ctx_of(request).auth.authenticate(token)
    if principal is None:
        raise HubHTTPError(401, "Invalid credentials in Authorization header")
    return principal


def require_principal(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:
        raise HubHTTPError(401, "You must be authenticated (pass a token in the Authorization header)")
    return principal


def repo_type_from_plural(plural: str) -> str:
    if plural not in ("models", "datasets", "spaces"):
        raise HubHTTPError(404, f"Unknown repo type {plural!r}")
    return check_repo_type(plural)


def load_repo(
    request: Request, repo_type: str, namespace: str, name: str, *, write: bool = False
) -> tuple[Repo, Principal | None]:
    """Find a repo the caller may see (404 otherwise, also for private repos of others) and, for
    `write`, may modify (401 anonymous, 403 authenticated but not allowed)."""
    principal = principal_of(request)
    check_namespace(namespace)
    check_name(name)
    repo = ctx_of(request).storage.get(repo_type, namespace, name)
    meta = repo.meta()
    if not can_read(principal, namespace, bool(meta.get("private"))):
        # Exactly the error of a repo that does not exist: any difference would reveal that it does.
        raise repo_not_found(repo_type, namespace, name)
    if write:
        if principal is None:
            raise HubHTTPError(401, "You must be authenticated to write to this repo")
        if not principal.can_write_namespace(namespace):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_url_path(repo_type, repo.id)}")
    return repo, principal


def base_url(request: Request) -> str:
    """Where the client reached us (URLs we hand out must point back to the same place)."""
    return str(request.base_url).rstrip("/")


def raw_segments(request: Request) -> list[str]:
    """The request path split on '/' *before* percent-decoding, each segment then decoded. Needed
    where a revision (which may contain '/', sent as %2F) is followed by a file path."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return [unquote(segment) for segment in path.split("?", 1)[0].split("/")]
