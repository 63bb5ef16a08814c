"""The publication view: published values with each metric's declared disclosure policy applied.

Every output that leaves the performance team — `outcomes values --publish`, the governance pack,
the apps' publication mode — goes through ``publication_view``, so one rule decides what a board
or the public may see. Policies come from the definitions as the run published them.
"""

from __future__ import annotations

import json

import polars as pl

from metrics.disclosure import suppress, suppression_summary

__all__ = ["publication_view", "policies", "publication_note"]

DSR_MIN_EVENTS = 10


def policies(definitions: pl.DataFrame) -> pl.DataFrame:
    """metric_id, suppress_below, round_to, value_type — from a run's published definitions."""
    rows = []
    for row in definitions.iter_rows(named=True):
        body = json.loads(row["body_json"])
        policy = body.get("disclosure") or {}
        rows.append({"metric_id": row["metric_id"], "suppress_below": int(policy.get("suppress_below", 8)),
                     "round_to": int(policy.get("round_to", 5)), "value_type": row["value_type"]})
    return pl.DataFrame(rows, schema={"metric_id": pl.String, "suppress_below": pl.Int64, "round_to": pl.Int64,
                                      "value_type": pl.String})


def publication_view(values: pl.DataFrame, definitions: pl.DataFrame) -> pl.DataFrame:
    """``values`` (the store's long format) with small counts withheld, secondary suppression,
    counts rounded, DSRs under 10 events withheld, and ``suppressed`` / ``suppression_note`` added.
    Metrics without a published definition are withheld entirely rather than shown unprotected."""
    rules = policies(definitions)
    known = values.filter(pl.col("metric_id").is_in(rules["metric_id"].implode()))
    parts = []
    for (suppress_below, round_to), chosen in rules.group_by(["suppress_below", "round_to"], maintain_order=True):
        subset = known.filter(pl.col("metric_id").is_in(chosen["metric_id"].implode()))
        if subset.is_empty():
            continue
        dsr_metrics = chosen.filter(pl.col("value_type") == "dsr")["metric_id"]
        parts.append(suppress(subset, suppress_below=suppress_below, round_to=round_to,
                              dsr_min_events=DSR_MIN_EVENTS if dsr_metrics.len() else None,
                              dsr_rows=pl.col("metric_id").is_in(dsr_metrics.implode())))
    if not parts:
        return values.clear().with_columns(pl.lit(False).alias("suppressed"),
                                           pl.lit(None, pl.String).alias("suppression_note"))
    view = pl.concat(parts, how="vertical_relaxed")
    # A count metric's value *is* its count: publish it as the rounded (or withheld) count.
    counts = rules.filter(pl.col("value_type") == "count")["metric_id"].implode()
    view = view.with_columns(pl.when(pl.col("metric_id").is_in(counts)).then(pl.col("numerator"))
                             .otherwise(pl.col("value")).alias("value"))
    return view.sort(["metric_id", "place", "period_type", "breakdown", "group", "period_start"])


def publication_note(view: pl.DataFrame) -> str:
    """One line for a footer or a CLI: what disclosure control withheld and why."""
    return suppression_summary(view)
