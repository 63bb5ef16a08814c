"""The benchmark report's targets table says what was met, from the results a bench run records."""

from __future__ import annotations

from bench.report import _targets


def _stats(value: float) -> dict:
    return {"median": value, "min": value, "max": value}


def _scale(seconds: float | None, peak_mb: float | None, rows: int, parts: dict | None = None,
           baselines: dict | None = None) -> dict:
    engine = {"total": _stats(seconds), "load_compute": _stats(seconds * 0.8), "peak_rss_mb": _stats(peak_mb)} \
        if seconds else {}
    run = {"ok": True, "rows": {"community_contacts": rows}, "parts": parts or {}} if seconds else {"ok": False}
    summary = {"engine": engine, **{kind: {"seconds": _stats(t)} for kind, t in (baselines or {}).items()}}
    return {"summary": summary, "runs": {"engine": [run]}}


def _results(scale_1: dict) -> dict:
    """What a bench run records, with only scale 1 run, on a 2-core machine."""
    return {"machine": {"cpu": "test", "cores": 2, "ram_gb": 24.0, "platform": "test", "python": "3.11",
                        "libraries": {}, "load_start": [0.0, 0.0, 0.0]},
            "started": "start", "finished": "end", "repeats": 1, "as_of": "2026-11-24", "scales": {"1": scale_1}}


def _report(results: dict, folder) -> str:
    from bench.report import write_report

    write_report(results, folder / "RESULTS.md", folder / "growth.svg")
    return (folder / "RESULTS.md").read_text()


def test_the_targets_table_reports_each_scale_of_30_and_more_and_whether_100_completed():
    results = {"machine": {"ram_gb": 24.0}, "scales": {
        "1": _scale(3.0, 1200, 1_000_000, baselines={"pandas": 31.0, "duckdb": 8.0}),
        "10": _scale(33.0, 6000, 10_000_000),
        "30": _scale(120.0, 9000, 30_000_000, parts={"community_contacts": 7}),
        "100": _scale(None, None, 0),
    }}
    table = "\n".join(_targets(results))
    assert "| engine ≥ 10× faster than pandas | 10.33× (full refresh)" in table and "| yes |" in table
    assert "| engine ≥ 3× faster than DuckDB | 2.67× (full refresh), 3.33× (load+compute) | no |" in table
    assert "| time ~linear up to scale 10 | 10.0× the rows took 11.0× the time (1.10×" in table
    # The last scale that completed is the growth curve's end: a scale that ran out of memory isn't.
    assert "| time ~linear up to scale 30 | 30.0× the rows took 40.0× the time (1.33×" in table
    row = next(line for line in table.splitlines() if line.startswith("| scale 100 (30 at the least)"))
    assert "scale 30: peak 8.8 GiB of 22.4 GiB (39%), streaming community_contacts in 7 parts" in row
    assert "scale 100: the engine did not complete" in row and row.endswith("| scale 30 only |")

    results["scales"]["100"] = _scale(900.0, 15000, 100_000_000, parts={"community_contacts": 21})
    row = next(line for line in "\n".join(_targets(results)).splitlines() if line.startswith("| scale 100 (30"))
    assert "scale 100: peak 14.6 GiB" in row and row.endswith("| yes |")


def test_each_scale_table_shows_the_time_a_command_line_user_waits_for(tmp_path):
    """Beside the time measured inside each process (imports excluded), the process's own start to
    exit: the engine's imports and its store's closing are in it, as for anyone running it."""
    scale = _scale(3.0, 1200, 1_000_000, baselines={"pandas": 31.0})
    scale["summary"]["engine"].update(seconds=_stats(3.0), wall=_stats(5.5))
    scale["runs"]["engine"][0].update(values=100, quarantined=2)
    scale["summary"]["pandas"].update(peak_rss_mb=_stats(2000), wall=_stats(32.0))
    results = _results(scale)
    report = _report(results, tmp_path)
    assert "| time ÷ engine load+compute | process (start to exit) |" in report
    # (CPU time: the results of a run recorded before it was have none.)
    assert "| engine (full refresh) | 3.0 s (3.0–3.0) | – | 1200 MB (1200–1200) |  |  | 5.5 s (5.5–5.5) |" in report
    assert "| pandas | 31.0 s (31.0–31.0) | – | 2000 MB (2000–2000) | 10.33× | 12.92× | 32.0 s (32.0–32.0) |" in report


def test_a_speed_target_not_met_is_explained_by_the_cpu_time_the_refresh_needed(tmp_path):
    """The CPU time a run used (every thread's) and the cores it kept busy are in each scale's table;
    a speed target not met says whether the cores could have done the work in time at all."""
    scale = _scale(3.0, 1200, 1_000_000, baselines={"pandas": 25.0, "duckdb": 8.0})
    scale["summary"]["engine"].update(seconds=_stats(3.0), cpu_seconds=_stats(5.4), cpu_user=_stats(4.2),
                                      cpu_system=_stats(1.2))
    scale["runs"]["engine"][0].update(values=100, quarantined=2)
    scale["summary"]["pandas"].update(peak_rss_mb=_stats(2000), cpu_seconds=_stats(24.0))
    scale["summary"]["duckdb"].update(peak_rss_mb=_stats(1800), cpu_seconds=_stats(15.0))
    results = _results(scale)
    report = _report(results, tmp_path)
    assert "| engine (full refresh) | 3.0 s (3.0–3.0) | 5.4 s (5.4–5.4), 1.8 | 1200 MB" in report
    assert "| pandas | 25.0 s (25.0–25.0) | 24.0 s (24.0–24.0), 1.0 | 2000 MB" in report
    # 10× pandas needs 2.5 s; 5.4 CPU-s on 2 cores take at least 2.7 s.
    assert ("What limits the 10× pandas target: 10× needs the refresh in 2.50 s. It used 5.4 s of CPU (user "
            "4.2 s, system 1.2 s), keeping 1.8 of the 2 cores busy on average, so on 2 cores it can't take less "
            "than 2.70 s: doing the same work, the target is out of reach") in report
    # 3× DuckDB needs 2.67 s: just out of reach too.
    assert ("What limits the 3× DuckDB target: 3× needs the refresh in 2.67 s. It used 5.4 s of CPU (user 4.2 s, "
            "system 1.2 s), keeping 1.8 of the 2 cores busy on average, so on 2 cores it can't take less than "
            "2.70 s") in report

    scale["summary"]["engine"]["cpu_seconds"] = _stats(4.0)
    report = _report(results, tmp_path)
    # With 4.0 CPU-s, 2 cores could do it in 2.00 s: both targets are then missed by waiting, not by work.
    assert report.count("can't take less than 2.00 s: the cores could do it in time; the rest is the time they wait") == 2

    scale["summary"]["pandas"]["seconds"] = _stats(30.0)  # (10× met: nothing to explain for pandas)
    report = _report(results, tmp_path)
    assert "What limits the 10× pandas target" not in report and "What limits the 3× DuckDB target" in report


def test_a_failed_run_is_reported_by_its_error_not_its_native_stack_frames():
    from bench.report import _short

    error = ("exit 1: _duckdb.InternalException: INTERNAL Error: dict-surviving cache; "
             "/venv/_duckdb.so(_ZN6duckdb9ExceptionC2ENS_13ExceptionTypeE+0x4b) [0x7f5a7c01e56b] … a7c93ec84] "
             "This error signals an assertion failure within DuckDB.")
    short = _short(error)
    assert short.startswith("exit 1: _duckdb.InternalException: INTERNAL Error: dict-surviving cache")
    assert "0x" not in short and "_ZN6duckdb" not in short and "a7c93ec84]" not in short
    assert short.endswith("This error signals an assertion failure within DuckDB.")
