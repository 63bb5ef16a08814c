"""Shared fixtures: the hand-built extracts, a throwaway SQLite store, and a published run."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import store  # noqa: E402
from handbuilt import write_handbuilt  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
DEFINITIONS = PROJECT / "definitions"
AS_OF = dt.date(2026, 1, 1)


@pytest.fixture
def handbuilt_dir(tmp_path: Path) -> Path:
    return write_handbuilt(tmp_path / "extracts")


@pytest.fixture
def engine(tmp_path: Path):
    return store.get_engine(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.fixture
def definitions_dir(tmp_path: Path) -> Path:
    """A private copy of the project's definitions, safe to edit in a test."""
    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS, target)
    return target


@pytest.fixture
def published(handbuilt_dir: Path, engine):
    from metrics.refresh import refresh

    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    return result
