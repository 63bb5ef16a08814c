"""Database engine from the environment: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from store import models  # noqa: F401  (registers the tables)

__all__ = ["database_url", "get_engine", "init_db", "default_sqlite_path"]


def default_sqlite_path() -> Path:
    """``var/outcomes.db`` in the project checkout (or the working directory when installed elsewhere)."""
    here = Path(__file__).resolve().parent.parent
    root = here if (here / "pyproject.toml").exists() else Path.cwd()
    return root / "var" / "outcomes.db"


def database_url(url: str | None = None) -> str:
    """The store's URL: the argument, else ``OUTCOMES_DATABASE_URL``, else the default SQLite file."""
    url = url or os.environ.get("OUTCOMES_DATABASE_URL")
    if url:
        return url
    path = default_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers keep reading the last published run while a refresh writes the next.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    """A (cached) SQLAlchemy engine for the store, with the tables created if missing."""
    url = database_url(url)
    if url not in _ENGINES:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        init_db(engine)
        _ENGINES[url] = engine
    return _ENGINES[url]


def init_db(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
