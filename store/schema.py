"""Schema versions: the Alembic migrations in ``store/migrations``, run on a connection the store owns.

``migrate(engine)`` brings a store to the newest revision (``store.get_engine`` does it on first use);
``status(engine)`` says where a store stands. A store made before migrations existed (tables from
``SQLModel.metadata.create_all``, no ``alembic_version``) is adopted: if its tables and columns are
those of the first revision it is stamped there and upgraded; otherwise nothing is touched and the
error says what differs. Migrations run in one transaction, under a lock (an advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two processes starting on a new store don't race.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

__all__ = ["MIGRATIONS", "STORE_TABLES", "SchemaError", "SchemaStatus", "head_revision", "migrate", "status"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STORE_TABLES = ("refresh_run", "metric_value", "metric_definition", "quarantined_row")
FIRST_REVISION = "0001"
_PG_LOCK_KEY = 0x6F7574636F6D6573  # "outcomes": one advisory lock for the store's migrations


class SchemaError(RuntimeError):
    """The database holds something the store will not migrate (the message says what and why)."""


@dataclass(frozen=True)
class SchemaStatus:
    url: str              # password hidden
    current: str | None   # None: no alembic_version (empty, or made before migrations)
    head: str
    unversioned_tables: tuple[str, ...]  # store tables present without a version (a pre-migrations store)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    return _scripts().get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _masked(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def status(engine: Engine) -> SchemaStatus:
    """Where the store stands: its revision, the head, and any tables it has without a version."""
    with engine.connect() as connection:
        current = _current(connection)
        unversioned = () if current else tuple(
            t for t in STORE_TABLES if t in set(sa.inspect(connection).get_table_names()))
    return SchemaStatus(_masked(engine), current, head_revision(), unversioned)


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # The sqlite3 driver would otherwise run DDL outside any transaction; take the write lock now.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _adopt(connection: Connection) -> None:
    """Stamp a pre-migrations store at the first revision if its tables are exactly that revision's."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    if not present & set(STORE_TABLES):
        return  # a new, empty store: the first revision creates everything
    first = _scripts().get_revision(FIRST_REVISION).module.schema()
    problems = []
    for table in first.sorted_tables:
        if table.name not in present:
            problems.append(f"table {table.name} is missing")
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        want = {column.name for column in table.columns}
        if want - have:
            problems.append(f"{table.name} lacks column(s) {', '.join(sorted(want - have))}")
        if have - want:
            problems.append(f"{table.name} has unexpected column(s) {', '.join(sorted(have - want))}")
    if problems:
        raise SchemaError(
            f"{_masked(connection.engine)} has store tables but no schema version, and they are not the "
            f"store's first revision ({'; '.join(problems)}); nothing was changed. Move the data to a new "
            "store, or fix the tables and run `outcomes db upgrade`.")
    command.stamp(_config(connection), FIRST_REVISION)


def migrate(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the store to ``revision`` (default: the newest); returns (revision before, revision after).

    Cheap when the store is already there: one read of ``alembic_version``, no lock, no DDL (so a
    read-only database role can use an up-to-date store).
    """
    target = head_revision() if revision == "head" else revision
    with engine.connect() as connection:
        before = _current(connection)
    if before == target:
        return before, before
    try:
        with engine.begin() as connection:
            _lock(connection)
            before = _current(connection)  # another process may have migrated while we waited
            if before is None:
                _adopt(connection)
            command.upgrade(_config(connection), revision)
            after = _current(connection)
    except CommandError as exc:  # e.g. an unknown revision, or one behind the store's
        raise SchemaError(f"{_masked(engine)}: cannot migrate to {revision!r}: {exc}") from exc
    return before, after
