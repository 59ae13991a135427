"""Token budgets per key, user or team over a day or a month, and the spend ledger.

Budgets are enforced on the shared counters (Redis, or this process); the ledger
keeps what each scope was charged in the database, flushed by every replica every
few seconds, so spend survives restarts and an in-process counter starts from it.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from carafe.errors import InvalidInput
from carafe.state import records
from carafe.state.database import Database
from carafe.state.schema import Budget, Spend

Window = Literal["day", "month"]
WINDOWS: tuple[Window, ...] = ("day", "month")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    scope: str  # key:<id> | user:<name> | team:<name>
    window: Window
    max_tokens: int


def period(window: Window, now: dt.datetime | None = None) -> str:
    """The calendar period (UTC) a charge made ``now`` falls in: ``2026-12-06`` or ``2026-12``."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%d") if window == "day" else now.strftime("%Y-%m")


def seconds_left(window: Window, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        end = start + dt.timedelta(days=1)
    else:
        first = start.replace(day=1)
        end = (first + dt.timedelta(days=32)).replace(day=1)
    return max(1.0, (end - now).total_seconds())


def _check_scope(scope: str) -> None:
    kind, _, name = scope.partition(":")
    if kind not in ("key", "user", "team") or not name:
        raise InvalidInput(f"a budget scope is key:<id>, user:<name> or team:<name>, not {scope!r}", param="scope")


class Budgets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, scope: str, window: Window, max_tokens: int, *, actor: str = "cli") -> BudgetRule:
        _check_scope(scope)
        if window not in WINDOWS or max_tokens < 1:
            raise InvalidInput("a budget needs a window (day|month) and max_tokens >= 1", param="max_tokens")
        with self.db.transaction() as s:
            s.execute(delete(Budget).where(Budget.scope == scope, Budget.window == window))
            s.add(Budget(scope=scope, window=window, max_tokens=max_tokens))
            records.record(s, actor, "budget.set", scope, window=window, max_tokens=max_tokens)
        return BudgetRule(scope, window, max_tokens)

    def rules(self) -> list[BudgetRule]:
        with self.db.transaction() as s:
            rows = s.scalars(select(Budget).order_by(Budget.scope, Budget.window))
            return [BudgetRule(r.scope, r.window, r.max_tokens) for r in rows]  # type: ignore[arg-type]

    def spent(self, scope: str, window: Window) -> int:
        with self.db.transaction() as s:
            return int(s.scalar(select(Spend.tokens).where(Spend.scope == scope, Spend.period == period(window))) or 0)


class SpendLedger:
    """Charges gathered in memory and added to the ``spend`` table by :meth:`flush`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def charge(self, scopes: list[str], tokens: int) -> None:
        with self._lock:
            for scope in scopes:
                for window in WINDOWS:
                    k = (scope, period(window))
                    self._pending[k] = self._pending.get(k, 0) + tokens

    def flush(self) -> int:
        """Write what was charged since the last flush; returns the rows touched."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (scope, per), tokens in pending.items():
            self._add(scope, per, tokens)
        return len(pending)

    def _add(self, scope: str, per: str, tokens: int) -> None:
        for _ in range(3):  # two replicas may insert the same new row: the loser updates
            try:
                with self.db.transaction() as s:
                    q = update(Spend).where(Spend.scope == scope, Spend.period == per)
                    if s.execute(q.values(tokens=Spend.tokens + tokens)).rowcount == 0:  # type: ignore[attr-defined]
                        s.add(Spend(scope=scope, period=per, tokens=tokens))
                return
            except IntegrityError:
                continue
