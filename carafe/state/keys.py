"""API keys in the state database.

Keys look like ``crf_<key id>_<secret>``. Only ``sha256(secret)`` is stored (keys
are 256-bit random, so a fast hash is enough — as GitHub and Stripe tokens do);
the clear key is printed once at creation and never written anywhere. A revocation
is one ``UPDATE`` that sets ``revoked_at``: no writer can undo another's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from carafe.errors import InvalidInput, NotFound
from carafe.state import records
from carafe.state.database import Database
from carafe.state.schema import ApiKey, StateMeta, Team

KEY_PREFIX = "crf"
MAX_RATE = 2**31 - 1  # rpm and tpm are 32-bit columns


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    secret_sha256: str
    user: str
    groups: list[str]
    roles: list[str]
    models: list[str] | None
    rpm: int
    tpm: int | None
    team: str | None
    created_at: float
    revoked: bool

    def public(self) -> dict[str, object]:
        """Everything but the hash (what `keys list` and the admin API show)."""
        return {
            "key_id": self.key_id,
            "user": self.user,
            "groups": self.groups,
            "roles": self.roles,
            "models": self.models,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "team": self.team,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import of a legacy ``keys.json`` took."""

    source: Path
    imported: list[str]
    skipped: list[str]  # key ids already in the database
    already_done: bool = False

    def summary(self) -> str:
        if self.already_done:
            return f"{self.source} was imported before; nothing to do"
        took = ", ".join(self.imported) or "none"
        return f"imported {len(self.imported)} key(s) from {self.source} ({took}); {len(self.skipped)} already present"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed clear key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(record: KeyRecord, secret: str) -> bool:
    return hmac.compare_digest(record.secret_sha256, hash_secret(secret))


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        secret_sha256=row.secret_sha256,
        user=row.user_name,
        groups=list(row.groups or []),
        roles=list(row.roles or []),
        models=list(row.models) if row.models is not None else None,
        rpm=row.rpm,
        tpm=row.tpm,
        team=row.team,
        created_at=row.created_at,
        revoked=row.revoked_at is not None,
    )


def _check_rates(rpm: int | None, tpm: int | None) -> None:
    """Requests and tokens per minute, where given, between 1 and MAX_RATE (400 naming the field)."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not 1 <= value <= MAX_RATE:
            raise InvalidInput(f"{name} must be between 1 and {MAX_RATE}", param=name)


class Keys:
    """Create, find, list and revoke keys; every change leaves an admin-action record."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        user: str,
        *,
        groups: list[str] | None = None,
        roles: list[str] | None = None,
        models: list[str] | None = None,
        rpm: int = 600,
        tpm: int | None = None,
        team: str | None = None,
        actor: str = "cli",
    ) -> tuple[str, KeyRecord]:
        """Create a key; returns ``(clear key, record)``. The clear key is not stored."""
        if not user or not user.strip():
            raise InvalidInput("a key needs a user", param="user")
        _check_rates(rpm, tpm)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKey(
            key_id=key_id,
            secret_sha256=hash_secret(secret),
            user_name=user.strip(),
            groups=sorted({g.strip() for g in groups or [] if g.strip()}),
            roles=sorted(set(roles or [])),
            models=models,
            rpm=rpm,
            tpm=tpm,
            team=team or None,
            created_at=time.time(),
            source="created",
        )
        with self.db.transaction() as s:
            if team and s.get(Team, team) is None:
                s.add(Team(name=team, created_at=time.time()))
                s.flush()
            s.add(row)
            records.record(s, actor, "key.create", key_id, user=row.user_name, groups=row.groups, roles=row.roles)
        return f"{KEY_PREFIX}_{key_id}_{secret}", _record(row)

    def get(self, key_id: str) -> KeyRecord | None:
        with self.db.transaction() as s:
            row = s.get(ApiKey, key_id)
            return _record(row) if row is not None else None

    def list(self) -> list[KeyRecord]:
        with self.db.transaction() as s:
            return [_record(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def newest_for(self, user: str) -> KeyRecord | None:
        """``user``'s newest live key (for `--as USER` debugging)."""
        with self.db.transaction() as s:
            q = select(ApiKey).where(ApiKey.user_name == user, ApiKey.revoked_at.is_(None))
            row = s.scalars(q.order_by(ApiKey.created_at.desc()).limit(1)).first()
            return _record(row) if row is not None else None

    def revoke(self, key_id: str, *, actor: str = "cli") -> None:
        """Revoke a key: one UPDATE, committed before this returns."""
        with self.db.transaction() as s:
            res = s.execute(update(ApiKey).where(ApiKey.key_id == key_id).values(revoked_at=time.time()))
            if res.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no key with id {key_id!r}", param="key_id")
            records.record(s, actor, "key.revoke", key_id)

    def set_limits(
        self, key_id: str, *, rpm: int | None = None, tpm: int | None = None, actor: str = "cli"
    ) -> KeyRecord:
        """Change a live key's requests and tokens per minute (a limit not given is kept)."""
        _check_rates(rpm, tpm)
        with self.db.transaction() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise NotFound(f"no live key with id {key_id!r}", param="key_id")
            row.rpm = rpm if rpm is not None else row.rpm
            row.tpm = tpm if tpm is not None else row.tpm
            records.record(s, actor, "key.limits", key_id, rpm=row.rpm, tpm=row.tpm)
            return _record(row)

    def import_json(self, path: Path) -> ImportReport | None:
        """Import a legacy ``keys.json`` once (None when there is no such file)."""
        if not path.is_file():
            return None
        marker = f"import:{path.resolve()}"
        data = json.loads(path.read_text() or "{}")
        try:
            return self._import(path, marker, data)
        except IntegrityError:  # another replica imported it at the same moment
            return ImportReport(path, [], [], already_done=True)

    def _import(self, path: Path, marker: str, data: dict[str, Any]) -> ImportReport:
        taken: list[str] = []
        skipped: list[str] = []
        with self.db.transaction() as s:
            if s.get(StateMeta, marker) is not None:
                return ImportReport(path, [], [], already_done=True)
            for item in data.get("keys", []):
                key_id = str(item["key_id"])
                if s.get(ApiKey, key_id) is not None:
                    skipped.append(key_id)
                    continue
                s.add(_legacy_row(item))
                taken.append(key_id)
            s.add(StateMeta(name=marker, value=json.dumps({"imported": taken, "skipped": skipped, "at": time.time()})))
            records.record(s, "import", "key.import", str(path), imported=taken, skipped=skipped)
        return ImportReport(path, taken, skipped)


def _legacy_row(item: dict[str, object]) -> ApiKey:
    revoked = bool(item.get("revoked"))
    created = float(item.get("created_at") or time.time())  # type: ignore[arg-type]
    return ApiKey(
        key_id=str(item["key_id"]),
        secret_sha256=str(item["secret_sha256"]),
        user_name=str(item["user"]),
        groups=list(item.get("groups") or []),  # type: ignore[call-overload]
        roles=list(item.get("roles") or []),  # type: ignore[call-overload]
        models=item.get("models"),
        rpm=int(item.get("rpm") or 600),  # type: ignore[call-overload]
        tpm=None,
        created_at=created,
        revoked_at=created if revoked else None,
        source="keys.json",
    )
