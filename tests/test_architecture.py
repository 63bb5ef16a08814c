"""Imports flow one way: definitions → plan → compute → refresh → store; `store` knows nothing of
the engine; pure modules (errors, stats, sqlfilter) know nothing of the project."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import PROJECT


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] if a.name.split(".")[0] != "metrics" else a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.module.startswith("metrics") else node.module.split(".")[0])
    return names


def test_store_knows_nothing_of_the_engine():
    for path in (PROJECT / "store").glob("*.py"):
        assert not any(n.startswith("metrics") for n in _imports(path)), path


def test_pure_modules_import_no_project_code():
    for name in ("errors", "stats", "sqlfilter", "spc", "disclosure", "frames"):
        imports = _imports(PROJECT / "metrics" / f"{name}.py")
        allowed = {"metrics.errors", "metrics.frames"}
        assert not any(n.startswith("metrics.") and n not in allowed for n in imports), (name, imports)
        assert "store" not in imports


def test_only_the_orchestrators_touch_the_store():
    allowed = {"refresh.py", "cli.py", "service.py", "export.py"}  # the orchestrators and the pack export
    for path in (PROJECT / "metrics").glob("*.py"):
        if path.name not in allowed:
            assert "store" not in _imports(path), path


def test_the_planner_and_compute_never_import_the_orchestrator():
    for name in ("definitions", "rules", "plan", "compute", "sources"):
        imports = _imports(PROJECT / "metrics" / f"{name}.py")
        assert not {"metrics.refresh", "metrics.cli"} & imports, name


def test_the_engine_sets_polars_allocator_up_before_polars_loads():
    """Importing ``metrics`` gives Polars' jemalloc one arena (freed memory is reused rather than
    fresh pages faulted in: a refresh ~10% faster with a lower peak), unless the environment
    already says otherwise; it must come before Polars is imported, as jemalloc reads it once."""
    import os
    import subprocess
    import sys

    code = "import os, metrics, polars; print(os.environ['_RJEM_MALLOC_CONF'])"
    clean = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}

    def run(env: dict) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT, capture_output=True,
                              text=True, check=True).stdout.strip()

    # (Polars puts its own decay settings first: later settings win.)
    assert run(clean).endswith(",narenas:1")
    kept = run({**clean, "_RJEM_MALLOC_CONF": "narenas:4"})
    assert kept.endswith(",narenas:4") and "narenas:1" not in kept
    # BLAS likewise gets one thread (the engine parallelises its own work), unless told otherwise.
    blas = "import os, metrics, numpy; print(os.environ['OPENBLAS_NUM_THREADS'])"
    clean_blas = {k: v for k, v in clean.items() if k != "OPENBLAS_NUM_THREADS"}
    assert subprocess.run([sys.executable, "-c", blas], env=clean_blas, cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout.strip() == "1"
    assert subprocess.run([sys.executable, "-c", blas], env={**clean_blas, "OPENBLAS_NUM_THREADS": "2"},
                          cwd=PROJECT, capture_output=True, text=True, check=True).stdout.strip() == "2"
    # The bench's worker imports the engine before the store (which imports Polars).
    worker = (PROJECT / "bench" / "worker.py").read_text()
    assert worker.index("from metrics.refresh import refresh") < worker.index("import store")
