"""The benchmark harness: demo data at several scales, the engine's refresh and three baselines,
each run in its own process (median, min and max wall time and peak RSS), numbers checked against
the engine's published values, results to ``bench/RESULTS.md`` and ``bench/growth.svg``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import common as C

# Every run starts from the environment the bench was started with: importing the engine (for the
# demo data) sets its allocator option (metrics/__init__.py) in this process, which the baselines
# must not inherit — each engine run sets it up itself.
_STARTING_ENVIRONMENT = dict(os.environ)
PROJECT = C.PROJECT
VAR = PROJECT / "var" / "bench"
HERE = Path(__file__).resolve().parent
SEED = 20240401
ONE_GO_MAX_SCALE = 10  # demo data at bigger scales is generated in parts (bench.bigdata)
BASELINES = ["pandas", "duckdb", "naive_polars"]
LABEL = {"engine": "engine (refresh)", "pandas": "pandas", "duckdb": "DuckDB", "naive_polars": "naive Polars",
         "engine_full": "engine, full catalogue"}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def scale_name(scale: float) -> str:
    return f"{scale:g}"


def _demo_root(scale: float, seed: int) -> Path:
    """Where a scale and seed's extracts are cached: ``data/`` in it, and ``.complete`` once generated."""
    return VAR / f"scale-{scale_name(scale)}" / f"seed-{seed}"


def demo_data(scale: float, seed: int = SEED) -> Path:
    """Demo extracts for a scale and seed, generated once and cached under var/bench/scale-<s>/seed-<seed>/."""
    root = _demo_root(scale, seed)
    data = root / "data"
    if (root / ".complete").exists():
        return data
    say(f"generating demo data at scale {scale_name(scale)} (seed {seed}) into {data}")
    # In a process of its own: a child's peak RSS (``os.wait4``) starts from what its parent held
    # when it was started (Linux counts the parent's pages until the child's exec), so a harness
    # grown by generating data would add gigabytes to every run measured after.
    subprocess.run([sys.executable, "-c", f"from bench.harness import _generate; _generate({scale!r}, {seed!r})"],
                   cwd=PROJECT, check=True)
    return data


def _generate(scale: float, seed: int) -> None:
    """``demo_data``'s work, in the process it starts."""
    from metrics.demo import generate_demo_data

    root = _demo_root(scale, seed)
    data = root / "data"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    if scale > ONE_GO_MAX_SCALE:  # the generator holds every row: bigger scales are built from parts
        from bench.bigdata import generate_in_parts

        summary = generate_in_parts(data, scale, seed, root / "parts", say=say)
    else:
        summary = generate_demo_data(data, scale=scale, seed=seed, fmt="parquet")
    (root / ".complete").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                                                "summary": summary}, default=str))


def run_worker(kind: str, data_dir: Path, as_of: dt.date, out_dir: Path, definitions: Path | None = None,
               timeout: float = 1800) -> dict:
    """One run in a fresh process; its wall time and peak RSS (``os.wait4``: this child alone)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "bench.worker", "engine" if kind == "engine_full" else kind, str(data_dir),
            as_of.isoformat(), str(out_dir), *([str(definitions)] if definitions else [])]
    load = os.getloadavg()[0]
    with open(out_dir / "stdout.txt", "w") as out, open(out_dir / "stderr.txt", "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=PROJECT, stdout=out, stderr=err, env=_STARTING_ENVIRONMENT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in (out_dir / "stdout.txt").read_text().splitlines() if line.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        text = (out_dir / "stderr.txt").read_text()
        (out_dir / f"stderr-failed-{int(time.time())}.txt").write_text(text)  # kept: the next run overwrites
        message = [ln for ln in text.splitlines() if "Error" in ln or "Exception" in ln]
        tail = "; ".join(message[-3:]) + " … " + text[-600:]
        return {"kind": kind, "ok": False, "error": f"exit {proc.returncode}: {tail}", "wall": wall,
                "peak_rss_mb": usage.ru_maxrss / 1024, "load": load}
    record = json.loads(lines[-1][len("BENCH-RESULT "):])
    record.update(ok=True, kind=kind, wall=wall, peak_rss_mb=usage.ru_maxrss / 1024, load=load)
    return record


def summarise(runs: list[dict], key: str) -> dict | None:
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    from importlib.metadata import version

    libs = {}
    for name in ("polars", "pandas", "duckdb", "pyarrow", "numpy", "pandera", "SQLAlchemy", "altair", "pyinstrument"):
        try:
            libs[name] = version(name)
        except Exception:  # noqa: BLE001
            libs[name] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram, "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs, "load_start": os.getloadavg(),
            "allocator": _STARTING_ENVIRONMENT.get("_RJEM_MALLOC_CONF")}


def verify(engine_db: str, outputs: dict[str, str]) -> dict:
    import polars as pl

    from bench.verify import compare, engine_values

    expected = engine_values(engine_db)
    return {kind: compare(expected, pl.read_parquet(path)) for kind, path in outputs.items()}


def profile(data_dir: Path, as_of: dt.date, definitions: Path) -> Path:
    """The engine's refresh under pyinstrument; the text report goes to bench/profile-scale-<s>.txt."""
    out_dir = VAR / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = HERE / f"profile-{data_dir.parent.parent.name}.txt"
    subprocess.run([sys.executable, "-m", "pyinstrument", "-o", str(report), "-r", "text",
                    "-m", "bench.worker", "engine", str(data_dir), as_of.isoformat(), str(out_dir), str(definitions)],
                   cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    return report


def _summary_lines(stdout: str) -> str:
    """A benchmark script's result block: its output without the progress lines."""
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("[bench ")).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scales", default="0.1,1", help="comma-separated demo scales (default 0.1,1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each implementation per scale (default 3)")
    parser.add_argument("--quick", action="store_true", help="scale 0.1 only, one run each, no full catalogue")
    parser.add_argument("--only", default="engine," + ",".join(BASELINES),
                        help="implementations to run (default all: engine,pandas,duckdb,naive_polars)")
    parser.add_argument("--no-full-catalogue", action="store_true", help="skip the full-catalogue refresh at scale 1")
    parser.add_argument("--profile", action="store_true", help="also profile the engine's refresh at scale 1")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the incremental-refresh, explorer and export benchmarks")
    parser.add_argument("--slow", type=float, default=150,
                        help="don't repeat an implementation at a scale once a run took longer (default 150 s)")
    parser.add_argument("--naive-max-scale", type=float, default=1.0,
                        help="largest scale to run the naive Polars baseline at (default 1: it is the slowest)")
    parser.add_argument("--baselines-max-scale", type=float, default=10.0,
                        help="largest scale to run pandas and DuckDB at (default 10: at 30 they need more "
                             "memory than the machine has); above it only the engine runs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run (default 1800)")
    args = parser.parse_args(argv)
    scales = [0.1] if args.quick else [float(s) for s in args.scales.split(",")]
    repeats = 1 if args.quick else args.repeats
    kinds = [k for k in args.only.split(",") if k]
    as_of = dt.date.today()
    info = machine()
    say(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']:.1f} GB; load {info['load_start']}")
    definitions = C.foundation_definitions(VAR / "definitions-foundation")
    results: dict = {"machine": info, "as_of": as_of.isoformat(), "repeats": repeats, "scales": {},
                     "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
                     "started": dt.datetime.now().isoformat(timespec="seconds")}
    for scale in scales:
        data = demo_data(scale)
        name = scale_name(scale)
        scale_result: dict = {"runs": {}, "summary": {}}
        outputs, engine_db = {}, None
        for repeat in range(repeats):
            for kind in kinds:  # interleaved, so drifting machine load hits every implementation alike
                if kind == "naive_polars" and scale > args.naive_max_scale:
                    continue
                if kind != "engine" and scale > args.baselines_max_scale:
                    continue
                done = [r for r in scale_result["runs"].get(kind, []) if r.get("ok")]
                if repeat and (not done or min(r["seconds"] for r in done) > args.slow):
                    continue  # too slow (or failing) to repeat within the time the bench is given
                out_dir = VAR / "runs" / f"scale-{name}" / kind
                record = run_worker(kind, data, as_of, out_dir, definitions if kind == "engine" else None,
                                    timeout=args.timeout)
                # The engine's source cache (for a next incremental refresh) isn't used here: free
                # the disk now (16 GB at scale 30) rather than when the next run replaces it.
                shutil.rmtree(out_dir / "outcomes.db.cache", ignore_errors=True)
                scale_result["runs"].setdefault(kind, []).append(record)
                if record["ok"]:
                    say(f"scale {name} {kind} run {repeat + 1}/{repeats}: {record['seconds']:.1f} s "
                        f"(process {record['wall']:.1f} s), peak RSS {record['peak_rss_mb']:.0f} MB, "
                        f"load {record['load']:.1f}")
                    if kind == "engine":
                        engine_db = record["db"]
                    elif repeat == 0:
                        # keep the first output for checking (later runs overwrite the same file)
                        keep = out_dir / f"{kind}-checked.parquet"
                        Path(record["output"]).replace(keep)
                        outputs[kind] = str(keep)
                else:
                    say(f"scale {name} {kind} run {repeat + 1} FAILED: {record['error'][-400:]}")
        if engine_db and outputs:
            scale_result["verification"] = verify(engine_db, outputs)
            for kind, check in scale_result["verification"].items():
                say(f"scale {name} {kind}: {check['matched_rows']:,} rows matched, {check['mismatches']} mismatches")
        for kind, runs in scale_result["runs"].items():
            scale_result["summary"][kind] = {key: summarise(runs, key) for key in (
                "seconds", "wall", "peak_rss_mb", "cpu_seconds", "cpu_user", "cpu_system")}
            if kind == "engine":
                for stage in ("load_validate", "compute", "judge", "write", "total"):
                    vals = [{**r, stage: r["timings"].get(stage)} for r in runs if r.get("ok")]
                    scale_result["summary"][kind][stage] = summarise(vals, stage)
                for r in runs:
                    if r.get("ok"):
                        r["load_compute"] = r["timings"]["load_validate"] + r["timings"]["compute"]
                scale_result["summary"][kind]["load_compute"] = summarise(runs, "load_compute")
        results["scales"][name] = scale_result
        _save(results)
    if not args.quick and not args.no_full_catalogue:
        data = demo_data(1.0)
        say("full-catalogue refresh at scale 1 (for information)")
        record = run_worker("engine_full", data, as_of, VAR / "runs" / "full-catalogue", C.DEFINITIONS,
                            timeout=args.timeout)
        results["full_catalogue"] = record
        if record["ok"]:
            say(f"full catalogue: {record['seconds']:.1f} s, {record['values']:,} values, "
                f"peak RSS {record['peak_rss_mb']:.0f} MB")
    if not args.quick and not args.no_extras:
        for name, script, extra in (("incremental", "bench_incremental.py", ["--scale", "1", "--runs", str(repeats)]),
                                    ("apps", "bench_apps.py", [])):
            say(f"running bench/{script}")
            done = subprocess.run([sys.executable, str(HERE / script), *extra], cwd=PROJECT, capture_output=True,
                                  text=True, timeout=args.timeout)
            results[name] = {"ok": done.returncode == 0, "command": f"python bench/{script} {' '.join(extra)}".strip(),
                             "output": _summary_lines(done.stdout) if done.returncode == 0 else done.stderr[-2000:]}
            say(f"bench/{script}: " + ("done" if done.returncode == 0 else "FAILED"))
    if args.profile:
        say("profiling the engine's refresh at scale 1 with pyinstrument")
        results["profile"] = str(profile(demo_data(1.0), as_of, definitions).relative_to(PROJECT))
    elif (HERE / "profile-scale-1.txt").exists():
        results["profile"] = str((HERE / "profile-scale-1.txt").relative_to(PROJECT))
    results["machine"]["load_end"] = os.getloadavg()
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    _save(results)
    from bench.report import write_report

    write_report(results, HERE / "RESULTS.md", HERE / "growth.svg")
    say(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'growth.svg'}")
    failed = [k for s in results["scales"].values() for k, c in s.get("verification", {}).items() if c["mismatches"]]
    return 1 if failed else 0


def _save(results: dict) -> None:
    VAR.mkdir(parents=True, exist_ok=True)
    (VAR / "results.json").write_text(json.dumps(results, indent=1, default=str))
