"""Schema revisions, oldest first (Alembic loads every ``NNNN_*.py`` here)."""
