"""Definitions are data: every problem is reported at once, naming file, line and field; nothing
in a definition can execute code or read files."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DEFINITIONS, PROJECT_DEFINITIONS
from metrics.definitions import load_catalogue, load_definitions
from metrics.errors import DefinitionError, FilterError
from metrics.sqlfilter import compile_filter


def _errors(root: Path) -> list[str]:
    _catalogue, issues = load_definitions(root)
    return [str(i) for i in issues if i.level == "error"]


def test_project_definitions_are_valid():
    catalogue, issues = load_definitions(PROJECT_DEFINITIONS)
    assert issues == []
    assert len(catalogue.metrics) >= 22 and len(catalogue.sources) >= 21
    foundation, issues = load_definitions(DEFINITIONS)
    assert issues == [] and len(foundation.metrics) == 7 and len(foundation.sources) == 5


def test_every_metric_has_its_metadata():
    for metric in load_catalogue(PROJECT_DEFINITIONS).metrics.values():
        for field in ("title", "outcome", "definition", "rationale", "owner", "unit", "polarity"):
            assert getattr(metric, field), f"{metric.id} lacks {field}"
        assert metric.status in ("draft", "approved") and metric.valid_from


def _edit(root: Path, name: str, old: str, new: str) -> Path:
    path = root / "metrics" / f"{name}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_missing_field_names_file_and_field(definitions_dir):
    _edit(definitions_dir, "discharged_on_ready_date", "polarity: higher_is_better\n", "")
    errors = _errors(definitions_dir)
    assert any("discharged_on_ready_date.yaml" in e and "[polarity]" in e and "required field is missing" in e
               for e in errors), errors


def test_wrong_value_names_the_line(definitions_dir):
    _edit(definitions_dir, "delayed_bed_days", "value_type: count", "value_type: countt")
    errors = _errors(definitions_dir)
    assert any("delayed_bed_days.yaml, line 18 [value_type]" in e and "'countt'" in e for e in errors), errors


def test_misspelt_field_is_reported(definitions_dir):
    _edit(definitions_dir, "delayed_bed_days", "polarity:", "polarty:")
    errors = _errors(definitions_dir)
    assert any("[polarty]" in e and "unknown field" in e for e in errors), errors


def test_unknown_column_in_filter(definitions_dir):
    _edit(definitions_dir, "discharged_on_ready_date", '"discharge_date = discharge_ready_date"',
          '"discharge_date = discharge_redy_date"')
    errors = _errors(definitions_dir)
    assert any("[numerator.filter]" in e and "unknown column 'discharge_redy_date'" in e for e in errors), errors


@pytest.mark.parametrize("sql, message", [
    ("attendance_status IN (SELECT 5)", "may not use 'SELECT'"),
    ("attendance_status = 5 OR read_csv('/etc/passwd') IS NULL", "may not use 'read_csv'"),
    ("attendance_status = 5; DROP TABLE metric_value", "unexpected character ';'"),
    ("__import__('os').system('id') = 0", "unexpected character '.'"),
    ("system('id') = 0", "calls function 'system'"),
    ("attendance_status = 5 UNION SELECT 1", "may not use 'UNION'"),
])
def test_filters_cannot_reach_outside_the_source(sql, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace("'", "'")):
        compile_filter(sql, ["attendance_status"])


def test_python_yaml_tags_are_refused(definitions_dir):
    path = definitions_dir / "metrics" / "evil.yaml"
    path.write_text("id: !!python/object/apply:os.system ['echo pwned']\n")
    errors = _errors(definitions_dir)
    assert any("evil.yaml" in e and "YAML tags that create Python objects are not allowed" in e for e in errors), errors


def test_breakdown_needs_a_column(definitions_dir):
    _edit(definitions_dir, "community_contacts_per_1000", "breakdowns: [place, neighbourhood, imd_quintile, age_band, sex]",
          "breakdowns: [place, ethnicity]")
    errors = _errors(definitions_dir)
    assert any("breakdown 'ethnicity' is not possible for a population rate" in e for e in errors), errors


def test_value_type_shape_is_checked(definitions_dir):
    _edit(definitions_dir, "breast_screening_coverage", "value_type: proportion", "value_type: rate")
    errors = _errors(definitions_dir)
    assert any("value_type 'rate' needs numerator and denominator.population" in e for e in errors), errors


def test_all_problems_reported_at_once(definitions_dir):
    _edit(definitions_dir, "delayed_bed_days", "polarity:", "polarty:")
    _edit(definitions_dir, "discharged_on_ready_date", "source: inpatient_spells", "source: inpatient_spels")
    with pytest.raises(DefinitionError) as info:
        load_catalogue(definitions_dir)
    assert len(info.value.issues) >= 2
    assert "source 'inpatient_spels' is not declared" in str(info.value)


def test_content_hash_ignores_formatting_but_not_meaning(definitions_dir):
    before = load_catalogue(definitions_dir).metrics["delayed_bed_days"].content_hash
    _edit(definitions_dir, "delayed_bed_days", "unit: bed days", "unit:    bed days   # a comment")
    assert load_catalogue(definitions_dir).metrics["delayed_bed_days"].content_hash == before
    _edit(definitions_dir, "delayed_bed_days", '"delay_days > 0"', '"delay_days > 1"')
    assert load_catalogue(definitions_dir).metrics["delayed_bed_days"].content_hash != before
