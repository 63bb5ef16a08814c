"""notebooks/inequalities.py and notebooks/data_quality.py run headless (app.run()) over published
stores, and every notebook passes `marimo check --strict`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import altair as alt
import marimo
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from app_stores import NOTEBOOKS, chart_rows, demo_store, handbuilt_store, load_app, small_counts  # noqa: E402


@pytest.fixture(scope="module")
def handbuilt_url(tmp_path_factory) -> str:
    return handbuilt_store(tmp_path_factory.mktemp("apps_handbuilt"))


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> str:
    return demo_store(tmp_path_factory.mktemp("apps_demo"))


def _run(name: str, url: str, defs: dict | None = None):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTCOMES_DATABASE_URL", url)
        patch.delenv("OUTCOMES_PUBLICATION", raising=False)
        return load_app(name).run(defs=defs)


def _text(outputs) -> str:
    return "\n".join(getattr(o, "text", "") or "" for o in outputs)


@pytest.mark.parametrize("name", ["explorer", "inequalities", "data_quality"])
def test_marimo_check_passes(name):
    result = subprocess.run([sys.executable, "-m", "marimo", "check", "--strict", str(NOTEBOOKS / f"{name}.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ inequalities


@pytest.fixture(scope="module")
def inequalities(demo_url):
    return _run("inequalities", demo_url)


def test_inequalities_gradient_by_quintile_for_the_latest_period(inequalities):
    _, defs = inequalities
    quintiles = defs["quintiles"]
    assert set(quintiles["group"]) == {"1", "2", "3", "4", "5"} and set(quintiles["place"]) == {"Dudley", "Walsall"}
    plot = defs["gradient_plot"]
    assert isinstance(plot, alt.LayerChart)
    rows = chart_rows(plot)
    assert {r["quintile"] for r in rows} == {"1 (most deprived)", "2", "3", "4", "5 (least deprived)"}
    assert all(r["lower_95"] <= r["value"] <= r["upper_95"] for r in rows if r["lower_95"] is not None)
    # Only each place's latest period is drawn.
    assert len({r["period"] for r in rows}) == 1


def test_inequalities_gap_and_sii_over_time_with_the_gaps_spc(inequalities):
    _, defs = inequalities
    gaps = defs["gaps"]
    assert gaps.height and {"absolute_gap", "sii", "sii_lower_95", "mean", "upper_limit", "gap_direction"} <= set(gaps.columns)
    assert gaps["sii"].is_not_null().any()
    spec = defs["gap_plot"].to_dict()
    assert len(spec["vconcat"]) == 2 * gaps["place"].n_unique()  # gap SPC and SII for each place
    table = defs["gap_table"]
    assert set(table["Place"]) == set(gaps["place"]) and "Gap over time" in table.columns


def test_inequalities_highlight_the_neighbourhoods_with_the_greatest_need(inequalities):
    outputs, defs = inequalities
    hoods = defs["neighbourhoods"]
    assert set(hoods["breakdown"]) == {"neighbourhood"}
    assert set(hoods["need"]) <= {"Worse than the place", "Similar to the place", "Better than the place", "Not compared"}
    assert hoods.group_by("place").agg(pl.col("rank").min())["rank"].to_list() == [1, 1]
    # The greatest need ranks first, and is exactly "significantly worse than its place".
    assert (hoods["greatest_need"] == (hoods["comparison"] == "worse")).all()
    for place, rows in hoods.group_by("place"):
        ordered = rows.sort("rank")["greatest_need"].to_list()
        assert ordered == sorted(ordered, reverse=True), place  # every highlighted one before the rest
    assert len(defs["need_plots"]) == 2
    text = _text(outputs)
    assert "How they are chosen" in text and "significantly worse" in text


def test_inequalities_in_publication_mode(demo_url):
    _, defs = _run("inequalities", demo_url, defs={"publication_switch": marimo.ui.switch(value=True)})
    assert defs["publication"] is True
    assert small_counts(defs) == []
    gaps = defs["gaps"]
    withheld = gaps.filter(pl.col("suppressed"))
    assert withheld["absolute_gap"].is_null().all() and withheld["sii"].is_null().all()


def test_inequalities_without_quintile_data_says_so(handbuilt_url):
    # The hand-built extracts have two of the five quintiles: no gap is published.
    outputs, defs = _run("inequalities", handbuilt_url)
    assert "gradient_plot" not in defs
    assert "No metric in this run is broken down by deprivation" in _text(outputs)


# ------------------------------------------------------------------------------ data quality


@pytest.fixture(scope="module")
def data_quality(handbuilt_url):
    return _run("data_quality", handbuilt_url)


def test_data_quality_lists_runs_and_source_freshness(data_quality):
    _, defs = data_quality
    runs = defs["runs_table"]
    assert runs.height == 1 and runs["Status"].to_list() == ["published"]
    fresh = defs["freshness"]
    spells = fresh.filter(pl.col("Source") == "inpatient_spells").row(0, named=True)
    assert spells["Files"] == 3 and spells["Latest file"] == "spells_2024-06.csv"
    assert str(spells["Data to"]) == "2024-06-30" and spells["Days since data end"] > 0
    assert spells["Fresh?"].startswith("stale")  # June 2024 data is long past


def test_data_quality_quarantine_by_source_and_rule_without_identifiers(data_quality):
    outputs, defs = data_quality
    summary = defs["quarantine_summary"]
    spells = summary.filter(pl.col("source_id") == "inpatient_spells")
    assert spells["rows"].sum() == 4
    assert {"unknown_lsoa", "future_date"} <= set(spells["rule"])
    examples = defs["quarantine_examples"]
    assert examples.height >= 4
    shown = " ".join(str(v) for row in examples.iter_rows() for v in row) + _text(outputs)
    # The quarantined spells' identifiers (spell_id bad1..bad4, person_id P21..P24) never show.
    # Whole words only: marimo's random element ids and chart data hashes are hex strings that can
    # contain e.g. "bad1" by chance ("...af92ebad1c85").
    for identifier in ("bad1", "bad2", "bad3", "bad4", "P21", "P22", "P23", "P24"):
        assert not re.search(rf"\b{identifier}\b", shown), identifier
    assert "spell_id=" not in shown and "person_id=" not in shown
    assert "lsoa_code=E01099999" in shown  # the rest of the row does


def test_data_quality_coverage_measures(data_quality):
    _, defs = data_quality
    assert isinstance(defs["coverage_plot"], alt.TopLevelMixin)
    trend = defs["coverage_trend"]
    assert set(trend["metric_id"]) == {"spells_with_discharge_ready_date"} and trend.height
    recording = defs["ethnicity_recording"]
    assert "% ethnicity not stated" in recording.columns and recording.height


def test_data_quality_without_a_run(tmp_path):
    outputs, defs = _run("data_quality", f"sqlite:///{tmp_path / 'empty.db'}")
    assert defs["runs_table"].height == 0
    assert "freshness" not in defs
