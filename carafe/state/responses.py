"""Stored /v1/responses conversations, for ``previous_response_id`` on any replica.

A conversation belongs to the credential that made it — one API key
(``key:<id>``) or one IdP subject (``oidc:<issuer>#<sub>``) — never to a user
name that a new key could borrow.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select

from carafe.state.database import Database
from carafe.state.schema import StoredResponse


class Conversations:
    def __init__(self, db: Database, *, retention_s: float, max_items: int) -> None:
        self.db = db
        self.retention_s = retention_s
        self.max_items = max_items
        self._puts = 0

    @property
    def enabled(self) -> bool:
        return self.retention_s > 0 and self.max_items > 0

    def put(self, response_id: str, owner: str, messages: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        now = time.time()
        with self.db.transaction() as s:
            s.merge(
                StoredResponse(
                    id=response_id, owner=owner, messages=messages, created_at=now, expires_at=now + self.retention_s
                )
            )
        self._puts += 1
        if self._puts % 100 == 1:
            self.prune()

    def get(self, response_id: str, owner: str) -> list[dict[str, Any]] | None:
        """The conversation, or None when unknown, expired or another owner's (fail closed)."""
        with self.db.transaction() as s:
            row = s.get(StoredResponse, response_id)
            if row is None or row.owner != owner or row.expires_at < time.time():
                return None
            return list(row.messages)

    def prune(self) -> None:
        """Drop expired conversations, then the oldest beyond ``max_items``."""
        with self.db.transaction() as s:
            s.execute(delete(StoredResponse).where(StoredResponse.expires_at < time.time()))
            count = s.scalar(select(func.count()).select_from(StoredResponse)) or 0
            if count > self.max_items:
                oldest = select(StoredResponse.id).order_by(StoredResponse.created_at).limit(count - self.max_items)
                s.execute(delete(StoredResponse).where(StoredResponse.id.in_(oldest.scalar_subquery())))
