"""notebooks/explorer.py: run headless over a store published from the hand-built extracts, checked by
`marimo check`, and served by `marimo run`."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import altair as alt
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from handbuilt import write_handbuilt  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOK = PROJECT / "notebooks" / "explorer.py"
OUTCOMES = {"Timely discharge from hospital", "More people attending community services",
            "Improving breast cancer screening coverage"}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """A SQLite store holding one run published from the hand-built extracts."""
    import store
    from metrics.refresh import refresh

    root = tmp_path_factory.mktemp("explorer")
    url = f"sqlite:///{root / 'store.db'}"
    refresh(write_handbuilt(root / "extracts"), definitions_dir=PROJECT / "definitions",
            engine=store.get_engine(url), as_of=dt.date(2026, 1, 1))
    return url


def _load_app():
    spec = importlib.util.spec_from_file_location("explorer_notebook", NOTEBOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def _run(url: str, defs: dict | None = None):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTCOMES_DATABASE_URL", url)
        return _load_app().run(defs=defs)


@pytest.fixture(scope="module")
def explorer(store_url):
    """(outputs, defs) of the app run once with its default selections."""
    return _run(store_url)


def test_header_names_the_published_run(explorer):
    _, defs = explorer
    run = defs["run"]
    assert run["status"] == "published" and run["id"] == defs["run_id"]
    assert run["as_of"] == dt.date(2026, 1, 1) and run["code_version"]
    assert set(defs["source_summary"]["Source"]) >= {"inpatient_spells", "community_contacts", "breast_screening"}
    assert defs["source_summary"].filter(pl.col("Source") == "inpatient_spells")["Quarantined"].item() == 4


def test_overview_has_every_metric_and_place_for_its_default_period(explorer):
    _, defs = explorer
    overview = defs["overview"]
    assert overview.height == 14  # 7 metrics x 2 places
    assert overview.select("metric_id", "place").unique().height == 14
    assert set(overview["place"]) == {"Dudley", "Walsall"}
    assert set(overview["outcome"]) == OUTCOMES
    periods = dict(overview.select("metric_id", "period_type").unique().iter_rows())
    assert periods["breast_screening_coverage"] == "snapshot"
    assert periods["discharged_on_ready_date"] == "month"
    # Each place's latest month: Walsall has no June spells in the hand-built extracts.
    latest = overview.filter(pl.col("metric_id") == "discharged_on_ready_date").select("place", "period")
    assert dict(latest.iter_rows()) == {"Dudley": "Jun 2024", "Walsall": "May 2024"}
    assert overview.filter(pl.col("metric_id") == "discharged_on_ready_date")["target"].to_list() == [90.0, 90.0]


def test_default_selection_gives_values_charts_and_definition(explorer):
    _, defs = explorer
    assert defs["place_picker"].value == ["Dudley", "Walsall"]
    assert defs["metric_picker"].value in set(defs["overview"]["metric_id"])
    assert defs["breakdown_picker"].value == "imd_quintile"
    assert not defs["selected"].is_empty() and not defs["trend_values"].is_empty()
    assert set(defs["selected"]["breakdown"]) == {"imd_quintile"}
    assert set(defs["trend_values"]["breakdown"]) == {"overall"}
    assert isinstance(defs["trend_plot"], alt.TopLevelMixin)
    assert isinstance(defs["breakdown_plot"], alt.TopLevelMixin)
    table = defs["selected_table"]
    assert table.height == defs["selected"].height
    assert not {"run_id", "metric_version", "Run", "run"} & set(table.columns)
    assert "1 (most deprived)" in set(table["Group"])
    metric = defs["metric"]
    for field in ("outcome", "definition", "numerator", "denominator", "ci_method", "polarity", "caveats",
                  "owner", "version", "content_hash"):
        assert field in metric, field


def test_chosen_metric_and_place_drive_the_charts(store_url):
    import marimo as mo

    metric_picker = mo.ui.dropdown({"On ready date": "discharged_on_ready_date"}, value="On ready date")
    place_picker = mo.ui.multiselect(["Dudley", "Walsall"], value=["Dudley"])
    _, defs = _run(store_url, defs={"metric_picker": metric_picker, "place_picker": place_picker})
    assert defs["period_picker"].value == "month"
    trend = defs["trend_values"]
    assert set(trend["place"]) == {"Dudley"} and set(trend["period_type"]) == {"month"}
    assert trend["value"].to_list() == pytest.approx([200 / 3, 50.0, 0.0])
    spec = defs["trend_plot"].to_dict()
    assert any(layer["mark"]["type"] == "rule" for layer in spec["layer"])  # the 90% target
    assert "Target 90%" in str(spec["datasets"])
    assert defs["metric"]["target"]["value"] == 90


def test_without_a_published_run_the_app_says_how_to_make_one(tmp_path):
    outputs, defs = _run(f"sqlite:///{tmp_path / 'empty.db'}")
    assert defs["run"] is None
    assert "overview" not in defs and "selected" not in defs
    assert any("outcomes refresh --data DIR" in getattr(o, "text", "") for o in outputs)


def test_marimo_check_passes():
    result = subprocess.run([sys.executable, "-m", "marimo", "check", "--strict", str(NOTEBOOK)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_marimo_run_serves_the_app(store_url, tmp_path):
    port = _free_port()
    env = {**os.environ, "OUTCOMES_DATABASE_URL": store_url}
    log = tmp_path / "marimo.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", str(NOTEBOOK), "--headless", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    status = response.status
                    page = response.read().decode("utf-8", "replace")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        assert status == 200, log.read_text()
        assert "<html" in page.lower() and "marimo" in page.lower()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
