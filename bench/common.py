"""What every baseline shares: the foundation's sources, their validity checks as plain data, the
breakdown dimensions and the canonical output shape the numbers are compared in.

The checks are read from the same YAML the engine reads (``definitions/sources``), not from the
engine's Python, so each baseline applies them in its own idiom (pandas masks, SQL, Polars
expressions). Cross-column rules and metric filters are written out by hand in each baseline.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
DEFINITIONS = PROJECT / "definitions"
FOUNDATION_SOURCES = ("geography", "population", "inpatient_spells", "community_contacts", "breast_screening")
FOUNDATION_METRICS = ("discharged_on_ready_date", "mean_discharge_delay_days", "delayed_bed_days",
                      "spells_with_discharge_ready_date", "community_contacts_per_1000",
                      "people_seen_by_community_services_per_1000", "breast_screening_coverage")
# The baselines compute fixed periods only; the engine's rolling 12-month people-seen grain is
# dropped from the benchmark's copy of that definition so both sides do the same work.
DROPPED_GRAINS = {"people_seen_by_community_services_per_1000": ["rolling_12_months"]}

# Canonical output: one row per metric × place × period × breakdown × group.
KEYS = ["metric_id", "place", "period_type", "period_start", "breakdown", "group"]
COLUMNS = [*KEYS, "numerator", "denominator"]

_DIMS = yaml.safe_load((DEFINITIONS / "dimensions.yaml").read_text())
SEX_LABELS: dict[str, str] = _DIMS["sex"]["labels"]
ETHNIC_GROUP: dict[str, str] = {code: group for group, codes in _DIMS["ethnicity"]["groups"].items() for code in codes}
ETHNIC_OTHERWISE: str = _DIMS["ethnicity"]["otherwise"]
DEFAULT_AGE_BANDS: list[int] = _DIMS["age_bands"]["default"]
SPELL_AGE_BANDS = [18, 45, 65, 75, 85]
SCREEN_AGE_BANDS = [53, 60, 65]
UNKNOWN = "Unknown"


def age_labels(bands: list[int]) -> list[str]:
    return [*(f"{lo}-{hi - 1}" for lo, hi in zip(bands, bands[1:])), f"{bands[-1]}+"]


def source_spec(source_id: str) -> dict:
    """The declared columns of a source: type, nullable, allowed, min, max, pattern, not_future."""
    return yaml.safe_load((DEFINITIONS / "sources" / f"{source_id}.yaml").read_text())


def column_checks(source_id: str) -> dict[str, dict]:
    cols = source_spec(source_id)["columns"]
    out = {}
    for name, spec in cols.items():
        out[name] = {k: spec.get(k) for k in ("type", "allowed", "min", "max", "pattern", "not_future")}
        out[name]["nullable"] = bool(spec.get("nullable", False))
        if isinstance(out[name]["min"], dt.date) or isinstance(out[name]["max"], dt.date):
            pass
    return out


def foundation_definitions(root: Path) -> Path:
    """A definitions folder with only the foundation's sources and metrics (as tests/conftest.py
    makes), with ``DROPPED_GRAINS`` removed."""
    if root.exists():
        shutil.rmtree(root)
    (root / "sources").mkdir(parents=True)
    (root / "metrics").mkdir()
    shutil.copy(DEFINITIONS / "dimensions.yaml", root / "dimensions.yaml")
    for source in FOUNDATION_SOURCES:
        shutil.copy(DEFINITIONS / "sources" / f"{source}.yaml", root / "sources")
    for metric_id in FOUNDATION_METRICS:
        path = DEFINITIONS / "metrics" / f"{metric_id}.yaml"
        text = path.read_text()
        if metric_id in DROPPED_GRAINS:
            body = yaml.safe_load(text)
            body["period"]["grains"] = [g for g in body["period"]["grains"] if g not in DROPPED_GRAINS[metric_id]]
            text = yaml.safe_dump(body, sort_keys=False)
        (root / "metrics" / path.name).write_text(text)
    return root


def files(data_dir: Path, source_id: str) -> list[Path]:
    folder = Path(data_dir) / source_spec(source_id)["folder"]
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet")
