"""Xet routes: the Hub's token endpoint and the upload half of a Xet CAS server.

huggingface_hub >= 1.0 uploads every LFS-mode file through Xet whenever ``hf_xet`` is installed
(it is a dependency) and ``HF_HUB_DISABLE_XET`` is unset; there is no fallback to git-lfs. So that
an unmodified client works against this hub with nothing but ``HF_ENDPOINT``, we serve:

* ``GET /api/{type}s/{ns}/{name}/xet-write-token/{rev}`` - a short-lived signed CAS token, scoped
  to the repo, plus ``casUrl`` = ``{endpoint}/xet-cas/{instance}``. The instance id is unique per
  hub root, so the client's local Xet cache (keyed by that URL) never dedups against chunks a
  different hub instance holds.
* under casUrl: ``POST /v1/xorbs/{prefix}/{hash}`` (store a xorb), ``POST /v1/shards`` (rebuild the
  announced files, verify their sha256, grant them to the repo), ``GET /v1/chunks/...`` (always 404:
  no global dedup), and 404 on the newer ``/v1/xorb-grants`` and ``/v2/...`` routes, which makes the
  client fall back to the plain endpoints above.
* ``POST /v1/telemetry`` - accepted and ignored.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .bodies import read_body
from .faults import charge_disk
from .web import HubHTTPError, base_url, bearer_token, ctx_of, load_repo, repo_type_from_plural
from .paths import check_repo_type
from .storage import RepoNotFound
from .xet import MAX_XORB_SIZE

router = APIRouter()

XET_TOKEN_TTL = 3600
MAX_SHARD_SIZE = 64 * 1024 * 1024


def cas_url(request: Request) -> str:
    return f"{base_url(request)}/xet-cas/{ctx_of(request).instance_id}"


@router.get("/api/{plural}/{namespace}/{name}/xet-write-token/{revision:path}")
async def xet_write_token(request: Request, plural: str, namespace: str, name: str, revision: str):
    repo, principal = load_repo(request, repo_type_from_plural(plural), namespace, name, write=True)
    expires = int(time.time()) + XET_TOKEN_TTL
    token = ctx_of(request).auth.sign(
        {"op": "xet", "scope": "write", "repo": [repo.type, repo.namespace, repo.name], "user": principal.user},
        XET_TOKEN_TTL,
    )
    url = cas_url(request)
    headers = {"X-Xet-Cas-Url": url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(expires)}
    return JSONResponse({"accessToken": token, "exp": expires, "casUrl": url}, headers=headers)


def _xet_repo(request: Request, instance: str):
    """The repo a CAS request is for, from its signed token (401 if missing/expired/foreign)."""
    ctx = ctx_of(request)
    if instance != ctx.instance_id:
        raise HubHTTPError(404, "Unknown CAS instance")
    ticket = ctx.auth.verify(bearer_token(request) or "")
    if ticket is None or ticket.get("op") != "xet" or ticket.get("scope") != "write":
        raise HubHTTPError(401, "Invalid or expired Xet token")
    repo_type, namespace, name = ticket["repo"]
    try:
        return ctx.storage.get(check_repo_type(repo_type), namespace, name)
    except RepoNotFound:
        raise HubHTTPError(404, "The repo of this Xet token no longer exists") from None


@router.post("/xet-cas/{instance}/v1/xorbs/{prefix}/{xorb_hash}")
async def upload_xorb(request: Request, instance: str, prefix: str, xorb_hash: str):
    _xet_repo(request, instance)
    store = request.app.state.xorbs
    store.path(xorb_hash)  # validates the hash before we accept any data
    handle, tmp = store.new_temp()
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_XORB_SIZE:
                raise HubHTTPError(400, "xorb larger than 64 MiB")
            charge_disk(len(chunk))
            handle.write(chunk)
    except BaseException:  # disconnect, oversize...: drop the partial xorb
        handle.close()
        os.unlink(tmp)
        raise
    inserted = await run_in_threadpool(store.install, handle, tmp, xorb_hash, size)
    return {"was_inserted": inserted}


@router.post("/xet-cas/{instance}/v1/shards")
async def upload_shard(request: Request, instance: str):
    repo = _xet_repo(request, instance)
    body = await read_body(request, MAX_SHARD_SIZE, "A shard")
    await run_in_threadpool(request.app.state.xorbs.ingest_shard, body, repo)
    return {"result": 1}


@router.get("/xet-cas/{instance}/v1/chunks/{prefix}/{chunk_hash}")
async def query_chunk(request: Request, instance: str, prefix: str, chunk_hash: str):
    _xet_repo(request, instance)
    return JSONResponse({"error": "no global deduplication on this hub"}, status_code=404)


@router.api_route("/xet-cas/{instance}/{rest:path}", methods=["GET", "POST", "PUT", "HEAD"])
async def unsupported(request: Request, instance: str, rest: str):
    # xorb-grants, v2 shards/reconstructions...: a 404 makes hf_xet use the v1 routes above.
    return JSONResponse({"error": f"/{rest} is not supported by this hub"}, status_code=404)


@router.post("/v1/telemetry")
async def telemetry(request: Request):
    return {}
