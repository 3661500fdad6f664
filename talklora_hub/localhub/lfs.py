"""The git-lfs batch protocol (the classic, non-Xet way huggingface_hub uploads large files).

1. ``POST /{prefix}{ns}/{name}.git/info/lfs/objects/batch`` - the client lists (oid, size); we
   answer which objects we still need, each with a pre-signed upload URL (the client sends the PUT
   without its token, like to S3, so the URL itself carries a short-lived signed ticket).
2. ``PUT /lfs-objects/{oid}?t=ticket`` - the content, hashed while streamed to a temp file and
   refused with 400 (nothing stored) unless it hashes to the oid and has the announced size.
3. ``POST .../info/lfs/objects/verify`` - the client confirms; we check the object is there.

An object only becomes usable by a repo's commits once it was uploaded *to that repo*
(`Repo.grant_lfs`), even if identical content is already stored for another repo."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .bodies import MAX_JSON_BODY, MAX_LISTING_BODY, is_json_int, read_json_object
from .web import HubHTTPError, base_url, ctx_of, load_repo
from .objects import SHA256_RE
from .paths import check_repo_type

router = APIRouter()

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
_BATCH_SHAPE = "{'operation': 'upload'|'download', 'objects': [{'oid': sha256, 'size': int}]}"
TICKET_TTL = 3600.0


def _repo_name(name_git: str) -> str:
    if not name_git.endswith(".git"):
        raise HubHTTPError(404, "Not a git endpoint")
    return name_git[:-4]


def _object_error(oid, size, code: int, message: str) -> dict:
    return {"oid": str(oid), "size": size if isinstance(size, int) else 0, "error": {"code": code, "message": message}}


async def _batch(request: Request, repo_type: str, namespace: str, name_git: str):
    payload = await read_json_object(request, MAX_LISTING_BODY, shape=_BATCH_SHAPE)
    objects = payload.get("objects")
    if not isinstance(objects, list):
        raise HubHTTPError(400, f"Invalid LFS batch request: the body must be {_BATCH_SHAPE}")
    operation = payload.get("operation")
    if operation not in ("upload", "download"):
        raise HubHTTPError(400, f"Unsupported LFS operation {operation!r}")
    if payload.get("hash_algo", "sha256") != "sha256":
        raise HubHTTPError(409, "Only sha256 is supported")
    repo, principal = load_repo(request, repo_type, namespace, _repo_name(name_git), write=operation == "upload")
    ctx = ctx_of(request)
    base = base_url(request)
    answers = []
    for item in objects:
        oid, size = (item.get("oid"), item.get("size")) if isinstance(item, dict) else (None, None)
        if not isinstance(oid, str) or not SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
            answers.append(_object_error(oid, size, 422, "oid must be a sha256 and size a non-negative integer"))
            continue
        present = repo.has_lfs(oid)
        if operation == "upload":
            if present:
                answers.append({"oid": oid, "size": size})  # no actions: nothing to upload
                continue
            ticket = ctx.auth.sign({"op": "lfs-upload", "repo": [repo.type, repo.namespace, repo.name],
                                    "oid": oid, "size": size, "user": principal.user}, TICKET_TTL)
            answers.append({
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{base}/lfs-objects/{oid}?t={ticket}", "expires_in": int(TICKET_TTL)},
                    "verify": {"href": f"{base}{request.url.path[: -len('/batch')]}/verify", "header": {}},
                },
            })
        else:
            if not present:
                answers.append(_object_error(oid, size, 404, "Object does not exist"))
                continue
            ticket = ctx.auth.sign({"op": "lfs-download", "oid": oid}, TICKET_TTL)
            answers.append({"oid": oid, "size": size, "actions": {
                "download": {"href": f"{base}/lfs-objects/{oid}?t={ticket}", "expires_in": int(TICKET_TTL)}}})
    return JSONResponse({"transfer": "basic", "objects": answers, "hash_algo": "sha256"}, media_type=LFS_MEDIA_TYPE)


async def _verify(request: Request, repo_type: str, namespace: str, name_git: str):
    repo, _ = load_repo(request, repo_type, namespace, _repo_name(name_git), write=True)
    payload = await read_json_object(request, MAX_JSON_BODY, shape="{'oid': sha256, 'size': int}")
    oid, size = payload.get("oid"), payload.get("size")
    if not isinstance(oid, str) or not is_json_int(size):
        raise HubHTTPError(400, "Invalid LFS verify request: the body must be {'oid': sha256, 'size': int}")
    if not repo.has_lfs(oid):
        raise HubHTTPError(404, f"LFS object {oid} was not uploaded to this repo")
    if repo.storage.objects.size(oid) != size:
        raise HubHTTPError(422, f"LFS object {oid} does not have size {size}")
    return JSONResponse({"message": "ok"}, media_type=LFS_MEDIA_TYPE)


for _prefix, _type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
    def _make(repo_type: str):
        async def batch(request: Request, namespace: str, name_git: str):
            return await _batch(request, repo_type, namespace, name_git)

        async def verify(request: Request, namespace: str, name_git: str):
            return await _verify(request, repo_type, namespace, name_git)

        return batch, verify

    _batch_route, _verify_route = _make(_type)
    router.add_api_route(f"{_prefix}/{{namespace}}/{{name_git}}/info/lfs/objects/batch", _batch_route,
                         methods=["POST"])
    router.add_api_route(f"{_prefix}/{{namespace}}/{{name_git}}/info/lfs/objects/verify", _verify_route,
                         methods=["POST"])


@router.put("/lfs-objects/{oid}")
async def upload_object(request: Request, oid: str, t: str = ""):
    ctx = ctx_of(request)
    ticket = ctx.auth.verify(t)
    if ticket is None or ticket.get("op") != "lfs-upload" or ticket.get("oid") != oid:
        raise HubHTTPError(403, "Invalid or expired upload URL")
    repo_type, namespace, name = ticket["repo"]
    repo = ctx.storage.get(check_repo_type(repo_type), namespace, name)
    try:
        with ctx.storage.objects.writer(expected_sha256=oid, expected_size=int(ticket["size"])) as writer:
            async for chunk in request.stream():
                writer.write(chunk)
            await run_in_threadpool(writer.commit)
    except ClientDisconnect:
        # The writer already deleted its temp file; the client is gone, nobody reads this answer.
        return JSONResponse({"error": "client disconnected"}, status_code=400)
    repo.grant_lfs(oid)
    return JSONResponse({}, status_code=200)


@router.get("/lfs-objects/{oid}")
async def download_object(request: Request, oid: str, t: str = ""):
    ctx = ctx_of(request)
    ticket = ctx.auth.verify(t)
    if ticket is None or ticket.get("op") != "lfs-download" or ticket.get("oid") != oid:
        raise HubHTTPError(403, "Invalid or expired download URL")
    if not ctx.storage.objects.exists(oid):
        raise HubHTTPError(404, "Object does not exist")
    return FileResponse(ctx.storage.objects.path(oid), media_type="application/octet-stream")
