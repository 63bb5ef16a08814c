"""The self-documenting catalogue: complete metadata for every definition, one page per metric in
Markdown and HTML, values shown when given, and everything escaped."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import polars as pl
import pytest

from conftest import PROJECT_DEFINITIONS as DEFINITIONS
from metrics.catalogue import REQUIRED_METADATA, missing_metadata, period_label, render_catalogue
from metrics.definitions import load_catalogue, load_definitions

# Every row of DESIGN.md section 4 and the metric(s) that cover it. "Health inequalities" (SII and
# the quintile gap) is computed by the judgement stage for every metric with an imd_quintile breakdown.
DESIGN_ROWS = {
    "Timely discharge from hospital": ["discharged_on_ready_date", "mean_discharge_delay_days", "delayed_bed_days"],
    "More people attending community services": ["community_contacts_per_1000",
                                                 "people_seen_by_community_services_per_1000"],
    "Breast cancer screening coverage": ["breast_screening_coverage"],
    "Reducing circulatory disease deaths": ["circulatory_deaths_under_75"],
    "School readiness": ["school_readiness_gld"],
    "Physical health in severe mental illness": ["smi_physical_health_checks"],
    "2-hour urgent community response": ["ucr_two_hour_response"],
    "Reablement": ["reablement_at_home_91_days"],
    "Reduced loneliness / social isolation": ["social_contact_as_much_as_wanted"],
    "Reducing infant mortality": ["infant_mortality"],
    "Child healthy weight": ["reception_obesity", "year6_obesity"],
    "Immunisation uptake": ["mmr2_by_age_5"],
    "NHS Health Check recovery": ["nhs_health_check_received"],
    "Diabetes pathway": ["diabetes_eight_care_processes"],
    "Frailty and falls prevention": ["falls_admissions_65_plus"],
    "End of life": ["deaths_in_hospital"],
    "Integrated front door / UTC": ["ae_four_hour_performance"],
    "Elective waiting times": ["rtt_within_18_weeks"],
    "Emotional resilience, children and young people": ["cyp_mental_health_access"],
    "Increased use of digital technology": ["nhs_app_registration"],
    "Care close to home": ["acsc_emergency_admissions"],
}
FINGERTIPS = {"breast_screening_coverage": 22001, "circulatory_deaths_under_75": 40401, "school_readiness_gld": 90631,
              "social_contact_as_much_as_wanted": 90280, "infant_mortality": 92196, "reception_obesity": 90319,
              "year6_obesity": 90323, "nhs_health_check_received": 91112, "falls_admissions_65_plus": 22401,
              "deaths_in_hospital": 93474}


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(DEFINITIONS)


def test_every_definition_has_its_metadata(catalogue):
    assert len(catalogue.metrics) >= 22
    problems = {m.id: missing_metadata(m) for m in catalogue.metrics.values() if missing_metadata(m)}
    assert problems == {}


def test_the_catalogue_covers_every_design_row(catalogue):
    for row, metric_ids in DESIGN_ROWS.items():
        for metric_id in metric_ids:
            assert metric_id in catalogue.metrics, (row, metric_id)
    for metric_id, fingertips_id in FINGERTIPS.items():
        assert catalogue.metrics[metric_id].fingertips_id == fingertips_id
    assert {m.value_type for m in catalogue.metrics.values()} >= {"proportion", "rate", "dsr", "mean", "count"}


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_renders_every_definition(catalogue, tmp_path, fmt):
    files = render_catalogue(catalogue, tmp_path, fmt)
    assert files[0] == tmp_path / f"index.{fmt}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"index.{fmt}", *(f"{m}.{fmt}" for m in catalogue.metrics)])
    index = (tmp_path / f"index.{fmt}").read_text(encoding="utf-8")
    show = html.escape if fmt == "html" else (lambda s: s)
    for metric in catalogue.metrics.values():
        page = (tmp_path / f"{metric.id}.{fmt}").read_text(encoding="utf-8")
        assert f"{metric.id}.{fmt}" in index, metric.id
        text = _plain(page, fmt)
        for expected in (metric.title, metric.outcome, metric.owner, metric.method, " ".join(metric.rationale.split())):
            assert expected in text, (metric.id, expected)
        for spec in (metric.numerator, metric.denominator):
            if spec is not None and spec.filter:
                assert show(" ".join(spec.filter.split())) in page, (metric.id, spec.filter)
        if metric.target:
            assert metric.target.source in text
        assert "Metadata incomplete" not in text
        if fmt == "html":
            assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    for group in {m.group for m in catalogue.metrics.values()}:
        assert show(group) in index
    assert "slope index of inequality" in _plain(index, fmt)


def _plain(page: str, fmt: str) -> str:
    """Page text without markup (HTML tags and entities, Markdown escapes)."""
    if fmt == "html":
        return html.unescape(re.sub(r"<[^>]+>", "", page))
    return re.sub(r"\\(.)", r"\1", page)


def _values() -> pl.DataFrame:
    rows = []
    for place, value in (("Dudley", 71.1), ("Walsall", 66.6)):
        for end, v in ((dt.date(2024, 3, 31), value - 1), (dt.date(2025, 3, 31), value)):
            rows.append({"metric_id": "breast_screening_coverage", "place": place, "period_type": "snapshot",
                         "period_start": end, "period_end": end, "breakdown": "overall", "group": place,
                         "numerator": 100.0, "denominator": 140.0, "value": v, "lower_95": v - 2, "upper_95": v + 2,
                         "suppressed": False, "suppression_note": None})
    rows.append({"metric_id": "circulatory_deaths_under_75", "place": "Dudley", "period_type": "calendar_year",
                 "period_start": dt.date(2025, 1, 1), "period_end": dt.date(2025, 12, 31), "breakdown": "overall",
                 "group": "Dudley", "numerator": None, "denominator": None, "value": None, "lower_95": None,
                 "upper_95": None, "suppressed": True, "suppression_note": "fewer than 10 events"})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_latest_values_per_place(catalogue, tmp_path, fmt):
    run = {"run_id": 42, "as_of": "2025-04-01", "code_version": "0.1.0"}
    render_catalogue(catalogue, tmp_path, fmt, values=_values(), run=run)
    page = _plain((tmp_path / f"breast_screening_coverage.{fmt}").read_text(encoding="utf-8"), fmt)
    assert "Latest values" in page and "refresh run 42" in page
    assert "71.1" in page and "66.6" in page and "at 31 Mar 2025" in page
    assert "70.1" not in page  # only the latest period
    index = _plain((tmp_path / f"index.{fmt}").read_text(encoding="utf-8"), fmt)
    assert "Dudley 71.1, Walsall 66.6 (at 31 Mar 2025)" in index
    circulatory = _plain((tmp_path / f"circulatory_deaths_under_75.{fmt}").read_text(encoding="utf-8"), fmt)
    assert "suppressed" in circulatory and "fewer than 10 events" in circulatory
    other = _plain((tmp_path / f"infant_mortality.{fmt}").read_text(encoding="utf-8"), fmt)
    assert "no values published" in other


def _edit(root: Path, metric: str, old: str, new: str) -> None:
    path = root / "metrics" / f"{metric}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_small_numbers_withheld_without_the_publication_view(catalogue, tmp_path):
    raw = _values().drop("suppressed", "suppression_note").with_columns(
        pl.when(pl.col("place") == "Walsall").then(3.0).otherwise(pl.col("numerator")).alias("numerator"))
    render_catalogue(catalogue, tmp_path, "md", values=raw)
    page = _plain((tmp_path / "breast_screening_coverage.md").read_text(encoding="utf-8"), "md")
    assert "71.1" in page and "66.6" not in page and "suppressed" in page
    assert "| Numerator |" not in page  # counts are shown only from the publication view


@pytest.fixture
def definitions_dir(tmp_path):
    """A private copy of the whole shipped catalogue (conftest's is the foundation subset)."""
    import shutil

    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS, target)
    return target


def test_text_is_escaped(definitions_dir, tmp_path):
    title = 'Coverage <script>alert("x")</script> | A&E *bold* [link](javascript:alert(1))'
    _edit(definitions_dir, "breast_screening_coverage",
          "title: Breast cancer screening coverage (women aged 53 to 70)", f"title: '{title}'")
    _edit(definitions_dir, "breast_screening_coverage", "owner: Cancer programme and public health",
          "owner: '<img src=x onerror=alert(1)>'")
    catalogue = load_catalogue(definitions_dir)
    render_catalogue(catalogue, tmp_path / "html", "html")
    render_catalogue(catalogue, tmp_path / "md", "md")
    page = (tmp_path / "html" / "breast_screening_coverage.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page
    assert html.escape(title) in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&#x27;S&#x27;" in (tmp_path / "html" / "falls_admissions_65_plus.html").read_text(encoding="utf-8")
    index = (tmp_path / "html" / "index.html").read_text(encoding="utf-8")
    assert "<script" not in index and html.escape(title) in index
    md_index = (tmp_path / "md" / "index.md").read_text(encoding="utf-8")
    row = next(line for line in md_index.splitlines() if line.startswith("| ") and "breast_screening_coverage.md" in line)
    assert row.count(" | ") == 6, "a | in the title must not add a table column"
    assert r"\<script\>" in md_index and r"\[link\]" in md_index


def test_missing_metadata_is_reported(definitions_dir):
    _edit(definitions_dir, "rtt_within_18_weeks", "fingertips_id: null\n", "")
    _edit(definitions_dir, "rtt_within_18_weeks", "group: Planned care\n", "")
    _edit(definitions_dir, "rtt_within_18_weeks", "  description: Those waiting less than 18 completed weeks.\n", "")
    catalogue, _ = load_definitions(definitions_dir)
    assert missing_metadata(catalogue.metrics["rtt_within_18_weeks"]) == [
        "fingertips_id", "group", "numerator.description"]
    assert missing_metadata(catalogue.metrics["infant_mortality"]) == []
    assert set(REQUIRED_METADATA) >= {"title", "outcome", "caveats", "frequency", "group", "fingertips_id"}


def test_period_labels():
    d = dt.date
    assert period_label("month", d(2026, 3, 1), d(2026, 3, 31)) == "Mar 2026"
    assert period_label("financial_quarter", d(2026, 1, 1), d(2026, 3, 31)) == "2025/26 Q4"
    assert period_label("financial_quarter", d(2025, 4, 1), d(2025, 6, 30)) == "2025/26 Q1"
    assert period_label("financial_year", d(2025, 4, 1), d(2026, 3, 31)) == "2025/26"
    assert period_label("calendar_year", d(2025, 1, 1), d(2025, 12, 31)) == "2025"
    assert period_label("academic_year", d(2024, 9, 1), d(2025, 8, 31)) == "2024/25 academic year"
    assert period_label("rolling_36_months", d(2023, 4, 1), d(2026, 3, 31)) == "36 months to Mar 2026"
    assert period_label("snapshot", d(2025, 3, 31), d(2025, 3, 31)) == "at 31 Mar 2025"


def test_unknown_format_is_rejected(catalogue, tmp_path):
    with pytest.raises(ValueError):
        render_catalogue(catalogue, tmp_path, "pdf")
