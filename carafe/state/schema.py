"""The state database's tables, as SQLAlchemy 2 declarative models.

One schema for SQLite (embedded) and PostgreSQL (scale-out); Alembic migrations
under ``migrations/`` create and evolve it, so a table added here needs a new
revision there (a test compares the two).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """An API key: only ``sha256(secret)`` is stored; revocation is a timestamp, never a delete."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(256), index=True)
    team: Mapped[str | None] = mapped_column(String(256), ForeignKey("teams.name"), nullable=True)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    rpm: Mapped[int] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="created")


class Team(Base):
    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class DirectoryUser(Base):
    """A person provisioned by the IdP through SCIM; ``active`` false = deprovisioned."""

    __tablename__ = "directory_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(256), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    display_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[float] = mapped_column(Float)


class DirectoryGroup(Base):
    __tablename__ = "directory_groups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class GroupMember(Base):
    __tablename__ = "directory_members"

    group_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("directory_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("directory_users.id", ondelete="CASCADE"), primary_key=True
    )


class Budget(Base):
    """At most ``max_tokens`` and/or ``max_cost`` (price-table currency) for a scope
    (``key:<id>``, ``user:<name>``, ``team:<name>``) per day or month."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(300))
    window: Mapped[str] = mapped_column(String(8))  # "day" | "month"
    max_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_cost: Mapped[float | None] = mapped_column(Float, nullable=True)


class Spend(Base):
    """Tokens and cost (millionths of the currency unit) a scope was charged in one period
    (``2026-12-06`` or ``2026-12``), flushed by each replica."""

    __tablename__ = "spend"

    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class StoredResponse(Base):
    """A /v1/responses conversation for ``previous_response_id``, owned by one key or IdP subject."""

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(300))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class AdminAction(Base):
    """Who changed what (keys, directory, budgets), from the CLI or the admin API."""

    __tablename__ = "admin_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StateMeta(Base):
    """One-off markers, e.g. that keys.json was imported (and what it held)."""

    __tablename__ = "state_meta"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(4000))
