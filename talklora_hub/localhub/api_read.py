"""Read-only routes: repo info, tree listings, paths-info, refs, commit history and file downloads
(``resolve``). All of them pin a revision to a commit id first, so a response never mixes two
states of a repo even while someone is pushing."""

from __future__ import annotations

import mimetypes
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from .bodies import MAX_LISTING_BODY, parse_json, read_body
from .web import HubHTTPError, base_url, ctx_of, error_response, load_repo, raw_segments, repo_type_from_plural
from .paths import check_file_path, repo_url_path
from .repo_info import commit_json, file_json, folder_json, last_commit_json, repo_info_json
from .storage import Commit, EntryNotFound, Repo, folder_exists, list_folder

router = APIRouter()

HEADER_REPO_COMMIT = "X-Repo-Commit"


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter; anything else (text, '²', 5000 digits) is ignored."""
    raw = request.query_params.get(name, "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        return default
    return int(raw)


def _describe(repo: Repo, commit: Commit, entries: list[tuple[str, str]], expand: bool) -> list[dict]:
    results = [file_json(path, commit.tree[path]) if kind == "file" else folder_json(path, commit.tree)
               for kind, path in entries]
    if expand and entries:
        last = repo.last_commits(commit.id, entries)
        for data in results:
            if data["path"] in last:
                data["lastCommit"] = last_commit_json(last[data["path"]])
    return results


@router.get("/api/{plural}/{namespace}/{name}")
@router.get("/api/{plural}/{namespace}/{name}/revision/{revision:path}")
async def repo_info(request: Request, plural: str, namespace: str, name: str, revision: str | None = None):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name)
    commit = repo.get_commit(repo.resolve(revision))
    return repo_info_json(repo, commit)


@router.get("/api/{plural}/{namespace}/{name}/tree/{rest:path}")
async def list_tree(request: Request, plural: str, namespace: str, name: str, rest: str):
    """Folder listing, paginated with a GitHub-style Link header. The next-page link names the
    commit id rather than the branch, so paging stays consistent if the branch moves meanwhile."""
    repo_type = repo_type_from_plural(plural)
    repo, _ = load_repo(request, repo_type, namespace, name)
    segments = raw_segments(request)[6:]  # ['', 'api', plural, ns, name, 'tree', rev, *path]
    if not segments or not segments[0]:
        raise HubHTTPError(400, "Missing revision")
    commit = repo.get_commit(repo.resolve(segments[0]))
    folder = check_file_path("/".join(segments[1:]), allow_empty=True)
    params = request.query_params
    recursive, expand = _truthy(params.get("recursive", "")), _truthy(params.get("expand", ""))
    if folder and folder in commit.tree:
        raise EntryNotFound(f"{folder!r} is a file, not a folder")
    entries = list_folder(commit.tree, folder, recursive)
    page_size = ctx_of(request).tree_page_size if not expand else min(50, ctx_of(request).tree_page_size)
    page_size = max(1, min(page_size, _int_param(request, "limit", page_size)))
    start = _int_param(request, "cursor", 0)
    page = entries[start:start + page_size]
    headers = {HEADER_REPO_COMMIT: commit.id}
    if start + page_size < len(entries):
        query = {"recursive": str(recursive), "expand": str(expand), "cursor": str(start + page_size)}
        path_part = f"/{quote(folder, safe='')}" if folder else ""
        next_url = f"{base_url(request)}/api/{plural}/{repo.id}/tree/{commit.id}{path_part}?{urlencode(query)}"
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse(_describe(repo, commit, page, expand), headers=headers)


_PATHS_INFO_SHAPE = "{'paths': [path, ...], 'expand': bool}"


def _paths_info_request(request: Request, body: bytes) -> tuple[list[str], bool]:
    """(paths, expand) from a paths-info body: a form, as huggingface_hub posts it
    (paths=a&paths=b&expand=False), or a JSON object."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return form.get("paths", []), _truthy((form.get("expand") or ["false"])[0])
    payload = parse_json(body) if body.strip() else {}
    if not isinstance(payload, dict):
        raise HubHTTPError(400, f"The body must be a JSON object {_PATHS_INFO_SHAPE}, "
                                f"got a JSON {type(payload).__name__}")
    paths = payload.get("paths", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        raise HubHTTPError(400, f"'paths' must be a list of strings: {_PATHS_INFO_SHAPE}")
    return paths, _truthy(payload.get("expand", False))


@router.post("/api/{plural}/{namespace}/{name}/paths-info/{revision:path}")
async def paths_info(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name)
    commit = repo.get_commit(repo.resolve(revision))
    paths, expand = _paths_info_request(request, await read_body(request, MAX_LISTING_BODY))
    entries = []
    for raw in paths:
        path = check_file_path(str(raw), allow_empty=True)
        if path in commit.tree:
            entries.append(("file", path))
        elif path and folder_exists(commit.tree, path):
            entries.append(("directory", path))
    return JSONResponse(_describe(repo, commit, entries, expand), headers={HEADER_REPO_COMMIT: commit.id})


@router.get("/api/{plural}/{namespace}/{name}/refs")
async def list_refs(request: Request, plural: str, namespace: str, name: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name)
    refs = repo.refs()

    def describe(kind: str, prefix: str) -> list[dict]:
        return [{"name": ref, "ref": f"{prefix}{ref}", "targetCommit": target}
                for ref, target in sorted(refs[kind].items())]

    return {"branches": describe("branches", "refs/heads/"), "tags": describe("tags", "refs/tags/"),
            "converts": [], "pullRequests": []}


@router.get("/api/{plural}/{namespace}/{name}/commits/{revision:path}")
async def list_commits(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name)
    head = repo.resolve(revision)
    page = min(_int_param(request, "p", 0), 1_000_000)
    limit = max(1, min(_int_param(request, "limit", 100), 1000))
    history = repo.history(head)
    selected = []
    for index, commit in enumerate(history):
        if index >= (page + 1) * limit + 1:
            break
        selected.append(commit)
    items = selected[page * limit:(page + 1) * limit]
    headers = {HEADER_REPO_COMMIT: head}
    if len(selected) > (page + 1) * limit:
        next_url = f"{base_url(request)}/api/{plural}/{repo.id}/commits/{head}?{urlencode({'p': page + 1, 'limit': limit})}"
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse([commit_json(commit) for commit in items], headers=headers)


# ---------------------------------------------------------------------------- file downloads


def _serve_file(request: Request, repo_type: str, namespace: str, name: str, segments: list[str]):
    repo, _ = load_repo(request, repo_type, namespace, name)
    if not segments or not segments[0]:
        raise HubHTTPError(400, "Missing revision")
    commit_id = repo.resolve(segments[0])
    path = check_file_path("/".join(segments[1:]))
    entry = repo.get_commit(commit_id).tree.get(path)
    if entry is None:
        # The commit header lets clients cache "this file does not exist at this commit".
        return error_response(404, f"Entry not found: {path}", "EntryNotFound", {HEADER_REPO_COMMIT: commit_id})
    etag = entry.sha256 if entry.lfs else entry.git_oid
    headers = {
        HEADER_REPO_COMMIT: commit_id,
        "ETag": f'"{etag}"',
        "Accept-Ranges": "bytes",
        "Access-Control-Expose-Headers": "X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, Content-Range",
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return FileResponse(ctx_of(request).storage.objects.path(entry.sha256), headers=headers, media_type=media_type)


@router.api_route("/datasets/{namespace}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_dataset(request: Request, namespace: str, name: str, rest: str):
    return _serve_file(request, "dataset", namespace, name, raw_segments(request)[5:])


@router.api_route("/spaces/{namespace}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_space(request: Request, namespace: str, name: str, rest: str):
    return _serve_file(request, "space", namespace, name, raw_segments(request)[5:])


@router.api_route("/{namespace}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_model(request: Request, namespace: str, name: str, rest: str):
    return _serve_file(request, "model", namespace, name, raw_segments(request)[4:])


def commit_url(request: Request, repo: Repo, commit_id: str) -> str:
    return f"{base_url(request)}/{repo_url_path(repo.type, repo.id)}/commit/{commit_id}"
