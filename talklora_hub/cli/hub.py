"""`talklora-hub hub ...` commands: run the embedded Hub server and manage its accounts.

    talklora-hub hub serve --root ./hub-data [--host 127.0.0.1] [--port 8765]
    talklora-hub hub create-token --root ./hub-data --user alice [--role read]

Point clients at a running server with ``HF_ENDPOINT=http://127.0.0.1:8765`` and ``HF_TOKEN``
(the default token is printed at start-up and kept in ``<root>/auth/default_token.json``)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from . import add_command_group

DEFAULT_PORT = 8765


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..localhub.auth import AuthStore
    from ..localhub.server import create_app

    root = Path(args.root).absolute()
    app = create_app(root, tree_page_size=args.tree_page_size)
    user, token = AuthStore(root).default_token(args.user)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    server = uvicorn.Server(config)
    if args.fd is not None:
        # LocalHub passes a listening socket it already bound, so the port is known before we start
        # and survives a restart of this process.
        sock = socket.socket(fileno=args.fd)
        where = "%s:%d" % sock.getsockname()[:2]
        sockets = [sock]
    else:
        where = f"{args.host}:{args.port}"
        sockets = None
    print(f"talklora-hub serving {root} on http://{where}", flush=True)
    print(f"default user {user!r}, token in {root / 'auth' / 'default_token.json'}", flush=True)
    if args.print_token:
        print(f"HF_TOKEN={token}", flush=True)
    server.run(sockets=sockets)
    return 0


def _create_token(args: argparse.Namespace) -> int:
    from ..localhub.auth import AuthStore

    store = AuthStore(Path(args.root).absolute())
    for org in args.org or ():
        store.create_user(args.user)
        store.create_org(org, [args.user])
    print(store.create_token(args.user, args.role))
    return 0


def register(subparsers) -> None:
    """Add the `hub` command group to the talklora-hub CLI."""
    hub_commands = add_command_group(subparsers, "hub", help="run and manage the embedded Hugging Face Hub-compatible "
                                     "server", description=__doc__.splitlines()[0], metavar="HUB_COMMAND")

    serve = hub_commands.add_parser("serve", help="serve a hub stored in a directory")
    serve.add_argument("--root", required=True, help="directory holding repos, objects and accounts")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    serve.add_argument("--user", default="user", help="name of the default user created on first start")
    serve.add_argument("--print-token", action="store_true", help="print the default user's token")
    serve.add_argument("--log-level", default="warning")
    serve.add_argument("--access-log", action="store_true")
    serve.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--tree-page-size", type=int, default=1000, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    token = hub_commands.add_parser("create-token", help="create an access token for a user")
    token.add_argument("--root", required=True)
    token.add_argument("--user", required=True, help="user name (created if missing)")
    token.add_argument("--role", choices=("read", "write"), default="write")
    token.add_argument("--org", action="append", help="also make the user a member of this organisation")
    token.set_defaults(func=_create_token)

