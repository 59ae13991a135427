"""API keys and the Principal they resolve to.

Keys look like ``crf_<key id>_<secret>``. Only ``sha256(secret)`` is stored (keys
are 256-bit random, so a fast hash is enough — as GitHub and Stripe tokens do);
the clear key is printed once at creation and never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carafe.errors import InvalidInput, NotFound

KEY_PREFIX = "crf"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from an API key."""

    user: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None  # adapters/models it may use; None = all
    rpm: int = 600
    key_id: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def may_use(self, model: str) -> bool:
        """Whether this principal may address ``model`` (an adapter name, name@version,
        alias or the base model). ``models`` entries match the name before ``@``."""
        if self.models is None or self.is_admin:
            return True
        name = model.split("@", 1)[0]
        return name in self.models or model in self.models


@dataclass(slots=True)
class KeyRecord:
    key_id: str
    secret_sha256: str
    user: str
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    models: list[str] | None = None
    rpm: int = 600
    created_at: float = 0.0
    revoked: bool = False

    def principal(self) -> Principal:
        return Principal(
            user=self.user,
            groups=tuple(self.groups),
            roles=tuple(self.roles),
            models=tuple(self.models) if self.models is not None else None,
            rpm=self.rpm,
            key_id=self.key_id,
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Hashed API keys in one JSON file (written atomically, mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._mtime: float | None = None
        self._load()

    # persistence -----------------------------------------------------------
    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return
        if self._mtime == st.st_mtime:
            return
        data = json.loads(self.path.read_text() or "{}")
        self._records = {k["key_id"]: KeyRecord(**k) for k in data.get("keys", [])}
        self._mtime = st.st_mtime

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {"keys": [asdict(r) for r in self._records.values()]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime

    def reload(self) -> None:
        with self._lock:
            self._load()

    # API -------------------------------------------------------------------
    def create(
        self,
        user: str,
        *,
        groups: list[str] | None = None,
        admin: bool = False,
        roles: list[str] | None = None,
        models: list[str] | None = None,
        rpm: int = 600,
    ) -> tuple[str, KeyRecord]:
        """Create a key; returns ``(clear key, record)``. The clear key is not stored."""
        if not user or not user.strip():
            raise InvalidInput("a key needs a user", param="user")
        if rpm < 1:
            raise InvalidInput("rpm must be at least 1", param="rpm")
        role_list = sorted(set(roles or []) | ({"admin"} if admin else set()))
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        rec = KeyRecord(
            key_id=key_id,
            secret_sha256=_hash(secret),
            user=user.strip(),
            groups=sorted({g.strip() for g in groups or [] if g.strip()}),
            roles=role_list,
            models=models,
            rpm=rpm,
            created_at=time.time(),
        )
        with self._lock:
            self._load()
            self._records[key_id] = rec
            self._save()
        return f"{KEY_PREFIX}_{key_id}_{secret}", rec

    def authenticate(self, key: str) -> Principal | None:
        """The principal for a clear key, or None (unknown, malformed or revoked)."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        _, key_id, secret = parts
        with self._lock:
            self._load()
            rec = self._records.get(key_id)
        if rec is None or rec.revoked:
            return None
        if not hmac.compare_digest(rec.secret_sha256, _hash(secret)):
            return None
        return rec.principal()

    def find_user(self, user: str) -> Principal | None:
        """The principal of ``user``'s newest live key (for `--as USER` debugging)."""
        with self._lock:
            self._load()
            recs = [r for r in self._records.values() if r.user == user and not r.revoked]
        if not recs:
            return None
        return max(recs, key=lambda r: r.created_at).principal()

    def list(self) -> list[KeyRecord]:
        with self._lock:
            self._load()
            return sorted(self._records.values(), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> None:
        with self._lock:
            self._load()
            rec = self._records.get(key_id)
            if rec is None:
                raise NotFound(f"no key with id {key_id!r}", param="key_id")
            rec.revoked = True
            self._save()
