"""Outcomes framework metrics engine.

Definitions (YAML) → plan → compute (Polars) → judge → store. The public API:

- ``load_catalogue`` / ``load_definitions``: read and validate ``definitions/``.
- ``refresh``: load extracts, compute every metric and publish a run to the store.
- ``metrics.stats``: PHE statistical methods as frame-in/frame-out functions.
"""

__version__ = "0.1.0"

from metrics.definitions import load_catalogue, load_definitions  # noqa: E402

__all__ = ["__version__", "load_catalogue", "load_definitions"]
