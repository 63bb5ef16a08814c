"""One measured run in a fresh process (so peak RSS is this run's alone): the engine's refresh or a
baseline. The parent reads peak RSS with ``os.wait4``; this prints a JSON line of timings.

    python -m bench.worker engine|pandas|duckdb|naive_polars DATA_DIR AS_OF OUT_DIR [DEFINITIONS_DIR]
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import shutil
import sys
import time
from pathlib import Path


def _cpu() -> tuple[float, float]:
    """CPU seconds (user, system) this process has used so far: every thread's (Polars', DuckDB's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _record_cpu(record: dict, before: tuple[float, float]) -> None:
    """The CPU time the measured part took: on a machine of N cores it can't take less than 1/N of it."""
    user, system = (after - then for after, then in zip(_cpu(), before, strict=True))
    record.update(cpu_user=user, cpu_system=system, cpu_seconds=user + system)


def main(argv: list[str]) -> None:
    kind, data_dir, as_of, out_dir = argv[:4]
    as_of = dt.date.fromisoformat(as_of)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict = {"kind": kind}
    if kind == "engine":
        # metrics first: it sets Polars' allocator up, which must happen before Polars loads.
        from metrics.refresh import refresh  # isort: skip
        import store  # isort: skip

        db = out_dir / "outcomes.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        # A full refresh from an empty store: without the last run's source cache too (unused by a
        # full refresh, it only held the disk: ~13 GB at scale 30, twice that while replaced).
        shutil.rmtree(f"{db}.cache", ignore_errors=True)
        engine = store.get_engine(f"sqlite:///{db}")
        cpu, started = _cpu(), time.perf_counter()
        result = refresh(data_dir, definitions_dir=argv[4], engine=engine, as_of=as_of, trigger="bench")
        record["seconds"] = time.perf_counter() - started
        _record_cpu(record, cpu)
        record["timings"] = result.timings
        record["values"] = result.values
        record["quarantined"] = result.quarantined
        record["run_id"] = result.run_id
        record["rows"] = {k: v.get("rows_read") for k, v in result.sources.items() if isinstance(v, dict)}
        # Sources too big to hold, streamed through in parts (``metrics.sources.load_source_in_parts``).
        record["parts"] = {k: v["parts"] for k, v in result.sources.items() if isinstance(v, dict) and v.get("parts")}
        record["db"] = str(db)
    else:
        import importlib

        module = importlib.import_module(f"bench.baseline_{kind}")
        cpu, started = _cpu(), time.perf_counter()
        frame = module.run(Path(data_dir), as_of)
        record["seconds"] = time.perf_counter() - started
        _record_cpu(record, cpu)
        import polars as pl

        if not isinstance(frame, pl.DataFrame):
            frame = pl.from_pandas(frame) if hasattr(frame, "to_numpy") else pl.from_arrow(frame)
        path = out_dir / f"{kind}.parquet"
        frame.write_parquet(path)
        record["values"] = frame.height
        record["output"] = str(path)
    print("BENCH-RESULT " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
