"""Who is calling: the :class:`Principal`, resolved from an API key or an IdP token.

API keys live hashed in the state database (``carafe.state.keys``); each replica
trusts what it read for at most ``state.cache_ttl_s`` (≤ 1 s), so a key revoked on
one replica or by the CLI is refused everywhere within that time. A user the
SCIM directory knows is judged by it: deactivated means refused, and their groups
are the directory's.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from carafe.state import Directory, ImportReport, KeyRecord, Keys, Person, StateConfig, open_state
from carafe.state.keys import secret_matches, split_key

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may use and spend."""

    user: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None  # adapters/models it may use; None = all
    rpm: int = 600
    key_id: str = ""  # the credential: an API key id, "oidc:<sub>" or "bootstrap"
    tpm: int | None = None  # tokens (prompt + generated, max completion reserved) per minute; None = no limit
    team: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def owner(self) -> str:
        """What stored conversations are keyed by: the credential, never the user name."""
        return self.key_id if ":" in self.key_id else f"key:{self.key_id}"

    def may_use(self, model: str) -> bool:
        """Whether this principal may address ``model`` (an adapter name, name@version,
        alias or the base model). ``models`` entries match the name before ``@``."""
        if self.models is None or self.is_admin:
            return True
        name = model.split("@", 1)[0]
        return name in self.models or model in self.models


def key_principal(rec: KeyRecord) -> Principal:
    return Principal(
        user=rec.user,
        groups=tuple(rec.groups),
        roles=tuple(rec.roles),
        models=tuple(rec.models) if rec.models is not None else None,
        rpm=rec.rpm,
        key_id=rec.key_id,
        tpm=rec.tpm,
        team=rec.team,
    )


def bootstrap_matches(key: str, bootstrap: str | None) -> bool:
    """The bootstrap admin key, compared in constant time."""
    return bootstrap is not None and hmac.compare_digest(key.encode(), bootstrap.encode())


class TtlCache(Generic[T]):
    """What a replica read, trusted for ``ttl_s`` (a dict hit on the hot path)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, load: Callable[[], T]) -> T:
        now = self._clock()
        hit = self._items.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[name] = (now + self.ttl_s, value)
        return value

    def forget(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)


class KeyStore:
    """API keys for one process: the state database's keys behind a short cache."""

    def __init__(self, keys: Keys, directory: Directory, *, cache_ttl_s: float = 0.5) -> None:
        self.keys = keys
        self.directory = directory
        self._records: TtlCache[KeyRecord | None] = TtlCache(cache_ttl_s)
        self._people: TtlCache[Person | None] = TtlCache(cache_ttl_s)
        self.imported: ImportReport | None = None

    @classmethod
    def open(cls, data_dir: Path, config: StateConfig | None = None, *, legacy_keys: Path | None = None) -> KeyStore:
        """The keys of the state database ``config`` names (default: SQLite under ``data_dir``)."""
        config = config or StateConfig()
        state = open_state(config, data_dir, legacy_keys=legacy_keys)
        store = cls(state.keys, state.directory, cache_ttl_s=config.cache_ttl_s)
        store.imported = state.imported
        return store

    def create(
        self,
        user: str,
        *,
        groups: list[str] | None = None,
        admin: bool = False,
        models: list[str] | None = None,
        rpm: int = 600,
        tpm: int | None = None,
        team: str | None = None,
        actor: str = "cli",
    ) -> tuple[str, KeyRecord]:
        """Create a key (``admin``: with the admin role); the clear key is returned once."""
        roles = ["admin"] if admin else []
        return self.keys.create(
            user, groups=groups, roles=roles, models=models, rpm=rpm, tpm=tpm, team=team, actor=actor
        )

    def list(self) -> list[KeyRecord]:
        return self.keys.list()

    def revoke(self, key_id: str, *, actor: str = "cli") -> None:
        self.keys.revoke(key_id, actor=actor)
        self._records.forget(key_id)

    def set_limits(
        self, key_id: str, *, rpm: int | None = None, tpm: int | None = None, actor: str = "cli"
    ) -> KeyRecord:
        rec = self.keys.set_limits(key_id, rpm=rpm, tpm=tpm, actor=actor)
        self._records.forget(key_id)
        return rec

    def authenticate(self, key: str) -> Principal | None:
        """The principal for a clear key, or None (unknown, malformed, revoked, deprovisioned)."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        rec = self._records.get(key_id, lambda: self.keys.get(key_id))
        if rec is None or rec.revoked or not secret_matches(rec, secret):
            return None
        return self.judged(key_principal(rec))

    def find_user(self, user: str) -> Principal | None:
        """The principal of ``user``'s newest live key (for `--as USER` debugging)."""
        rec = self.keys.newest_for(user)
        return self.judged(key_principal(rec)) if rec is not None else None

    def person(self, user: str) -> Person | None:
        return self._people.get(user, lambda: self.directory.person(user))

    def judged(self, principal: Principal) -> Principal | None:
        """The principal as the SCIM directory allows it: None when deprovisioned; a
        provisioned user's key groups narrowed to those the directory still gives them."""
        person = self.person(principal.user)
        if person is None:
            return principal
        if not person.active:
            return None
        return replace(principal, groups=tuple(g for g in principal.groups if g in person.groups))
