"""Carafe's shared state: what every replica and the CLI must agree on.

Keys (hashed), the IdP-provisioned directory, budgets and spend, stored
conversations and admin-action records live in one database — SQLite under
``data_dir`` by default, PostgreSQL when ``state.database_url`` is set — with one
schema and Alembic migrations shipped in this package. The counters that limits
count on live in Redis or in-process (``carafe.gateway.ratelimit``).

This package imports no other Carafe package but the error kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carafe.state.budgets import BudgetRule, Budgets, SpendLedger
from carafe.state.config import StateConfig
from carafe.state.database import Database, sqlite_url
from carafe.state.directory import Directory, Group, Person
from carafe.state.errors import StateUnavailable
from carafe.state.keys import ImportReport, KeyRecord, Keys
from carafe.state.records import ActionRecord
from carafe.state.responses import Conversations

__all__ = [
    "ActionRecord",
    "BudgetRule",
    "Budgets",
    "Conversations",
    "Database",
    "Directory",
    "Group",
    "ImportReport",
    "KeyRecord",
    "Keys",
    "Person",
    "SpendLedger",
    "State",
    "StateConfig",
    "StateUnavailable",
    "database_url",
    "open_state",
]


@dataclass
class State:
    """The state database and the stores over it, for one process."""

    db: Database
    keys: Keys
    directory: Directory
    budgets: Budgets
    ledger: SpendLedger
    imported: ImportReport | None = None

    def close(self) -> None:
        self.ledger.flush()
        self.db.close()


def database_url(config: StateConfig, data_dir: Path) -> str:
    if config.database_url is not None:
        return config.database_url.get_secret_value()
    return sqlite_url(Path(data_dir).resolve() / "state.db")


def open_state(config: StateConfig, data_dir: Path, *, legacy_keys: Path | None = None) -> State:
    """Open (and migrate) the state database; import a legacy ``keys.json`` once."""
    db = Database.open(database_url(config, data_dir), pool_size=config.pool_size)
    keys = Keys(db)
    report = keys.import_json(legacy_keys) if legacy_keys is not None else None
    return State(db, keys, Directory(db), Budgets(db), SpendLedger(db), report)
