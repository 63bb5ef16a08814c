"""How responsive the explorer app is, on a scale 0.05 demo store.

- **First render, cold process**: ``app.run()`` in a fresh Python process, imports included (what
  the first visitor after a server start waits for).
- **First render, warm**: ``app.run()`` again in the same process (a new session on a running
  ``marimo run`` server, where the libraries are already imported).
- **Filter change**: the cells downstream of one UI element re-run with a new value, exactly as
  marimo's dataflow graph would re-run them, their outputs formatted as marimo sends them to the
  browser (charts serialised to Vega-Lite JSON). This is server time; the browser's own drawing is
  not included.

Targets: first render < 2 s, filter change < 200 ms. Also: the whole governance pack exported with
``outcomes export`` (every metric and place, PNG, SVG and PDF) in a fresh process.

Run: .venv/bin/python bench/bench_apps.py [--store sqlite:///path.db]   (default: builds a demo store)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NOTEBOOK = ROOT / "notebooks" / "explorer.py"
RUNS = 5


def build_store(folder: Path) -> str:
    """A scale 0.05 demo store (about 20 s on two cores)."""
    url = f"sqlite:///{folder / 'bench_apps.db'}"
    outcomes = [sys.executable, "-m", "metrics.cli"]
    subprocess.run([*outcomes, "demo-data", "--out", str(folder / "demo"), "--scale", "0.05"], check=True,
                   cwd=ROOT, capture_output=True)
    subprocess.run([*outcomes, "refresh", "--data", str(folder / "demo")], check=True, cwd=ROOT,
                   capture_output=True, env={**os.environ, "OUTCOMES_DATABASE_URL": url})
    return url


def load_app(path: Path = NOTEBOOK):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


COLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("explorer", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
start = time.perf_counter(); module.app.run(); print(time.perf_counter() - start)
"""


def cold_first_render(url: str) -> float:
    result = subprocess.run([sys.executable, "-c", COLD, str(NOTEBOOK)], capture_output=True, text=True, check=True,
                            cwd=ROOT, env={**os.environ, "OUTCOMES_DATABASE_URL": url})
    return float(result.stdout.strip().splitlines()[-1])


class Rerunner:
    """Re-runs the cells of ``app`` downstream of a changed definition, in marimo's order."""

    def __init__(self, app) -> None:
        from marimo._ast.app import InternalApp

        self.internal = InternalApp(app)
        self.graph = self.internal.graph
        self.order = self.internal.execution_order
        self.cells = {cid: self.internal.cell_manager.cell_data_at(cid).cell for cid in self.order}

    def downstream(self, name: str) -> list:
        defining = self.graph.get_defining_cells(name)
        below = set().union(*(self.graph.descendants(cid) for cid in defining))
        return [cid for cid in self.order if cid in below]

    def render_all(self, seed: dict[str, Any]) -> tuple[float, float]:
        """Every cell in order, outputs formatted: a new session's first render, server side. Cells
        whose definitions ``seed`` gives are not run (the one reading the address needs a server)."""
        from marimo._output.formatting import try_format

        glbls: dict[str, Any] = dict(seed)
        start, cpu = time.perf_counter(), time.process_time()
        for cid in self.order:
            cell = self.cells[cid]
            if cell.defs and set(cell.defs) <= set(seed):
                continue
            output, new = cell.run(**{ref: glbls[ref] for ref in cell.refs if ref in glbls})
            glbls.update(new)
            try_format(output)
        return time.perf_counter() - start, time.process_time() - cpu

    def rerun(self, defs: dict[str, Any], name: str, value: Any) -> tuple[float, float]:
        from marimo._output.formatting import try_format

        glbls = {**defs, name: value}
        start, cpu = time.perf_counter(), time.process_time()
        for cid in self.downstream(name):
            cell = self.cells[cid]
            output, new = cell.run(**{ref: glbls[ref] for ref in cell.refs if ref in glbls})
            glbls.update(new)
            try_format(output)  # what marimo sends: charts become Vega-Lite JSON
        return time.perf_counter() - start, time.process_time() - cpu


def timed(fn, runs: int = RUNS) -> tuple[float, float]:
    """Median wall time and median CPU time of ``runs`` calls of ``fn``, which returns (wall, cpu)
    seconds. On a busy shared machine the CPU time is the better guide to an idle server's time."""
    times = [fn() for _ in range(runs)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URL (default: build a scale 0.05 demo store)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or build_store(Path(tmp))
        os.environ["OUTCOMES_DATABASE_URL"] = url
        import marimo as mo

        cold = cold_first_render(url)
        app = load_app()
        app.run()  # warm the imports and caches of this process

        _, defs = app.run()
        rerunner = Rerunner(app)
        seed = {"publication_forced": False}
        rerunner.render_all(seed)
        warm = timed(lambda: rerunner.render_all(seed))
        metrics = list(defs["metric_picker"].options.values())
        places = defs["place_picker"].value
        cases = {
            "choose another metric": ("metric_picker", lambda i: mo.ui.dropdown(
                defs["metric_picker"].options, value=list(defs["metric_picker"].options)[1 + i % (len(metrics) - 1)])),
            "choose one place": ("place_picker", lambda i: mo.ui.multiselect(places, value=[places[i % len(places)]])),
            "choose a breakdown": ("breakdown_picker", lambda i: mo.ui.dropdown(
                defs["breakdown_picker"].options, value=list(defs["breakdown_picker"].options)[i % len(defs["breakdown_picker"].options)])),
            "priority outcomes only": ("priority_switch", lambda i: mo.ui.switch(value=bool(i % 2 == 0))),
            "publication mode on": ("publication_switch", lambda i: mo.ui.switch(value=True)),
        }
        print(f"explorer on a scale 0.05 demo store ({len(metrics)} metrics, {len(places)} places); medians of "
              f"{RUNS}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  first render, cold process (imports included) {cold * 1000:8.0f} ms wall               "
              f"target < 2,000 ms")
        print(f"  first render, new session (outputs formatted) {warm[0] * 1000:8.0f} ms wall, {warm[1] * 1000:5.0f} ms CPU"
              f"  target < 2,000 ms")
        for label, (name, make) in cases.items():
            cells = len(rerunner.downstream(name))
            counter = iter(range(1000))
            wall, cpu = timed(lambda: rerunner.rerun(defs, name, make(next(counter))))
            print(f"  filter change: {label:<30} {wall * 1000:8.0f} ms wall, {cpu * 1000:5.0f} ms CPU  target < 200 ms "
                  f"({cells} cells)")
        print(f"  governance pack export (every metric and place; PNG, SVG and PDF; a fresh process, "
              f"imports included) {export_pack(url, Path(tmp)):6.1f} s wall")


def export_pack(url: str, folder: Path) -> float:
    """``outcomes export`` of the whole pack, as a user runs it; seconds of wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "metrics.cli", "export", "--meeting", "Benchmark Board",
                    "--formats", "png,svg,pdf", "--out", str(folder / "pack")], check=True,
                   env={**os.environ, "OUTCOMES_DATABASE_URL": url}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
