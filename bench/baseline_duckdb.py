"""DuckDB baseline: SQL over the same Parquet files. Validation as WHERE clauses, resubmissions
de-duplicated with QUALIFY, and every breakdown of every grain in one GROUPING SETS query per
source. Same numbers as the engine (numerators and denominators); no confidence intervals.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

from bench import common as C

GRAINS = {"month": ("date_trunc('month', {d})", 1), "financial_quarter": ("date_trunc('quarter', {d})", 3),
          "financial_year": ("make_date(year({d}) - CASE WHEN month({d}) < 4 THEN 1 ELSE 0 END, 4, 1)", 12)}
BREAKDOWN_COLUMN = {"neighbourhood": "neighbourhood", "imd_quintile": "imd_quintile", "age_band": "age_band",
                    "sex": "sex_group", "ethnicity": "ethnic_group"}


def lit(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def validity(source_id: str, as_of: dt.date, check_lsoa: bool) -> str:
    """The declared column checks as one SQL predicate (NULL only where the column allows it)."""
    geography = C.source_spec(source_id).get("geography")
    terms = []
    for name, chk in C.column_checks(source_id).items():
        col = f'"{name}"'
        good = []
        if chk["allowed"] is not None:
            good.append(f"{col} IN ({', '.join(lit(v) for v in chk['allowed'])})")
        if chk["min"] is not None:
            good.append(f"{col} >= {lit(chk['min'])}")
        if chk["max"] is not None:
            good.append(f"{col} <= {lit(chk['max'])}")
        if chk["pattern"]:
            good.append(f"regexp_matches({col}, {lit(chk['pattern'])})")
        if chk["not_future"]:
            good.append(f"{col} <= {lit(as_of)}")
        if check_lsoa and name == geography:
            good.append(f"{col} IN (SELECT lsoa_code FROM geography)")
        good_sql = " AND ".join(good) or "TRUE"
        terms.append(f"({col} IS NULL OR ({good_sql}))" if chk["nullable"]
                     else f"({col} IS NOT NULL AND ({good_sql}))")
    return "\n  AND ".join(terms)


RULES = {  # SQL CHECK semantics: NULL passes
    "inpatient_spells": "COALESCE(discharge_date >= admission_date, TRUE) AND COALESCE(discharge_ready_date IS NULL OR "
                        "(discharge_ready_date >= admission_date AND discharge_ready_date <= discharge_date), TRUE)",
    "breast_screening": "COALESCE(last_adequate_screen_date IS NULL OR last_adequate_screen_date <= snapshot_date, TRUE)",
    "geography": "COALESCE(imd_quintile = CEIL(imd_decile / 2.0), TRUE)",
}


def load(con: duckdb.DuckDBPyConnection, data_dir: Path, source_id: str, as_of: dt.date) -> None:
    spec = C.source_spec(source_id)
    paths = ", ".join(lit(str(p)) for p in C.files(data_dir, source_id))
    order = "filename, file_row_number"
    qualify = ""
    if spec.get("dedup"):
        key = ", ".join(spec["dedup"]["key"])
        qualify = (f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {spec['dedup']['keep_latest_by']} DESC, "
                   f"filename DESC, file_row_number DESC) = 1")
    elif spec.get("key"):
        qualify = f"QUALIFY row_number() OVER (PARTITION BY {', '.join(spec['key'])} ORDER BY {order}) = 1"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {source_id} AS
        SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet([{paths}], filename = true, file_row_number = true)
        WHERE {validity(source_id, as_of, source_id != 'geography')}
          AND {RULES.get(source_id, 'TRUE')}
        {qualify}""")


def age_band(bands: list[int]) -> str:
    whens = " ".join(f"WHEN age >= {lo} THEN '{label}'"
                     for lo, label in reversed(list(zip(bands, C.age_labels(bands)))))
    return f"CASE {whens} END"


def labels(bands: list[int], ethnicity: bool = True) -> str:
    sex = " ".join(f"WHEN sex = {lit(k)} THEN {lit(v)}" for k, v in C.SEX_LABELS.items())
    eth = " ".join(f"WHEN ethnicity = {lit(k)} THEN {lit(v)}" for k, v in C.ETHNIC_GROUP.items())
    return (f"{age_band(bands)} AS age_band, CASE {sex} ELSE sex END AS sex_group"
            + (f", CASE {eth} ELSE {lit(C.ETHNIC_OTHERWISE)} END AS ethnic_group" if ethnicity else ""))


def periods(date: str) -> str:
    """Each row once per grain: (grain, period_start, period_end)."""
    cases = " ".join(f"WHEN '{g}' THEN CAST({expr.format(d=date)} AS DATE)" for g, (expr, _) in GRAINS.items())
    months = " ".join(f"WHEN '{g}' THEN {n}" for g, (_, n) in GRAINS.items())
    return (f"CROSS JOIN (VALUES ('month'), ('financial_quarter'), ('financial_year')) AS gr(period_type) "
            f"CROSS JOIN LATERAL (SELECT CASE gr.period_type {cases} END AS period_start, "
            f"CASE gr.period_type {months} END AS n_months) AS p")


def grouping(breakdowns: list[str], time: list[str]) -> tuple[str, str, str]:
    """GROUPING SETS over place × period and each breakdown, with the breakdown's name and group."""
    cols = [BREAKDOWN_COLUMN[b] for b in breakdowns]
    sets = ", ".join(f"({', '.join([*time, 'place', *([c] if c else [])])})" for c in [None, *cols])
    name = "CASE " + " ".join(f"WHEN GROUPING({c}) = 0 THEN '{b}'" for b, c in zip(breakdowns, cols)) + \
           " ELSE 'overall' END"
    group = "CASE " + " ".join(f"WHEN GROUPING({c}) = 0 THEN COALESCE(CAST({c} AS VARCHAR), '{C.UNKNOWN}')"
                               for c in cols) + " ELSE place END"
    return f"GROUPING SETS ({sets})", name, group


def complete(table: str, date: str) -> str:
    return (f"period_start >= (SELECT CAST(date_trunc('month', min({date})) AS DATE) FROM {table}) "
            f"AND period_start + to_months(n_months) - INTERVAL 1 DAY <= "
            f"(SELECT last_day(max({date})) FROM {table})")


def run(data_dir: Path, as_of: dt.date) -> pl.DataFrame:
    con = duckdb.connect()
    load(con, data_dir, "geography", as_of)
    geo = "(SELECT lsoa_code, place, neighbourhood, CAST(imd_quintile AS VARCHAR) AS imd_quintile FROM geography) g"
    for source in ("inpatient_spells", "community_contacts", "breast_screening", "population"):
        load(con, data_dir, source, as_of)
    out = []

    # --- inpatient spells: four metrics × three grains × six breakdowns in one query
    sets, name, group = grouping(["neighbourhood", "imd_quintile", "age_band", "sex", "ethnicity"],
                                 ["period_type", "period_start", "n_months"])
    spells = con.sql(f"""
        WITH s AS (
          SELECT *, {labels(C.SPELL_AGE_BANDS)},
                 greatest(discharge_date - discharge_ready_date, 0) AS delay_days,
                 patient_classification = 1 AND discharge_date > admission_date AND discharge_method <> 4
                   AND age >= 18 AS base
          FROM inpatient_spells JOIN {geo} USING (lsoa_code)),
        agg AS (
          SELECT period_type, period_start, n_months, place, {name} AS breakdown, {group} AS "group",
                 count(*) FILTER (base AND discharge_ready_date IS NOT NULL AND discharge_date = discharge_ready_date) AS drd_num,
                 count(*) FILTER (base AND discharge_ready_date IS NOT NULL) AS drd_den,
                 count(*) FILTER (base) AS rec_den,
                 coalesce(sum(delay_days) FILTER (base AND discharge_ready_date IS NOT NULL), 0) AS delay_sum,
                 coalesce(sum(delay_days) FILTER (base AND discharge_ready_date IS NOT NULL AND delay_days > 0), 0) AS delayed
          FROM s {periods('discharge_date')}
          GROUP BY {sets})
        SELECT * FROM agg WHERE {complete('inpatient_spells', 'discharge_date')}""").pl()
    keys = ["place", "period_type", "period_start", "breakdown", "group"]
    for metric, num, den, keep_empty in (("discharged_on_ready_date", "drd_num", "drd_den", False),
                                         ("spells_with_discharge_ready_date", "drd_den", "rec_den", False),
                                         ("mean_discharge_delay_days", "delay_sum", "drd_den", True),
                                         ("delayed_bed_days", "delayed", None, True)):
        part = spells.select(*keys, pl.lit(metric).alias("metric_id"), pl.col(num).cast(pl.Float64).alias("numerator"),
                             (pl.col(den).cast(pl.Float64) if den else pl.lit(None, pl.Float64)).alias("denominator"))
        out.append(part if keep_empty else part.filter(pl.col("denominator") > 0))

    # --- community contacts and people seen, with population denominators
    sets, name, group = grouping(["neighbourhood", "imd_quintile", "age_band", "sex"],
                                 ["period_type", "period_start", "n_months"])
    rates = con.sql(f"""
        WITH c AS (
          SELECT person_id, contact_date, place, neighbourhood, imd_quintile, {labels(C.DEFAULT_AGE_BANDS)}
          FROM community_contacts JOIN {geo} USING (lsoa_code)
          WHERE attendance_status IN (5, 6)),
        cp AS (SELECT * FROM c {periods('contact_date')}),
        first_seen AS (
          SELECT * FROM cp
          QUALIFY row_number() OVER (PARTITION BY person_id, period_type, period_start ORDER BY contact_date) = 1),
        spine AS (
          SELECT DISTINCT period_type, period_start, n_months FROM
            (SELECT contact_date FROM community_contacts) {periods('contact_date')}
          WHERE {complete('community_contacts', 'contact_date')}),
        pop AS (
          SELECT period_type, period_start, n_months, place, {name} AS breakdown, {group} AS "group",
                 sum(population) AS denominator
          FROM spine
          JOIN (SELECT *, {labels(C.DEFAULT_AGE_BANDS, False)} FROM population JOIN {geo} USING (lsoa_code)) p
            ON p.year = least(greatest(year(spine.period_start), (SELECT min(year) FROM population)),
                              (SELECT max(year) FROM population))
          GROUP BY {sets}),
        contacts AS (
          SELECT period_type, period_start, place, {name} AS breakdown, {group} AS "group", count(*) AS numerator
          FROM cp GROUP BY {sets}),
        people AS (
          SELECT period_type, period_start, place, {name} AS breakdown, {group} AS "group", count(*) AS numerator
          FROM first_seen GROUP BY {sets})
        SELECT 'community_contacts_per_1000' AS metric_id, period_type, period_start, place, breakdown, "group",
               coalesce(contacts.numerator, 0) AS numerator, pop.denominator
        FROM pop FULL JOIN contacts USING (period_type, period_start, place, breakdown, "group")
        WHERE period_start IN (SELECT period_start FROM spine)
        UNION ALL
        SELECT 'people_seen_by_community_services_per_1000', period_type, period_start, place, breakdown, "group",
               coalesce(people.numerator, 0), pop.denominator
        FROM pop FULL JOIN people USING (period_type, period_start, place, breakdown, "group")
        WHERE period_start IN (SELECT period_start FROM spine)""").pl()
    out.append(rates.with_columns(pl.col("numerator", "denominator").cast(pl.Float64)))

    # --- breast screening snapshots
    sets, name, group = grouping(["neighbourhood", "imd_quintile", "age_band", "ethnicity"], ["snapshot_date"])
    screens = con.sql(f"""
        SELECT 'breast_screening_coverage' AS metric_id, 'snapshot' AS period_type, snapshot_date AS period_start,
               place, {name} AS breakdown, {group} AS "group",
               count(*) FILTER (last_adequate_screen_date > snapshot_date - INTERVAL 36 MONTH) AS numerator,
               count(*) AS denominator
        FROM (SELECT *, {labels(C.SCREEN_AGE_BANDS)} FROM breast_screening JOIN {geo} USING (lsoa_code)
              WHERE sex = 'F' AND age BETWEEN 53 AND 70 AND NOT ceased)
        GROUP BY {sets}""").pl()
    out.append(screens.with_columns(pl.col("numerator", "denominator").cast(pl.Float64)))
    con.close()
    return pl.concat([f.select(C.COLUMNS) for f in out], how="vertical_relaxed")
