"""Database engine from the environment: SQLite (WAL) by default, PostgreSQL in production.

``OUTCOMES_DATABASE_URL`` names the store, e.g. ``postgresql+psycopg://user:password@host/outcomes``
(credentials come from the environment only; anything the store prints shows the URL with the
password hidden). ``get_engine`` migrates the schema to the newest revision on first use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine

from store import models  # noqa: F401  (registers the tables)
from store import schema

_BUSY_TIMEOUT_S = 30

__all__ = ["database_url", "get_engine", "dispose_engine", "init_db", "default_sqlite_path", "safe_url", "checkpoint"]


def default_sqlite_path() -> Path:
    """``var/outcomes.db`` in the project checkout (or the working directory when installed elsewhere)."""
    here = Path(__file__).resolve().parent.parent
    root = here if (here / "pyproject.toml").exists() else Path.cwd()
    return root / "var" / "outcomes.db"


def database_url(url: str | None = None) -> str:
    """The store's URL: the argument, else ``OUTCOMES_DATABASE_URL``, else the default SQLite file.

    A bare ``postgresql://`` (or ``postgres://``) URL means psycopg 3, the driver the store ships with.
    """
    url = url or os.environ.get("OUTCOMES_DATABASE_URL")
    if url:
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                return "postgresql+psycopg://" + url[len(bare):]
        return url
    path = default_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def safe_url(url: str | Engine | None = None) -> str:
    """The store's URL with any password shown as ``***``: the only form to print or log."""
    if isinstance(url, Engine):
        return url.url.render_as_string(hide_password=True)
    return make_url(database_url(url)).render_as_string(hide_password=True)


def _use_wal(cursor) -> None:
    """Switch the file to WAL once (the mode persists in the file), waiting out other connections.

    SQLite answers a journal-mode change with "database is locked" at once, without its busy
    handler, while another connection holds a lock (e.g. several processes opening a new store
    together), so the switch is retried here for up to the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
    # WAL lets readers keep reading the last published run while a refresh writes the next.
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    # No checkpoint on commit: a checkpoint syncs the file to disk, and on ext4 that sync waits for
    # every file the process wrote lately too (a refresh's source cache: 0.7 s of the 4.7 s refresh
    # at scale 1, all of it waiting on the disk). A commit in WAL mode is as durable without it
    # (``synchronous=NORMAL``); ``checkpoint`` runs at the start of each refresh instead, and SQLite
    # checkpoints when the last connection to the file closes.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def checkpoint(engine: Engine) -> tuple[int, int] | None:
    """Copy the SQLite write-ahead log's committed pages into the database file (PASSIVE: readers
    and writers are not waited for; what they hold stays for the next time). Returns (pages in the
    log, pages copied); None on other databases, which manage their own logs."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as conn:
        _busy, logged, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(logged), int(copied)


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    parsed = make_url(url)
    connect_args = {}
    if parsed.get_backend_name() == "postgresql":
        # Unless the URL says otherwise: name the client for the DBA, and don't hang on an unreachable host.
        connect_args = {k: v for k, v in {"application_name": "outcomes-engine", "connect_timeout": 10}.items()
                        if k not in parsed.query}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """A (cached) SQLAlchemy engine for the store, its schema migrated to the newest revision.

    ``migrate=False`` skips the migration (``outcomes db current`` / ``db upgrade`` use it to look first).
    """
    url = database_url(url)
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create(url)
        if migrate and url not in _MIGRATED:
            schema.migrate(engine)
            _MIGRATED.add(url)
    return engine


def dispose_engine(url: str | Engine | None = None) -> None:
    """Close and forget the cached engine for ``url`` (an engine, or every engine when None)."""
    with _LOCK:
        if url is None:
            keys = list(_ENGINES)
        elif isinstance(url, Engine):
            keys = [k for k, e in _ENGINES.items() if e is url]
        else:
            keys = [database_url(url)]
        for key in keys:
            engine = _ENGINES.pop(key, None)
            _MIGRATED.discard(key)
            if engine is not None:
                engine.dispose()


def init_db(engine: Engine) -> None:
    """Bring the store's schema to the newest revision (kept for callers from before migrations)."""
    schema.migrate(engine)
