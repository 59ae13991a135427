"""Admin-action records: who created or revoked a key, provisioned a user, set a
budget. Written in the same transaction as the change, so a change never lands
without its record (nor a record without its change)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carafe.state.database import Database
from carafe.state.schema import AdminAction


@dataclass(frozen=True, slots=True)
class ActionRecord:
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def record(session: Session, actor: str, action: str, target: str, **detail: Any) -> None:
    session.add(AdminAction(at=time.time(), actor=actor, action=action, target=target, detail=detail))


def recent(db: Database, limit: int = 100) -> list[ActionRecord]:
    """The newest ``limit`` records, newest first."""
    with db.transaction() as s:
        rows = s.scalars(select(AdminAction).order_by(AdminAction.id.desc()).limit(limit)).all()
        return [ActionRecord(r.at, r.actor, r.action, r.target, dict(r.detail)) for r in rows]
