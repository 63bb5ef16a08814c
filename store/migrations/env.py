"""Alembic environment: always run from ``store.schema.migrate`` on a connection it hands over.

The connection is already inside a transaction (and, on PostgreSQL, holds an advisory lock), so
every revision and the version stamp commit together or not at all.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers the tables, for autogenerate comparisons)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the store's migrations with store.migrate(engine) or `outcomes db upgrade`")

context.configure(connection=connection, target_metadata=SQLModel.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
