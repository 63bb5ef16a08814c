"""Full refresh vs incremental refresh after one new month of community contacts (median of 3).

On the scale-0.2 demo (``outcomes demo-data --out DIR --scale 0.2``, generated once and cached under
``var/bench/incremental/``), each round:

1. a full refresh of the demo extracts (every source loaded, validated and computed);
2. an incremental refresh with nothing changed (fingerprints compared: a ``skipped`` run);
3. a new month of CSDS contacts lands (the last month's file, moved on a month, new contact ids,
   a later submission) and an incremental refresh recomputes community contacts only, carrying every
   other metric forward and judging the whole again;

then the new month is removed for the next round. Finally a full refresh with the new month is
compared with the last incremental one: values, quarantined rows and judgement frames must be equal.

Run: .venv/bin/python bench/bench_incremental.py [--scale 0.2] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import store
from metrics.refresh import refresh

VAR = PROJECT / "var" / "bench" / "incremental"
FRAMES = ("spc", "comparisons", "inequalities", "scorecard", "benchmarks")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def demo(scale: float) -> Path:
    """The demo extracts at ``scale``, made once with the CLI and cached."""
    root = VAR / f"demo-{scale:g}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        say(f"generating demo data at scale {scale:g} into {root}")
        subprocess.run([str(Path(sys.executable).parent / "outcomes"), "demo-data", "--out", str(root / "data"),
                        "--scale", f"{scale:g}"], check=True, stdout=subprocess.DEVNULL)
        (root / ".complete").touch()
    return root / "data"


def next_month(folder: Path, staging: Path) -> Path:
    """The last month's contacts moved on a month: new contact ids, a later submission."""
    last = max(p for p in folder.iterdir() if p.suffix in (".parquet", ".csv"))
    frame = pl.read_parquet(last) if last.suffix == ".parquet" else pl.read_csv(last, infer_schema=False)
    dated = frame["contact_date"].dtype == pl.Date
    date = pl.col("contact_date") if dated else pl.col("contact_date").str.to_date(strict=False)
    moved = date.dt.offset_by("1mo")
    month = frame.select(date.dt.truncate("1mo").mode().first()).item()  # the file's month (defects aside)
    following = (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    frame = frame.with_columns(
        (moved if dated else moved.dt.to_string("%Y-%m-%d")).alias("contact_date"),
        (pl.lit("n") + pl.col("contact_id").cast(pl.String)).alias("contact_id"),
        (pl.col("submission_id").cast(pl.Int64, strict=False) + 1).cast(frame["submission_id"].dtype),
    )
    name = last.name.replace(f"{month:%Y-%m}", f"{following:%Y-%m}")
    target = staging / (name if name != last.name else f"{last.stem}_next{last.suffix}")
    staging.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(target) if target.suffix == ".parquet" else frame.write_csv(target)
    return target


def _settled() -> None:
    """What the last refresh wrote (its store log, the source cache) sent to the disk first, untimed:
    a new month lands hours after the last refresh, not a second later, and a refresh starts by
    checkpointing the store's log, a sync that would otherwise wait for all of it."""
    os.sync()


def timed(**kwargs):
    started = time.perf_counter()
    result = refresh(**kwargs)
    return time.perf_counter() - started, result


def check_equal(engine, run: int, full: int) -> None:
    from polars.testing import assert_frame_equal

    assert_frame_equal(store.read_values(engine, run=run).drop("run_id"),
                       store.read_values(engine, run=full).drop("run_id"))
    order = ["source_id", "file", "row_number", "rule"]
    assert_frame_equal(store.read_quarantine(engine, run=run).drop("run_id").sort(order),
                       store.read_quarantine(engine, run=full).drop("run_id").sort(order))
    for name in FRAMES:
        assert_frame_equal(store.read_frame(engine, name, run), store.read_frame(engine, name, full))


def summary(label: str, times: list[float]) -> str:
    return (f"{label:<44} median {statistics.median(times):7.2f} s   (min {min(times):.2f}, max {max(times):.2f}, "
            f"n={len(times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    source = demo(args.scale)
    work = VAR / "work"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    shutil.copytree(source, data)
    contacts = data / "community_contacts"
    landed = next_month(contacts, work / "staging")
    url = f"sqlite:///{work / 'store.db'}"
    engine = store.get_engine(url)
    as_of = dt.date.today()
    common = {"data_dir": data, "engine": engine, "as_of": as_of}
    say(f"scale {args.scale:g}: {sum(f.stat().st_size for f in data.rglob('*') if f.is_file()) / 1e6:.0f} MB of "
        f"extracts; new month {landed.name} ({pl.read_parquet(landed).height:,} contacts); store {url}; "
        f"load average {os.getloadavg()[0]:.1f}")

    full, skipped, incremental, stages = [], [], [], {}
    for round_ in range(1, args.runs + 1):
        seconds, result = timed(**common)
        full.append(seconds)
        stages["full"] = result.timings
        say(f"round {round_}: full refresh {seconds:.2f} s (run {result.run_id}, {result.values:,} values)")
        _settled()
        seconds, result = timed(**common, incremental=True)
        assert result.status == "skipped", result.reason
        skipped.append(seconds)
        say(f"round {round_}: nothing changed: {seconds:.2f} s ({result.reason})")
        shutil.copy2(landed, contacts / landed.name)
        _settled()
        seconds, result = timed(**common, incremental=True)
        assert result.status == "published" and result.recomputed == ["community_contacts"], result.reason
        incremental.append(seconds)
        stages["incremental"] = result.timings
        say(f"round {round_}: incremental after a new month of contacts {seconds:.2f} s (run {result.run_id}: "
            f"recomputed {', '.join(result.recomputed)}, {len(result.reused)} metrics carried forward)")
        last_incremental = result.run_id
        if round_ < args.runs:
            (contacts / landed.name).unlink()

    seconds, result = timed(**common)
    check_equal(engine, last_incremental, result.run_id)
    say(f"check: the incremental run {last_incremental} equals a full refresh of the same extracts "
        f"(run {result.run_id}, {seconds:.2f} s): values, quarantined rows, judgement frames")
    print()
    print(f"scale {args.scale:g} demo, SQLite store, one new month of community contacts")
    print(summary("full refresh", full))
    print(summary("incremental refresh, nothing changed (skipped)", skipped))
    print(summary("incremental refresh, one new contacts month", incremental))
    speedup = statistics.median(full) / statistics.median(incremental)
    print(f"{'speed-up (median full / median incremental)':<44} {speedup:7.1f}x")
    for kind, timings in stages.items():
        print(f"  stages of the last {kind:<12} " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
