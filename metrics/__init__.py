"""Outcomes framework metrics engine.

Definitions (YAML) → plan → compute (Polars) → judge → store. The public API:

- ``load_catalogue`` / ``load_definitions``: read and validate ``definitions/``.
- ``refresh``: load extracts, compute every metric and publish a run to the store.
- ``metrics.stats``: PHE statistical methods as frame-in/frame-out functions.
"""

import os

__version__ = "0.1.0"

# Polars allocates through its own jemalloc, which keeps several arenas per core: memory one
# thread frees is seldom reused by another, so a refresh keeps taking fresh pages from the
# kernel, and every first touch of a page is a fault (costly on a VM: a third of a scale-1
# refresh's CPU time was the kernel's). One arena reuses freed memory: 38% fewer page faults,
# peak RSS 1.1 GB instead of 1.3 GB and the refresh about 10% faster (bench/RESULTS.md). jemalloc
# reads this once, when Polars is first imported (Polars adds its decay settings before it); a
# setting already in the environment is kept.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1")
# numpy's and scipy's OpenBLAS start a thread per core and keep them spinning after each call,
# which takes CPU from Polars' own threads. The engine's BLAS work (the SII's small least-squares
# fits) already runs on its own threads, so BLAS gets one: a scale-1 refresh used 0.3 s less CPU.
# OpenBLAS reads this when numpy or scipy first loads; a setting already in the environment is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from metrics.definitions import load_catalogue, load_definitions  # noqa: E402

__all__ = ["__version__", "load_catalogue", "load_definitions"]
