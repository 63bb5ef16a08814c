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
