"""notebooks/explorer.py run headless over a store published from the hand-built extracts: the
scorecard, a metric's SPC chart, breakdowns, definition and provenance, publication mode (and that
the address can only turn it on), `marimo check`, and `marimo run` serving it."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import altair as alt
import marimo
import polars as pl
import pytest
from polars.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).parent))

from app_stores import METRICS, NOTEBOOKS, PROJECT, chart_rows, handbuilt_store, load_app, small_counts  # noqa: E402

NOTEBOOK = NOTEBOOKS / "explorer.py"
OUTCOMES = {"Timely discharge from hospital", "More people attending community services",
            "Improving breast cancer screening coverage"}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """A SQLite store holding one run published from the hand-built extracts."""
    return handbuilt_store(tmp_path_factory.mktemp("explorer"))


class _Params:
    """Stands in for ``mo.query_params()``: the address's query parameters."""

    def __init__(self, **params: list[str]) -> None:
        self._params = params

    def get_all(self, key: str) -> list[str]:
        return list(self._params.get(key, []))


def _run(url: str, defs: dict | None = None, *, env: dict | None = None, params: _Params | None = None):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTCOMES_DATABASE_URL", url)
        patch.delenv("OUTCOMES_PUBLICATION", raising=False)
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        if params is not None:
            patch.setattr(marimo, "query_params", lambda: params)
        return load_app("explorer").run(defs=defs)


@pytest.fixture(scope="module")
def explorer(store_url):
    """(outputs, defs) of the app run once with its default selections."""
    return _run(store_url)


def _html(outputs) -> str:
    return "\n".join(getattr(o, "text", "") or "" for o in outputs)


def test_header_names_the_published_run(explorer):
    _, defs = explorer
    run = defs["run"]
    assert run["status"] == "published" and run["id"] == defs["run_id"]
    assert run["as_of"] == dt.date(2026, 1, 1) and run["code_version"]
    assert set(defs["source_summary"]["Source"]) >= {"inpatient_spells", "community_contacts", "breast_screening"}
    assert defs["source_summary"].filter(pl.col("Source") == "inpatient_spells")["Quarantined"].item() == 4
    assert defs["publication"] is False


def test_scorecard_has_every_metric_and_place_with_icons_and_comparisons(explorer):
    outputs, defs = explorer
    card = defs["scorecard"]
    assert card.height == 14 and card.select("metric_id", "place").unique().height == 14  # 7 metrics x 2 places
    assert set(card["metric_id"]) == set(METRICS) and set(card["place"]) == {"Dudley", "Walsall"}
    assert set(card["outcome"]) == OUTCOMES
    assert {"group", "value_type", "variation_icon", "assurance_icon", "vs_other_place", "vs_england",
            "inequality_gap", "gap_direction", "priority"} <= set(card.columns)
    # Each place's latest month: Walsall has no June spells in the hand-built extracts.
    latest = card.filter(pl.col("metric_id") == "discharged_on_ready_date").select("place", "period_start")
    assert dict(latest.iter_rows()) == {"Dudley": dt.date(2024, 6, 1), "Walsall": dt.date(2024, 5, 1)}
    rows = defs["scorecard_display"]
    assert rows.height == 14
    drd = rows.filter(pl.col("metric_id") == "discharged_on_ready_date", pl.col("place") == "Dudley").row(0, named=True)
    assert drd["period"] == "Jun 2024" and drd["target_text"].startswith("90.0%")
    assert drd["value_text"].startswith("0.0%")  # 0 of 1 in June: nothing hidden outside publication mode
    html = _html(outputs)
    assert 'class="oe-scorecard"' in html and "<caption>" in html and 'scope="col"' in html
    # Badges carry their meaning in words, not only colour.
    assert "oe-badge oe-variation" in html and "Common cause" in html and "oe-badge oe-assurance" in html


def test_scorecard_filters_by_place_group_and_priority(store_url):
    place = marimo.ui.multiselect(["Dudley", "Walsall"], value=["Walsall"])
    group = marimo.ui.multiselect(["Urgent and emergency care", "Care closer to home", "Cancer and screening"],
                                  value=["Urgent and emergency care"])
    priority = marimo.ui.switch(value=True)
    _, defs = _run(store_url, defs={"place_picker": place, "group_picker": group, "priority_switch": priority})
    view = defs["scorecard_view"]
    assert set(view["place"]) == {"Walsall"}
    assert set(view["metric_id"]) == {"discharged_on_ready_date"}  # the urgent care group's one priority metric
    assert defs["scorecard_display"].height == 1


def test_selecting_a_metric_shows_its_spc_chart_breakdowns_definition_and_provenance(store_url):
    picker = marimo.ui.dropdown({"On ready date": "discharged_on_ready_date"}, value="On ready date")
    places = marimo.ui.multiselect(["Dudley", "Walsall"], value=["Dudley"])
    _, defs = _run(store_url, defs={"metric_picker": picker, "place_picker": places})
    spc = defs["metric_spc"]
    assert set(spc["place"]) == {"Dudley"} and set(spc["metric_id"]) == {"discharged_on_ready_date"}
    assert spc["value"].to_list() == pytest.approx([200 / 3, 50.0, 0.0])
    assert spc["trial_limits"].all()  # three months: trial limits
    chart = defs["spc_plot"]
    assert isinstance(chart, alt.LayerChart)
    spec = chart.to_dict()
    assert any("Trial limits" in line for line in spec["title"]["subtitle"])
    rows = chart_rows(chart)
    assert {"Mean", "Process limits", "Target"} <= {r.get("line") for r in rows}
    assert {r["type"] for r in rows if r.get("type")} <= {"Common cause", "Special cause: improvement",
                                                       "Special cause: concern"}
    assert defs["period_picker"].value == "month"
    assert defs["breakdown_picker"].value == "imd_quintile"
    assert set(defs["breakdown_picker"].options.values()) >= {"neighbourhood", "imd_quintile", "age_band", "sex",
                                                              "ethnicity"}
    assert defs["trend_values"]["value"].to_list() == pytest.approx([200 / 3, 50.0, 0.0])
    assert isinstance(defs["trend_plot"], alt.TopLevelMixin) and isinstance(defs["breakdown_plot"], alt.TopLevelMixin)
    table = defs["selected_table"]
    assert "1 (most deprived)" in set(table["Group"]) and "95% lower" in table.columns
    assert not {"run_id", "metric_version", "Run", "run"} & set(table.columns)
    metric = defs["metric"]
    assert metric["target"]["value"] == 90
    for field in ("outcome", "definition", "numerator", "denominator", "ci_method", "polarity", "caveats",
                  "owner", "version", "content_hash", "disclosure"):
        assert field in metric, field
    provenance = defs["provenance"]
    assert provenance["Run"] == defs["run_id"] and provenance["Data as of"] == "01 Jan 2026"
    assert provenance["Definition content hash"] == metric["content_hash"]
    assert provenance["Definition version"] == metric["version"] == 1


def test_every_breakdown_can_be_chosen(store_url):
    for breakdown in ("neighbourhood", "age_band", "sex", "ethnicity"):
        picker = marimo.ui.dropdown({breakdown: breakdown}, value=breakdown)
        metric = marimo.ui.dropdown({"m": "discharged_on_ready_date"}, value="m")
        _, defs = _run(store_url, defs={"breakdown_picker": picker, "metric_picker": metric})
        assert set(defs["selected"]["breakdown"]) == {breakdown}
        assert isinstance(defs["breakdown_plot"], alt.TopLevelMixin)
        assert defs["selected"]["lower_95"].is_not_null().any()


def test_publication_mode_shows_no_count_from_1_to_7(store_url):
    switch = marimo.ui.switch(value=True)
    for metric_id in ("discharged_on_ready_date", "delayed_bed_days", "breast_screening_coverage"):
        metric = marimo.ui.dropdown({metric_id: metric_id}, value=metric_id)
        outputs, defs = _run(store_url, defs={"publication_switch": switch, "metric_picker": metric})
        assert defs["publication"] is True
        assert small_counts(defs) == [], metric_id
        shown = defs["shown_values"]
        assert shown["suppressed"].any() and shown["suppression_note"].drop_nulls().len()
        if metric_id == "delayed_bed_days":  # a count metric: its value is its count
            assert not shown.filter(pl.col("value").is_between(1, 7)).height
            assert not defs["metric_spc"].filter(pl.col("value").is_between(1, 7)).height
            for plot in ("spc_plot", "trend_plot", "breakdown_plot"):
                assert not [r for r in chart_rows(defs[plot]) if isinstance(r.get("value"), (int, float))
                            and 1 <= r["value"] <= 7], plot
        assert "Small numbers: counts of 1 to 7 suppressed" in defs["metric_note"]
        assert "Small numbers" in defs["scorecard_note"]
        html = _html(outputs)
        assert "Publication mode is on" in html and "Disclosure control" in html
    # Without publication mode the same small counts are there (so the check above means something).
    _, plain = _run(store_url, defs={"metric_picker": marimo.ui.dropdown({"m": "discharged_on_ready_date"}, value="m")})
    assert small_counts(plain)


def test_publication_mode_is_forced_by_the_deployment_and_the_address_cannot_turn_it_off(store_url):
    # Forced for the deployment: the address asking for it off changes nothing, the switch is disabled,
    # and even a switch value sent as off is ignored.
    _, defs = _run(store_url, env={"OUTCOMES_PUBLICATION": "1"}, params=_Params(publication=["0", "off", "false"]))
    assert defs["publication_forced"] is True and defs["publication"] is True
    assert defs["publication_switch"].value is True
    assert small_counts(defs) == []
    _, defs = _run(store_url, env={"OUTCOMES_PUBLICATION": "1"}, params=_Params(publication=["off"]),
                   defs={"publication_switch": marimo.ui.switch(value=False)})
    assert defs["publication"] is True and small_counts(defs) == []
    # The address can turn it on ...
    _, defs = _run(store_url, params=_Params(publication=["1"]))
    assert defs["publication"] is True and small_counts(defs) == []
    # ... and asking for it twice, once off, still leaves it on.
    _, defs = _run(store_url, params=_Params(publication=["0", "true"]))
    assert defs["publication"] is True
    # Anything else leaves the team's own view, with the switch free to use.
    _, defs = _run(store_url, params=_Params(publication=["0"], other=["1"]))
    assert defs["publication"] is False and defs["publication_forced"] is False


def _published_as_first_written(url: str, run_id: int, metric_id: str) -> dict:
    """Publication mode's scorecard and metric values worked out as the app first did, in the cells
    the switch re-ran: what the app, which now protects them once per run and metric whatever the
    switch says, must still show."""
    import store
    from metrics import export

    engine = store.get_engine(url)
    definitions = store.read_definitions(engine, run=run_id)
    card = store.read_frame(engine, "scorecard", run=run_id)
    gaps = store.read_frame(engine, "inequalities", run=run_id)
    keys = ["metric_id", "period_type", "period_start"]
    shown = pl.concat([card.select(keys), gaps.sort("period_start").group_by("metric_id", "place")
                       .last().select(keys)]).unique()
    values = store.read_values(engine, run=run_id, period_type=card["period_type"].unique().to_list())
    published = export.published_values(values.join(shown, on=keys), definitions)
    scorecard = export.published_scorecard(card, published, export.published_inequalities(gaps, published))
    info = export.metric_info(definitions)
    scorecard = scorecard.drop("group", "value_type", strict=False).join(
        info.select("metric_id", "group", "value_type"), on="metric_id", how="left")
    metric_values = export.published_values(
        store.read_values(engine, metric=metric_id, run=run_id, provenance=True), definitions)
    spc = store.read_frame(engine, "spc", run=run_id)
    return {"scorecard": scorecard, "scorecard_note": export.disclosure_note(published),
            "shown_values": metric_values, "metric_note": export.disclosure_note(metric_values, info),
            "metric_spc": export.published_spc(spc.filter(pl.col("metric_id") == metric_id,
                                                          pl.col("breakdown") == "overall"), metric_values)}


def test_publication_mode_shows_exactly_what_it_showed_when_the_switch_did_the_work(store_url):
    switch = marimo.ui.switch(value=True)
    for metric_id in ("discharged_on_ready_date", "delayed_bed_days", "breast_screening_coverage"):
        metric = marimo.ui.dropdown({metric_id: metric_id}, value=metric_id)
        _, defs = _run(store_url, defs={"publication_switch": switch, "metric_picker": metric})
        before = _published_as_first_written(store_url, defs["run_id"], metric_id)
        assert defs["scorecard"]["suppressed"].any() and before["shown_values"]["suppressed"].any()
        for name in ("scorecard", "shown_values", "metric_spc"):
            assert_frame_equal(defs[name], before[name])
        assert defs["scorecard_note"] == before["scorecard_note"] and defs["metric_note"] == before["metric_note"]


def test_switching_publication_mode_on_neither_protects_again_nor_resets_the_choices_made():
    from marimo._ast.app import InternalApp

    internal = InternalApp(load_app("explorer"))
    switch_cells = internal.graph.get_defining_cells("publication_switch")
    rerun = set().union(*(internal.cell_manager.cell_data_at(cid).cell.defs
                          for cid in set().union(*(internal.graph.descendants(cid) for cid in switch_cells))))
    assert {"scorecard", "shown_values", "metric_spc", "spc_plot"} <= rerun
    assert not {"protected_scorecard", "protected_values", "place_picker", "period_picker", "breakdown_picker"} & rerun


def test_without_a_published_run_the_app_says_how_to_make_one(tmp_path):
    outputs, defs = _run(f"sqlite:///{tmp_path / 'empty.db'}")
    assert defs["run"] is None
    assert "scorecard" not in defs and "selected" not in defs
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
