"""Users, organisations, access tokens and signed tickets, kept under ``<root>/auth/``.

* ``users.json``  - {"users": {name: {"created_at"}}, "orgs": {org: {"members": [names]}}}
* ``tokens.json`` - {sha256(token): {"user", "role", "name", "created_at"}}: only token *hashes*
  are stored, so reading the file does not leak credentials.
* ``secret``      - random key signing short-lived tickets (pre-signed LFS upload URLs, Xet CAS
  tokens); those requests carry no Authorization header, exactly as on the real Hub.
* ``default_token.json`` - the token of the default user, created on first start (mode 0600) so
  a local operator or `LocalHub` can pick it up.

Permissions: anyone may read public repos; private repos are visible only to their namespace's
user or org members (others get 404, as if it did not exist); writing needs a "write" token whose
user is the namespace or a member of the namespace org.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .locks import ExclusiveLock
from .objects import atomic_write
from .paths import check_namespace
from .tree import now_iso

ROLES = ("read", "write")


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a user authenticated by a token with a role."""

    user: str
    role: str
    token_name: str
    orgs: tuple[str, ...]

    def can_write_namespace(self, namespace: str) -> bool:
        return self.role == "write" and (namespace == self.user or namespace in self.orgs)

    def can_see_namespace(self, namespace: str) -> bool:
        return namespace == self.user or namespace in self.orgs


def can_read(principal: Principal | None, namespace: str, private: bool) -> bool:
    return not private or (principal is not None and principal.can_see_namespace(namespace))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AuthStore:
    """Reads and writes the auth files of one hub root."""

    def __init__(self, root: Path | str):
        self.dir = Path(root).absolute() / "auth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(root).absolute() / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[tuple, dict]] = {}
        self._secret: bytes | None = None

    # -- files

    def _read(self, name: str, default: dict) -> dict:
        path = self.dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            return json.loads(json.dumps(default))
        # Files are replaced atomically (new inode), so this key changes on every write even when
        # two writes fall within the filesystem's timestamp granularity.
        mtime = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        cached = self._cache.get(name)
        if cached and cached[0] == mtime:
            return json.loads(json.dumps(cached[1]))
        data = json.loads(path.read_text())
        self._cache[name] = (mtime, data)
        return json.loads(json.dumps(data))

    def _write(self, name: str, data: dict, mode: int = 0o600) -> None:
        atomic_write(self.dir / name, json.dumps(data, indent=1, sort_keys=True).encode(), self._tmp)
        os.chmod(self.dir / name, mode)
        self._cache.pop(name, None)

    def _lock(self) -> ExclusiveLock:
        return ExclusiveLock(self.dir / ".lock")

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            path = self.dir / "secret"
            with self._lock():
                if not path.exists():
                    atomic_write(path, secrets.token_bytes(32), self._tmp)
                    os.chmod(path, 0o600)
            self._secret = path.read_bytes()
        return self._secret

    # -- users and orgs

    def users(self) -> dict:
        return self._read("users.json", {"users": {}, "orgs": {}})

    def create_user(self, name: str) -> None:
        check_namespace(name)
        with self._lock():
            data = self.users()
            if name in data["orgs"]:
                raise ValueError(f"{name!r} is an organisation")
            data["users"].setdefault(name, {"created_at": now_iso()})
            self._write("users.json", data, 0o644)

    def create_org(self, name: str, members: list[str] | tuple[str, ...] = ()) -> None:
        check_namespace(name)
        with self._lock():
            data = self.users()
            if name in data["users"]:
                raise ValueError(f"{name!r} is a user")
            org = data["orgs"].setdefault(name, {"members": []})
            for member in members:
                if member not in data["users"]:
                    raise ValueError(f"Unknown user {member!r}")
                if member not in org["members"]:
                    org["members"].append(member)
            self._write("users.json", data, 0o644)

    def orgs_of(self, user: str) -> tuple[str, ...]:
        orgs = self.users()["orgs"]
        return tuple(sorted(name for name, org in orgs.items() if user in org["members"]))

    # -- tokens

    def create_token(self, user: str, role: str = "write", name: str | None = None) -> str:
        """Create an access token for `user` (created if needed) and return it; only its hash is kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.create_user(user)
        token = "hf_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")
        with self._lock():
            tokens = self._read("tokens.json", {})
            tokens[hashlib.sha256(token.encode()).hexdigest()] = {
                "user": user, "role": role, "name": name or f"{user}-{role}", "created_at": now_iso(),
            }
            self._write("tokens.json", tokens)
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal a token belongs to, or None for an unknown token."""
        entry = self._read("tokens.json", {}).get(hashlib.sha256(token.encode()).hexdigest())
        if entry is None:
            return None
        return Principal(entry["user"], entry["role"], entry["name"], self.orgs_of(entry["user"]))

    def default_token(self, user: str = "user") -> tuple[str, str]:
        """(user, token) of the default account, created the first time. Stored in clear in a
        0600 file: this is a local development hub and the operator needs to read it."""
        path = self.dir / "default_token.json"
        if path.exists():
            data = json.loads(path.read_text())
            if self.authenticate(data["token"]) is not None:
                return data["user"], data["token"]
        token = self.create_token(user, "write", name="default")
        self._write("default_token.json", {"user": user, "token": token})
        return user, token

    # -- signed tickets

    def sign(self, payload: dict, ttl: float = 3600.0) -> str:
        body = dict(payload, exp=int(time.time() + ttl))
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(self.secret, raw, hashlib.sha256).digest()
        return f"{_b64(raw)}.{_b64(mac)}"

    def verify(self, ticket: str) -> dict | None:
        """The payload of a valid, unexpired ticket; None otherwise."""
        try:
            raw_b64, mac_b64 = ticket.split(".", 1)
            raw = _unb64(raw_b64)
            mac = _unb64(mac_b64)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, hmac.new(self.secret, raw, hashlib.sha256).digest()):
            return None
        payload = json.loads(raw)
        if payload.get("exp", 0) < time.time():
            return None
        return payload
