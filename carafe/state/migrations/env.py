"""Alembic's environment for the state schema: always run on a connection the
caller hands in (``Database.migrate``), never from an ini file's URL."""

from __future__ import annotations

from alembic import context

from carafe.state.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
