"""Budgets per key, user or team over a day or a month — in tokens, in cost or
both — and the spend ledger.

Budgets are enforced on the shared counters (Redis, or this process); the ledger
keeps what each scope was charged (tokens and cost) in the database, flushed by
every replica every few seconds, so spend survives restarts and an in-process
counter starts from it. Cost is kept in integer millionths of the price table's
currency unit (:data:`MICROS`), so Redis adds it exactly.
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
MICROS = 1_000_000  # cost is counted in millionths of the currency unit
MAX_BUDGET_TOKENS = 10**15  # well inside Redis's and the database's 64-bit integers
MAX_BUDGET_COST = 1e12


@dataclass(frozen=True, slots=True)
class BudgetRule:
    scope: str  # key:<id> | user:<name> | team:<name>
    window: Window
    max_tokens: int | None = None
    max_cost: float | None = None  # in the price table's currency unit

    def describe(self) -> str:
        parts = ([f"{self.max_tokens} tokens"] if self.max_tokens is not None else []) + (
            [f"{self.max_cost:g} cost"] if self.max_cost is not None else []
        )
        return f"{' and '.join(parts)} per {self.window}"


@dataclass(frozen=True, slots=True)
class Spent:
    tokens: int = 0
    cost_micros: int = 0


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

    def set(
        self,
        scope: str,
        window: Window,
        max_tokens: int | None = None,
        *,
        max_cost: float | None = None,
        actor: str = "cli",
    ) -> BudgetRule:
        """Set a scope's token and/or cost budget for a window; a part not given is kept."""
        _check_scope(scope)
        if window not in WINDOWS:
            raise InvalidInput(f"a budget window is day or month, not {window!r}", param="window")
        if max_tokens is None and max_cost is None:
            raise InvalidInput("a budget needs max_tokens or max_cost", param="max_cost")
        if max_tokens is not None and not 1 <= max_tokens <= MAX_BUDGET_TOKENS:
            raise InvalidInput(f"max_tokens is between 1 and {MAX_BUDGET_TOKENS}", param="max_tokens")
        if max_cost is not None and not 0 < max_cost <= MAX_BUDGET_COST:
            raise InvalidInput(f"max_cost is above 0 and at most {MAX_BUDGET_COST:g}", param="max_cost")
        with self.db.transaction() as s:
            row = s.scalar(select(Budget).where(Budget.scope == scope, Budget.window == window))
            if row is None:
                row = Budget(scope=scope, window=window)
                s.add(row)
            if max_tokens is not None:
                row.max_tokens = max_tokens
            if max_cost is not None:
                row.max_cost = max_cost
            rule = BudgetRule(scope, window, row.max_tokens, row.max_cost)
            records.record(s, actor, "budget.set", scope, window=window, max_tokens=max_tokens, max_cost=max_cost)
        return rule

    def remove(self, scope: str, window: Window, *, actor: str = "cli") -> bool:
        with self.db.transaction() as s:
            gone = s.execute(delete(Budget).where(Budget.scope == scope, Budget.window == window))
            records.record(s, actor, "budget.remove", scope, window=window)
            return bool(gone.rowcount)  # type: ignore[attr-defined]

    def rules(self) -> list[BudgetRule]:
        with self.db.transaction() as s:
            rows = s.scalars(select(Budget).order_by(Budget.scope, Budget.window))
            return [BudgetRule(r.scope, r.window, r.max_tokens, r.max_cost) for r in rows]  # type: ignore[arg-type]

    def spent(self, scope: str, window: Window) -> int:
        """Tokens the scope was charged in the current period (flushed spend only)."""
        return self.usage(scope, window).tokens

    def usage(self, scope: str, window: Window) -> Spent:
        """Tokens and cost the scope was charged in the current period (flushed spend only)."""
        with self.db.transaction() as s:
            q = select(Spend.tokens, Spend.cost_micros).where(Spend.scope == scope, Spend.period == period(window))
            row = s.execute(q).first()
            return Spent(int(row[0] or 0), int(row[1] or 0)) if row is not None else Spent()


class SpendLedger:
    """Charges gathered in memory and added to the ``spend`` table by :meth:`flush`.
    A refund is a negative charge (the unused part of a reservation)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def charge(self, scopes: list[str], tokens: int, cost_micros: int = 0, *, at: dt.datetime | None = None) -> None:
        """Add to the periods that contain ``at`` (default now): a refund goes back to
        the day and month its reservation was charged to, even after midnight."""
        with self._lock:
            for scope in scopes:
                for window in WINDOWS:
                    k = (scope, period(window, at))
                    t, c = self._pending.get(k, (0, 0))
                    self._pending[k] = (t + tokens, c + cost_micros)

    def flush(self) -> int:
        """Write what was charged since the last flush; returns the rows touched."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (scope, per), (tokens, cost) in pending.items():
            self._add(scope, per, tokens, cost)
        return len(pending)

    def _add(self, scope: str, per: str, tokens: int, cost: int) -> None:
        for _ in range(3):  # two replicas may insert the same new row: the loser updates
            try:
                with self.db.transaction() as s:
                    q = update(Spend).where(Spend.scope == scope, Spend.period == per)
                    q = q.values(tokens=Spend.tokens + tokens, cost_micros=Spend.cost_micros + cost)
                    if s.execute(q).rowcount == 0:  # type: ignore[attr-defined]
                        s.add(Spend(scope=scope, period=per, tokens=tokens, cost_micros=cost))
                return
            except IntegrityError:
                continue
