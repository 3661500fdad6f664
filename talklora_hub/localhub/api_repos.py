"""Routes managing repos and accounts: create / delete / move repos, settings (visibility), branches
and tags, whoami, README metadata validation and repo listings."""

from __future__ import annotations

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .auth import can_read
from .bodies import MAX_JSON_BODY, MAX_LISTING_BODY, parse_json, read_body, read_json_object
from .web import (
    HubHTTPError,
    ctx_of,
    error_response,
    load_repo,
    principal_of,
    repo_type_from_plural,
    require_principal,
)
from .paths import check_name, check_namespace, check_ref_name, check_repo_type, repo_url_path
from .repo_info import repo_summary
from .storage import RepoExists, RepoNotFound

router = APIRouter()

SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
GATED_VALUES = (False, "auto", "manual")


def _private_from(payload: dict) -> bool | None:
    visibility = payload.get("visibility")
    if visibility is not None:
        if visibility not in ("public", "private", "protected"):
            raise HubHTTPError(400, f"Invalid visibility {visibility!r}")
        return visibility == "private"
    private = payload.get("private")
    return None if private is None else bool(private)


@router.post("/api/repos/create")
async def create_repo(request: Request):
    principal = require_principal(request)
    payload = await read_json_object(request)
    repo_type = check_repo_type(payload.get("type"))
    namespace = payload.get("organization") or principal.user
    name = payload.get("name")
    check_namespace(namespace)
    check_name(name or "", "repo name")
    storage = ctx_of(request).storage
    url = f"{str(request.base_url).rstrip('/')}/{repo_url_path(repo_type, f'{namespace}/{name}')}"
    if not principal.can_write_namespace(namespace):
        raise HubHTTPError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}")
    sdk = payload.get("sdk")
    if repo_type == "space" and sdk not in SPACE_SDKS:
        raise HubHTTPError(400, f"Spaces need an sdk, one of {', '.join(SPACE_SDKS)}")
    try:
        repo = await run_in_threadpool(
            storage.create, repo_type, namespace, name, owner=principal.user,
            private=bool(_private_from(payload)), sdk=sdk if repo_type == "space" else None,
        )
    except RepoExists as error:
        # huggingface_hub's create_repo(exist_ok=True) reads the url from this 409 body.
        return JSONResponse({"error": str(error), "url": url}, status_code=409,
                            headers={"X-Error-Message": "Repository already exists"})
    return {"url": url, "name": repo.id, "id": repo.id}


def _namespace_and_name(payload: dict, principal) -> tuple[str, str]:
    namespace = payload.get("organization") or principal.user
    return check_namespace(namespace), check_name(payload.get("name") or "", "repo name")


@router.delete("/api/repos/delete")
async def delete_repo(request: Request):
    principal = require_principal(request)
    payload = await read_json_object(request)
    repo_type = check_repo_type(payload.get("type"))
    namespace, name = _namespace_and_name(payload, principal)
    load_repo(request, repo_type, namespace, name, write=True)
    await run_in_threadpool(ctx_of(request).storage.delete, repo_type, namespace, name)
    return {}


@router.post("/api/repos/move")
async def move_repo(request: Request):
    payload = await read_json_object(request)
    repo_type = check_repo_type(payload.get("type"))
    try:
        from_ns, from_name = str(payload["fromRepo"]).split("/")
        to_ns, to_name = str(payload["toRepo"]).split("/")
    except (KeyError, ValueError):
        raise HubHTTPError(400, "fromRepo and toRepo must be 'namespace/name'") from None
    _repo, principal = load_repo(request, repo_type, from_ns, from_name, write=True)
    check_namespace(to_ns)
    check_name(to_name)
    if not principal.can_write_namespace(to_ns):
        raise HubHTTPError(403, f"You don't have the rights to move a repo to {to_ns!r}")
    await run_in_threadpool(ctx_of(request).storage.move, repo_type, (from_ns, from_name), (to_ns, to_name))
    return {}


@router.put("/api/{plural}/{namespace}/{name}/settings")
async def update_settings(request: Request, plural: str, namespace: str, name: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    payload = await read_json_object(request)
    private = _private_from(payload)
    changes = {}
    if private is not None:
        changes["private"] = private
    if "gated" in payload:
        if payload["gated"] not in GATED_VALUES:
            raise HubHTTPError(400, f"Invalid gated value {payload['gated']!r}: use false, 'auto' or 'manual'")
        changes["gated"] = payload["gated"]
    await run_in_threadpool(repo.update_meta, **changes)
    return {}


@router.post("/api/{plural}/{namespace}/{name}/branch/{branch:path}")
async def create_branch(request: Request, plural: str, namespace: str, name: str, branch: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    body = await read_body(request, MAX_JSON_BODY)
    payload = parse_json(body) if body.strip() else {}
    if not isinstance(payload, dict):
        raise HubHTTPError(400, "The request body must be a JSON object like {'startingPoint': revision}")
    try:
        await run_in_threadpool(repo.create_ref, "branches", check_ref_name(branch), payload.get("startingPoint"))
    except RepoExists as error:
        return error_response(409, str(error))
    return {}


@router.delete("/api/{plural}/{namespace}/{name}/branch/{branch:path}")
async def delete_branch(request: Request, plural: str, namespace: str, name: str, branch: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    await run_in_threadpool(repo.delete_ref, "branches", branch)
    return {}


@router.post("/api/{plural}/{namespace}/{name}/tag/{revision:path}")
async def create_tag(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    payload = await read_json_object(request)
    tag = payload.get("tag")
    try:
        await run_in_threadpool(repo.create_ref, "tags", check_ref_name(tag or ""), revision)
    except RepoExists as error:
        return error_response(409, str(error))
    return {}


@router.delete("/api/{plural}/{namespace}/{name}/tag/{tag:path}")
async def delete_tag(request: Request, plural: str, namespace: str, name: str, tag: str):
    repo, _ = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    await run_in_threadpool(repo.delete_ref, "tags", tag)
    return {}


@router.get("/api/{plural}/{namespace}/{name}/auth-check")
@router.get("/api/{plural}/{namespace}/{name}/auth-check/{mode}")
async def auth_check(request: Request, plural: str, namespace: str, name: str, mode: str = "read"):
    load_repo(request, repo_type_from_plural(plural), namespace, name, write=(mode == "write"))
    return {}


@router.get("/api/whoami-v2")
async def whoami(request: Request):
    principal = require_principal(request)
    return {
        "type": "user",
        "id": principal.user,
        "name": principal.user,
        "fullname": principal.user,
        "email": None,
        "emailVerified": False,
        "isPro": False,
        "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in principal.orgs],
        "auth": {
            "type": "access_token",
            "accessToken": {"displayName": principal.token_name, "role": principal.role},
        },
    }


def _front_matter(content: str) -> str | None:
    lines = content.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:index])
    return None


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request):
    """Check the YAML metadata block of a README (huggingface_hub calls this on every README upload)."""
    payload = await read_json_object(request, MAX_LISTING_BODY)
    block = _front_matter(str(payload.get("content", "")))
    if block is None:
        return {"errors": [], "warnings": []}
    try:
        metadata = yaml.safe_load(block)
    except yaml.YAMLError as error:
        message = f"Invalid YAML in README metadata: {error}"
        return JSONResponse({"error": message, "errors": [{"message": message}], "warnings": []}, status_code=400)
    if metadata is not None and not isinstance(metadata, dict):
        message = "README metadata must be a YAML mapping"
        return JSONResponse({"error": message, "errors": [{"message": message}], "warnings": []}, status_code=400)
    return {"errors": [], "warnings": []}


@router.get("/api/{plural}")
async def list_repos(request: Request, plural: str, author: str | None = None, search: str | None = None,
                     limit: int | None = None):
    """List the repos the caller can see (filters: author, search substring)."""
    repo_type = repo_type_from_plural(plural)
    principal = principal_of(request)
    results = []
    for repo in ctx_of(request).storage.list_repos(repo_type):
        if author and repo.namespace != author:
            continue
        if search and search.lower() not in repo.id.lower():
            continue
        try:
            meta = repo.meta()
            if not can_read(principal, repo.namespace, bool(meta.get("private"))):
                continue
            results.append(repo_summary(repo, meta))
        except (RepoNotFound, FileNotFoundError):  # deleted while listing
            continue
        if limit and len(results) >= limit:
            break
    return results

