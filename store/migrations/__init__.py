"""Alembic migrations for the store, shipped inside the package so an installed store can migrate.

Run them with ``store.migrate(engine)`` or ``outcomes db upgrade``; ``store.get_engine`` runs them
to head on first use. A new revision goes in ``versions/`` as ``NNNN_what_it_does.py`` with
``revision = "NNNN"`` and ``down_revision`` the previous one. Revisions never import the models:
each describes the schema as it was at that revision.
"""
