"""The hub's web application: `create_app(root)` returns a FastAPI app serving a Hugging Face
Hub-compatible API from a directory, for models, datasets and spaces.

What unmodified clients need works: huggingface_hub (repos, commits with regular/LFS/Xet files,
downloads, snapshots, refs, history, tree/paths-info), transformers (`from_pretrained`,
`push_to_hub`, remote code) and datasets (`push_to_hub`, `load_dataset`). The routes live in:

* api_repos.py  - create/delete/move repos, settings, branches, tags, whoami, YAML validation
* api_read.py   - repo info, tree, paths-info, refs, commits, file downloads (resolve)
* api_commit.py - preupload and the NDJSON commit endpoint
* lfs.py        - git-lfs batch upload (used with HF_HUB_DISABLE_XET=1 or file-object uploads)
* cas.py        - Xet token + CAS upload endpoints (the default upload path of huggingface_hub)

Large-file uploads: the server does *not* need HF_HUB_DISABLE_XET. It implements the upload half of
the Xet protocol, rebuilding each uploaded file and verifying its sha256, and also the classic
git-lfs protocol, so clients work with or without Xet. Downloads are always plain HTTP.

One server process per root directory: at start-up it deletes the temp files that a crash may have
left (they were never visible to clients)."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI

from . import api_commit, api_read, api_repos, cas, lfs
from .auth import AuthStore
from .web import HubContext, install_error_handlers
from .storage import HubStorage
from .xet_store import XorbStore


def instance_id(root: Path) -> str:
    """A random id fixed for the lifetime of a hub root (see cas.py for why)."""
    path = root / "instance_id"
    if not path.exists():
        path.write_text(secrets.token_hex(8))
    return path.read_text().strip()


def create_app(root: Path | str, *, tree_page_size: int = 1000, clean_tmp: bool = True) -> FastAPI:
    """Build the hub app storing everything under `root` (created if missing)."""
    storage = HubStorage(root)
    if clean_tmp:
        storage.objects.clean_tmp()
    auth = AuthStore(storage.root)
    app = FastAPI(title="talklora-hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = HubContext(storage=storage, auth=auth, tree_page_size=tree_page_size,
                               instance_id=instance_id(storage.root))
    app.state.xorbs = XorbStore(storage.root, storage.objects)
    install_error_handlers(app)

    @app.get("/api/health")
    async def health():
        return {"status": "ok"}

    # Order matters: specific routes first, the catch-all model routes ("/{ns}/{name}/...") last.
    app.include_router(cas.router)
    app.include_router(lfs.router)
    app.include_router(api_repos.router)
    app.include_router(api_commit.router)
    app.include_router(api_read.router)
    return app
