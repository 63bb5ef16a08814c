"""Benchmarks: ``python -m bench`` runs the engine against pandas, DuckDB and naive Polars baselines."""
