"""`talklora-hub space ...`: build, serve and push the routing Space (spaces/talklora-routing/).

    talklora-hub space build [--out DIR] [--models ID ...] [--check]
    talklora-hub space serve [--models ID ...] [--port N] [--zoo REPO] [--allow-any-model]
    talklora-hub space push OWNER/NAME [--models ID ...] [--private] [--token T]
    talklora-hub space screenshot --models ID ... --out PNG [--text T] [--layer L] [--module M]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from . import add_command_group


def register(subparsers) -> None:
    actions = add_command_group(subparsers, "space", help="the routing Space: build, serve locally, push",
                                description=__doc__.splitlines()[0])

    build = actions.add_parser("build", help="write the deployable folder (default spaces/talklora-routing)")
    build.add_argument("--out", default=None, help="folder to write (default: spaces/talklora-routing)")
    build.add_argument("--models", nargs="+", default=None, help="model ids for the README's `models:`")
    build.add_argument("--check", action="store_true", help="only report whether the folder is up to date")
    build.set_defaults(func=run_build)

    serve = actions.add_parser("serve", help="run the Space locally on 127.0.0.1")
    serve.add_argument("--models", nargs="+", default=None,
                       help="model ids to offer: local folders or repo ids (resolved against HF_ENDPOINT)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--zoo", default=None, help="zoo index to list models from (sets TALKLORA_ZOO_INDEX)")
    serve.add_argument("--allow-any-model", action="store_true",
                       help="also accept ids typed in the picker (their code runs here)")
    serve.set_defaults(func=run_serve)

    push = actions.add_parser("push", help="upload a fresh build as a Space repo (any HF_ENDPOINT)")
    push.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME of the Space repo (created if missing)")
    push.add_argument("--models", nargs="+", default=None, help="model ids for the README's `models:`")
    push.add_argument("--private", action="store_true", help="create the Space private")
    push.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN / the saved login)")
    push.add_argument("--message", default="Update the TalkLoRA routing Space", help="commit message")
    push.set_defaults(func=run_push)

    shot = actions.add_parser("screenshot", help="save a PNG of the app on real models (needs playwright + chromium)")
    shot.add_argument("--models", nargs="+", required=True, help="model ids to offer; the first is analysed")
    shot.add_argument("--out", default="docs/space_screenshot.png", help="PNG to write")
    shot.add_argument("--text", default=None, help="text to analyse (default: the app's first example)")
    shot.add_argument("--layer", default=None, help='layer to select, as labelled, e.g. "layer 12"')
    shot.add_argument("--module", default=None, help='module to select, e.g. "mlp.up_proj"')
    shot.add_argument("--width", type=int, default=1400)
    shot.set_defaults(func=run_screenshot)


def run_build(args: argparse.Namespace) -> int:
    from ..space.build import SPACE_DIR, build_space, check_space

    out = args.out or SPACE_DIR
    if args.check:
        problems = check_space(out, args.models)
        for problem in problems:
            print(f"{out}: {problem}", file=sys.stderr)
        if problems:
            print("Run `talklora-hub space build` to regenerate it.", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    path = build_space(out, args.models)
    print(f"wrote {path}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if args.zoo:
        os.environ["TALKLORA_ZOO_INDEX"] = args.zoo
    from ..space.app import launch_app

    launch_app(args.models, host=args.host, port=args.port, allow_any=args.allow_any_model or None)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from huggingface_hub import HfApi

    from ..space.build import build_to_temp

    folder = build_to_temp(args.models)
    try:
        api = HfApi(token=args.token)
        try:
            api.create_repo(args.repo_id, repo_type="space", space_sdk="gradio", private=args.private,
                            exist_ok=True)
            commit = api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, repo_type="space",
                                       commit_message=args.message, ignore_patterns=["__pycache__/*", "*.pyc"])
        except Exception as error:  # noqa: BLE001  reported, not raised: a CLI answer
            print(f"Could not push the Space to {args.repo_id} on {api.endpoint}: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 1
        print(f"pushed {args.repo_id} ({getattr(commit, 'oid', '')[:10]}) to {api.endpoint}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_screenshot(args: argparse.Namespace) -> int:
    from ..space.screenshot import serve_and_capture

    try:
        path = serve_and_capture(args.models, args.out, text=args.text, layer=args.layer, module=args.module,
                                 width=args.width)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
