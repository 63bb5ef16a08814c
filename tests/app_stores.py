"""Stores for the app, export and browser tests: one published from the hand-built extracts (tiny
counts, so disclosure control has plenty to do) and a small demo (every IMD quintile present, so the
inequality views have gaps to show). Both use the seven metrics whose sources these extracts have."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path
from typing import Any

from handbuilt import write_handbuilt

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT / "notebooks"
METRICS = ["breast_screening_coverage", "community_contacts_per_1000", "people_seen_by_community_services_per_1000",
           "delayed_bed_days", "discharged_on_ready_date", "mean_discharge_delay_days",
           "spells_with_discharge_ready_date"]
AS_OF = dt.date(2026, 1, 1)


def handbuilt_store(root: Path) -> str:
    import store
    from metrics.refresh import refresh

    url = f"sqlite:///{root / 'handbuilt.db'}"
    refresh(write_handbuilt(root / "extracts"), definitions_dir=PROJECT / "definitions", engine=store.get_engine(url),
            as_of=AS_OF, metrics=METRICS)
    return url


def demo_store(root: Path) -> str:
    """15 months of demo data at scale 0.01 (a few seconds)."""
    import store
    from metrics.demo import generate_demo_data
    from metrics.refresh import refresh

    url = f"sqlite:///{root / 'demo.db'}"
    generate_demo_data(root / "demo", scale=0.01, months=15)
    refresh(root / "demo", definitions_dir=PROJECT / "definitions", engine=store.get_engine(url),
            as_of=dt.date(2024, 8, 1), metrics=METRICS)
    return url


def load_app(name: str):
    path = NOTEBOOKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_notebook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def small_counts(defs: dict[str, Any]) -> list[str]:
    """Where a count of 1 to 7 shows: any numerator/denominator column of a frame the app defines,
    and any numerator/denominator field in the data of a chart it defines."""
    import altair as alt
    import polars as pl

    found = []
    for name, value in defs.items():
        if isinstance(value, pl.DataFrame):
            for column in value.columns:
                if column.lower() in ("numerator", "denominator"):
                    small = value.filter(pl.col(column).is_between(1, 7))
                    if small.height:
                        found.append(f"{name}.{column}: {small[column].to_list()[:5]}")
        elif isinstance(value, alt.TopLevelMixin):
            for dataset, rows in value.to_dict(validate=False).get("datasets", {}).items():
                for row in rows:
                    for key in ("numerator", "denominator"):
                        if isinstance(row.get(key), (int, float)) and 1 <= row[key] <= 7:
                            found.append(f"{name} chart {dataset}: {key}={row[key]}")
    return found


def chart_rows(chart) -> list[dict]:
    """Every data row of an Altair chart (all its datasets)."""
    spec = json.loads(chart.to_json(validate=False))
    return [row for rows in spec.get("datasets", {}).values() for row in rows]
