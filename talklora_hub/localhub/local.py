"""`LocalHub`: run the hub server in a subprocess on 127.0.0.1 for tests, examples and offline work.

    with LocalHub(root=tmp_path / "hub") as hub:
        api = hub.api()                                  # HfApi bound to the server and its token
        api.create_repo("user/tiny", repo_type="model")
        with hub.activate(cache_dir=tmp_path / "cache"): # module-level clients of *this* process
            model.push_to_hub("user/tiny")
            AutoModel.from_pretrained("user/tiny")
        subprocess.run([...], env={**os.environ, **hub.env()})  # or a child process

The server runs in its own process (not a thread) so it can be killed like a real crash
(`kill()`), restarted on the same port and data (`restart()`), and so the test process's client
code never shares an event loop or GIL-bound thread with it. The parent binds the listening socket
and hands it to the child, so the port is known before start-up (no race for a free port); the
parent then closes its copy, so that while no server runs, connections are refused instead of
queueing forever in a backlog nobody accepts from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import talklora_hub

from .auth import AuthStore
from .clients import use_hub


class LocalHub:
    """A hub server process serving the directory `root`.

    Attributes once started: ``endpoint`` (``http://127.0.0.1:PORT``), ``user`` and ``token`` (the
    default account, a write token), ``root`` and ``log_path`` (the server's output)."""

    def __init__(
        self,
        root: str | Path,
        *,
        user: str = "user",
        host: str = "127.0.0.1",
        port: int = 0,
        tree_page_size: int | None = None,
        server_env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        access_log: bool = False,
    ):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.host = host
        self.port = port
        self.tree_page_size = tree_page_size
        self.server_env = dict(server_env or {})
        self.startup_timeout = startup_timeout
        self.access_log = access_log  # log every request to server.log (debugging)
        self.log_path = self.root / "server.log"
        self._auth = AuthStore(self.root)
        self.user, self.token = self._auth.default_token(user)
        self._bound_port: int | None = None
        self._process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://{self.host}:{self._bound_port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while one was started (tests read its memory use from /proc)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, **server_env: str) -> "LocalHub":
        """Start the server (a no-op if running); `server_env` adds environment variables for this
        run only, e.g. ``TALKLORA_HUB_CRASH_AT`` (see faults.py)."""
        if self.running:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # After a restart, take the same port again so the endpoint clients know stays valid.
        listener.bind((self.host, self._bound_port if self._bound_port is not None else self.port))
        listener.listen(128)
        self._bound_port = listener.getsockname()[1]
        fd = listener.fileno()
        command = [sys.executable, "-m", "talklora_hub.cli", "hub", "serve", "--root", str(self.root),
                   "--fd", str(fd), "--user", self.user]
        if self.access_log:
            command += ["--access-log", "--log-level", "info"]
        if self.tree_page_size is not None:
            command += ["--tree-page-size", str(self.tree_page_size)]
        env = dict(os.environ, **self.server_env, **server_env)
        package_parent = str(Path(talklora_hub.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        try:
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, pass_fds=(fd,))
        finally:
            listener.close()  # the child has its own copy; see the module docstring
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"hub server exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.endpoint}/api/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"hub server did not start within {self.startup_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server: an abrupt crash, nothing flushed. `start()` brings it back on the same port."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def restart(self, **server_env: str) -> "LocalHub":
        """Kill (if running) and start again on the same port and data."""
        self.kill()
        return self.start(**server_env)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ accounts

    def create_user(self, name: str, orgs: tuple[str, ...] | list[str] = (), role: str = "write") -> str:
        """Create a user (and make it a member of `orgs`, created if needed); returns a new token."""
        token = self._auth.create_token(name, role)
        for org in orgs:
            self._auth.create_org(org, [name])
        return token

    def create_token(self, user: str | None = None, role: str = "write") -> str:
        return self._auth.create_token(user or self.user, role)

    def create_org(self, name: str, members: list[str] | tuple[str, ...] = ()) -> None:
        self._auth.create_org(name, list(members))

    # ------------------------------------------------------------------ clients

    def env(self, token: str | None = None, *, xet: bool = True) -> dict[str, str]:
        """Environment variables for a client process (merge into os.environ for subprocesses)."""
        env = {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": token or self.token, "HF_HUB_DISABLE_TELEMETRY": "1"}
        if not xet:
            env["HF_HUB_DISABLE_XET"] = "1"
        return env

    def api(self, token: str | None = None):
        """A huggingface_hub.HfApi talking to this server (no global state involved)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=token or self.token)

    @contextlib.contextmanager
    def activate(self, token: str | None = None, *, cache_dir: str | Path | None = None,
                 xet: bool = True) -> Iterator["LocalHub"]:
        """Point this process's huggingface_hub / transformers / datasets at the server for the
        duration of the block (see clients.use_hub for exactly what is patched)."""
        with use_hub(self.endpoint, token or self.token, cache_dir=cache_dir, xet=xet):
            yield self
