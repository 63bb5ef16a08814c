"""metrics.export: the governance pack (files, formats, manifest with alt text, determinism,
disclosure control) and the published views of the judgement frames it shares with the apps."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

import store  # noqa: E402
from app_stores import METRICS, demo_store, handbuilt_store  # noqa: E402
from metrics import export  # noqa: E402

MEETING = "Dudley Place Board, March 2026"
IDENTIFIERS = {"person_id", "spell_id", "contact_id", "service_request_id", "nhs_number"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return store.get_engine(handbuilt_store(tmp_path_factory.mktemp("export_store")))


@pytest.fixture(scope="module")
def pack(engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    return out, export.export_pack(engine, meeting=MEETING, out=out)


def test_pack_has_a_chart_per_metric_and_place_a_summary_the_figures_and_a_manifest(pack):
    out, manifest = pack
    files = {f["file"]: f for f in manifest["files"]}
    assert (out / "manifest.json").is_file() and json.loads((out / "manifest.json").read_text()) == json.loads(
        json.dumps(manifest, default=str))
    spc = [f for f in manifest["files"] if f["kind"] == "spc"]
    assert {(f["metric_id"], f["place"]) for f in spc} == {(m, p) for m in METRICS for p in ("Dudley", "Walsall")}
    assert {f["format"] for f in spc} == {"png", "svg", "pdf"}
    assert {"00_summary_scorecard.pdf", "00_summary_scorecard.png", "00_summary_scorecard.svg",
            "published_figures.csv"} <= set(files)
    for name, entry in files.items():
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        head = path.read_bytes()[:16]
        if name.endswith(".pdf"):
            assert head.startswith(b"%PDF-"), name
        elif name.endswith(".png"):
            assert head.startswith(b"\x89PNG\r\n\x1a\n"), name
        elif name.endswith(".svg"):
            text = path.read_text()
            assert text.lstrip().startswith("<svg") and text.rstrip().endswith("</svg>"), name
        assert len(entry["alt_text"]) > 40, name  # every file has alt text worth reading
    assert manifest["meeting"] == MEETING and manifest["run"]["id"] == 1
    assert [m["metric_id"] for m in manifest["metrics"]] and all(m["content_hash"] for m in manifest["metrics"])
    assert manifest["disclosure"].startswith("Small numbers: counts of 1 to 7 suppressed")


def test_chart_text_has_title_latest_value_icons_and_provenance_footer(pack):
    out, manifest = pack
    svg = (out / next(f["file"] for f in manifest["files"] if f["kind"] == "spc" and f["format"] == "svg"
                      and f["metric_id"] == "discharged_on_ready_date" and f["place"] == "Dudley")).read_text()
    for text in ("Patients discharged on their discharge ready date", "Dudley · latest:", "Variation:",
                 "Source: inpatient_spells", "Run 1, published", "version 1 (content hash",
                 "Disclosure control: Small numbers", f"Prepared for {MEETING}", "Trial limits"):
        assert text in svg, text
    alt_text = next(f["alt_text"] for f in manifest["files"] if f["file"].endswith("discharged_on_ready_date_dudley_spc.svg"))
    assert alt_text.startswith("SPC chart of Patients discharged on their discharge ready date in Dudley")
    summary = (out / "00_summary_scorecard.svg").read_text()
    assert "outcomes scorecard" in summary and "Variation" in summary and "Assurance" in summary


def test_the_same_run_exports_byte_identical_svg(engine, pack, tmp_path):
    out, manifest = pack
    again = export.export_pack(engine, meeting=MEETING, out=tmp_path, formats=("svg",))
    first = {f["file"]: f["sha256"] for f in manifest["files"] if f["format"] in ("svg", "csv")}
    second = {f["file"]: f["sha256"] for f in again["files"] if f["format"] in ("svg", "csv")}
    assert first == second and len(first) > 10
    for name in first:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_published_figures_have_no_small_counts_and_no_identifiers(pack):
    out, _ = pack
    with (out / "published_figures.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and not IDENTIFIERS & set(rows[0])
    assert {"metric_id", "place", "period", "breakdown", "group", "numerator", "denominator", "value",
            "suppressed", "suppression_note", "run_id"} <= set(rows[0])
    for row in rows:
        for column in ("numerator", "denominator"):
            if row[column] != "":
                assert not 1 <= float(row[column]) <= 7, row
                assert float(row[column]) % 5 == 0, row  # rounded to the nearest 5
        if row["metric_id"] == "delayed_bed_days" and row["value"] != "":
            assert not 1 <= float(row["value"]) <= 7, row  # a count metric's value is a count
    assert any(r["suppressed"] == "true" and r["suppression_note"] for r in rows)
    frame = pl.read_csv(out / "published_figures.csv")
    assert set(frame["metric_id"]) == set(METRICS)


def test_choosing_places_metrics_and_formats(engine, tmp_path):
    manifest = export.export_pack(engine, meeting=MEETING, out=tmp_path, places=["Walsall"],
                                  metrics=["discharged_on_ready_date"], formats=["svg"])
    charts = [f for f in manifest["files"] if f["kind"] == "spc"]
    assert [(f["metric_id"], f["place"], f["format"]) for f in charts] == [("discharged_on_ready_date", "Walsall", "svg")]
    # The summary scorecard is always there as PDF and PNG.
    assert {f["format"] for f in manifest["files"] if f["kind"] == "scorecard"} == {"pdf", "png", "svg"}
    figures = pl.read_csv(tmp_path / "published_figures.csv")
    assert set(figures["place"]) == {"Walsall"} and set(figures["metric_id"]) == {"discharged_on_ready_date"}
    with pytest.raises(ValueError, match="unknown format"):
        export.export_pack(engine, meeting=MEETING, out=tmp_path, formats=["gif"])
    with pytest.raises(ValueError, match="not in run"):
        export.export_pack(engine, meeting=MEETING, out=tmp_path, metrics=["no_such_metric"])
    with pytest.raises(ValueError, match="place"):
        export.export_pack(engine, meeting=MEETING, out=tmp_path, places=["Atlantis"])


def test_no_published_run(tmp_path):
    with pytest.raises(LookupError, match="no published run"):
        export.export_pack(store.get_engine(f"sqlite:///{tmp_path / 'empty.db'}"), meeting=MEETING, out=tmp_path)


def test_export_command(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", str(engine.url))
    runner = CliRunner()
    result = runner.invoke(export.export_command, ["--meeting", MEETING, "--place", "Dudley", "--metrics",
                                                   "delayed_bed_days, spells_with_discharge_ready_date",
                                                   "--formats", "svg,png", "--out", str(tmp_path / "pack")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert {f["metric_id"] for f in manifest["files"] if f["kind"] == "spc"} == {
        "delayed_bed_days", "spells_with_discharge_ready_date"}
    assert "files written" in result.output
    bad = runner.invoke(export.export_command, ["--meeting", MEETING, "--formats", "tiff", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown format" in bad.output
    assert export.export_command.help and "Example:" in export.export_command.help


def test_inequality_charts_where_quintiles_are_published(tmp_path_factory):
    engine = store.get_engine(demo_store(tmp_path_factory.mktemp("export_demo")))
    out = tmp_path_factory.mktemp("demo_pack")
    manifest = export.export_pack(engine, meeting=MEETING, out=out, metrics=["breast_screening_coverage"],
                                  formats=["svg"])
    inequality = [f for f in manifest["files"] if f["kind"] == "inequality"]
    assert {f["place"] for f in inequality} == {"Dudley", "Walsall"}
    svg = (out / inequality[0]["file"]).read_text()
    assert "by deprivation" in svg and "size of the gap" in svg and "slope index of inequality" in svg
    assert "quintile" in inequality[0]["alt_text"] and "gap" in inequality[0]["alt_text"]


def test_published_views_withhold_what_the_values_withhold(engine):
    definitions = store.read_definitions(engine)
    values = store.read_values(engine)
    published = export.published_values(values, definitions)
    assert not published.filter(pl.col("numerator").is_between(1, 7) | pl.col("denominator").is_between(1, 7)).height
    spc = export.published_spc(store.read_frame(engine, "spc"), published)
    assert spc.height == store.read_frame(engine, "spc").height
    assert spc.filter(pl.col("suppressed"))["value"].is_null().all() and spc["suppressed"].any()
    card = export.published_scorecard(store.read_frame(engine, "scorecard"), published)
    withheld = card.filter(pl.col("suppressed"))
    assert withheld.height and withheld["value"].is_null().all() and withheld["vs_other_place"].is_null().all()
    assert not card.filter(pl.col("numerator").is_between(1, 7) | pl.col("denominator").is_between(1, 7)).height
    info = export.metric_info(definitions)
    assert set(info["metric_id"]) == set(METRICS) and info["suppress_below"].to_list() == [8] * len(METRICS)
