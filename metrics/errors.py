"""Problems found in definitions and data, as data.

Every problem names where it was found (file, line, field or column) and what was expected, so an
analyst can fix it without reading the engine. Loaders collect problems instead of stopping at the
first one; only ``level="error"`` blocks a refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Issue", "DefinitionError", "SourceError", "FilterError", "format_issues"]


@dataclass(frozen=True)
class Issue:
    """One problem in a definition file or a source extract."""

    level: Literal["error", "warning"]
    file: str
    message: str
    line: int | None = None
    field: str | None = None
    code: str = "invalid"

    def __str__(self) -> str:
        where = self.file + (f", line {self.line}" if self.line else "")
        what = f" [{self.field}]" if self.field else ""
        return f"{self.level}: {where}{what}: {self.message}"


def format_issues(issues: list[Issue]) -> str:
    return "\n".join(str(issue) for issue in issues)


class DefinitionError(Exception):
    """Definitions could not be loaded; ``issues`` says every problem found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__(format_issues(issues))


class SourceError(Exception):
    """A structural problem that stops one source: missing file or column, wrong type, unreadable file."""

    def __init__(self, source: str, message: str, file: str | Path | None = None, column: str | None = None):
        self.source = source
        self.file = str(file) if file is not None else None
        self.column = column
        parts = [f"source '{source}'"]
        if self.file:
            parts.append(f"file {self.file}")
        if column:
            parts.append(f"column '{column}'")
        super().__init__(", ".join(parts) + f": {message}")


class FilterError(ValueError):
    """A SQL filter in a definition is not allowed or does not parse."""
