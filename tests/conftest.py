"""Shared fixtures: the hand-built extracts, a throwaway store on each backend, and a published run.

Every test that takes ``engine`` (or ``db_url``) runs twice: on SQLite and on PostgreSQL. The
PostgreSQL server is a throwaway cluster (``tests/pg.py``) started once per session — installing
PostgreSQL first if it is missing — and each test gets a database of its own. Where PostgreSQL
cannot be had, its tests are skipped with the reason, except in CI (``CI=true``), where that is a
failure. ``pytest -m "not postgresql"`` runs the SQLite half only.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import store  # noqa: E402
from handbuilt import write_handbuilt  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
PROJECT_DEFINITIONS = PROJECT / "definitions"
AS_OF = dt.date(2026, 1, 1)
# The hand-built extracts (tests/handbuilt.py) hold the foundation's sources only.
FOUNDATION_SOURCES = ("geography", "population", "inpatient_spells", "community_contacts", "breast_screening")


def _foundation_definitions() -> Path:
    """The project's definitions restricted to the foundation sources and the metrics on them,
    copied once per test session, so hand-built tests check the shipped definitions themselves."""
    import atexit
    import tempfile

    import yaml

    root = Path(tempfile.mkdtemp(prefix="outcomes-foundation-defs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copy(PROJECT_DEFINITIONS / "dimensions.yaml", root / "dimensions.yaml")
    (root / "sources").mkdir()
    (root / "metrics").mkdir()
    for source in FOUNDATION_SOURCES:
        shutil.copy(PROJECT_DEFINITIONS / "sources" / f"{source}.yaml", root / "sources")
    for path in sorted((PROJECT_DEFINITIONS / "metrics").glob("*.yaml")):
        metric = yaml.safe_load(path.read_text())
        population = (metric.get("denominator") or {}).get("population")
        if metric["source"] in FOUNDATION_SOURCES and population in (None, *FOUNDATION_SOURCES):
            shutil.copy(path, root / "metrics")
    return root


DEFINITIONS = _foundation_definitions()


@pytest.fixture
def handbuilt_dir(tmp_path: Path) -> Path:
    return write_handbuilt(tmp_path / "extracts")


BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server for the session (installed if missing), removed at the end."""
    from pg import Cluster, ClusterUnavailable

    cluster = Cluster(log=lambda message: print(message, file=sys.__stderr__, flush=True))
    try:
        cluster.start()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI but could not be started: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield cluster
    store.dispose_engine()
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path: Path):
    """A new, empty store's URL (the PostgreSQL one carries a password): SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        yield url
        store.dispose_engine(url)
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    yield url
    store.dispose_engine(url)
    cluster.drop_database(url)


@pytest.fixture
def engine(db_url: str):
    return store.get_engine(db_url)


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
