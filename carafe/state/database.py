"""One handle on the state database: the engine, short transactions, and the schema
brought to the newest migration at open.

SQLite (the embedded default, a file under ``data_dir``) runs in WAL mode with a
busy timeout, so the CLI and a gateway write beside each other without losing a
row; PostgreSQL (``state.database_url``) is shared by every replica. Every change
is one short transaction of single-row statements (no read-modify-write of a whole
file), so two writers can never undo each other's revocation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from filelock import FileLock
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from carafe.state.errors import StateUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x6361726166  # "caraf": one migrating replica at a time


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """The state database of one process (the gateway or one CLI command)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> Database:
        """Open and migrate to the newest schema (idempotent; concurrent openers wait for one)."""
        if url.startswith("sqlite:///"):
            _create_private(Path(url.removeprefix("sqlite:///")))
        db = cls(url, pool_size=pool_size)
        db.migrate()
        return db

    def migrate(self) -> None:
        try:
            if self.is_sqlite:
                lock_path = self.url.removeprefix("sqlite:///") + ".migrate.lock"
                with FileLock(lock_path, timeout=60), self.engine.begin() as conn:
                    _upgrade(conn)
                return
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                _upgrade(conn)
        except (OperationalError, InterfaceError, OSError) as exc:
            raise StateUnavailable(f"the state database ({self.describe(self.url)}) cannot be opened: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction: committed on success, rolled back on any error. A
        database that cannot be reached is :class:`StateUnavailable` (503), not a 500."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            cause = type(getattr(exc, "orig", None) or exc).__name__
            raise StateUnavailable(
                f"the state database ({self.describe(self.url)}) is unreachable: {cause}",
                code="state_unavailable",
            ) from exc

    @staticmethod
    def describe(url: str) -> str:
        """The URL with any password hidden (for messages and logs)."""
        return make_url(url).render_as_string(hide_password=True)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: str, pool_size: int) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(
            url, pool_size=pool_size, pool_pre_ping=True, pool_timeout=10, connect_args={"connect_timeout": 5}
        )
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never loses a commit
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _upgrade(conn: Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _create_private(path: Path) -> None:
    """The database file holds key hashes and conversations: 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
