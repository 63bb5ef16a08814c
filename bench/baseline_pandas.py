"""Idiomatic pandas baseline: read each source, validate with boolean masks, keep the latest
submission, merge the geography once, then a ``groupby`` per metric × grain × breakdown on the
prepared frame. Same numbers as the engine (numerators and denominators); no confidence intervals.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from bench import common as C

GRAINS = ["month", "financial_quarter", "financial_year"]
GROUP_COLUMN = {"overall": None, "neighbourhood": "neighbourhood", "imd_quintile": "imd_quintile",
                "age_band": "age_band", "sex": "sex_group", "ethnicity": "ethnic_group"}


def read(data_dir: Path, source_id: str) -> pd.DataFrame:
    frames = [pd.read_parquet(p, to_pandas_kwargs={"date_as_object": False}) for p in C.files(data_dir, source_id)]
    return pd.concat(frames, ignore_index=True)


def valid_mask(df: pd.DataFrame, source_id: str, as_of: dt.date, known: pd.Series | None) -> pd.Series:
    ok = pd.Series(True, index=df.index)
    geography = C.source_spec(source_id).get("geography")
    for name, chk in C.column_checks(source_id).items():
        col = df[name]
        good = pd.Series(True, index=df.index)
        if chk["allowed"] is not None:
            good &= col.isin(chk["allowed"])
        if chk["min"] is not None:
            good &= col >= (pd.Timestamp(chk["min"]) if chk["type"] == "date" else chk["min"])
        if chk["max"] is not None:
            good &= col <= chk["max"]
        if chk["pattern"]:
            good &= col.str.match(chk["pattern"]).fillna(False).astype(bool)
        if chk["not_future"]:
            good &= col <= pd.Timestamp(as_of)
        if known is not None and name == geography:
            good &= col.isin(known)
        ok &= (col.isna() | good) if chk["nullable"] else (col.notna() & good)
    return ok


def rules(df: pd.DataFrame, source_id: str) -> pd.Series:
    # SQL CHECK semantics: a rule on missing values passes (comparisons with NaT are False, hence the isna terms).
    if source_id == "inpatient_spells":
        drd = df["discharge_ready_date"]
        return (~(df["discharge_date"] < df["admission_date"])) & (
            drd.isna() | ((drd >= df["admission_date"]) & (drd <= df["discharge_date"])))
    if source_id == "breast_screening":
        s = df["last_adequate_screen_date"]
        return s.isna() | (s <= df["snapshot_date"])
    if source_id == "geography":
        return df["imd_quintile"] == np.ceil(df["imd_decile"] / 2.0)
    return pd.Series(True, index=df.index)


def load(data_dir: Path, source_id: str, as_of: dt.date, known: pd.Series | None) -> pd.DataFrame:
    df = read(data_dir, source_id)
    df = df[valid_mask(df, source_id, as_of, known) & rules(df, source_id)]
    spec = C.source_spec(source_id)
    if spec.get("dedup"):  # latest submission wins; among equal submissions, the row read later
        df = (df.sort_values(spec["dedup"]["keep_latest_by"], kind="stable")
              .drop_duplicates(spec["dedup"]["key"], keep="last").sort_index())
    if spec.get("key"):
        df = df.drop_duplicates(spec["key"], keep="first")
    return df


def age_band(age: pd.Series, bands: list[int]) -> pd.Series:
    return pd.cut(age, bins=[*bands, np.inf], right=False, labels=C.age_labels(bands)).astype("str") \
        .where(age >= bands[0])


def period_start(dates: pd.Series, grain: str) -> pd.Series:
    if grain == "month":
        return dates.dt.to_period("M").dt.to_timestamp()
    if grain == "financial_quarter":
        return dates.dt.to_period("Q").dt.to_timestamp()
    year = dates.dt.year - (dates.dt.month < 4)
    return pd.to_datetime(pd.DataFrame({"year": year, "month": 4, "day": 1}))


def period_end(start: pd.Series, grain: str) -> pd.Series:
    months = {"month": 1, "financial_quarter": 3, "financial_year": 12}[grain]
    return start + pd.DateOffset(months=months) - pd.Timedelta(days=1)


def complete(df: pd.DataFrame, grain: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
    last_day = last + pd.offsets.MonthEnd(0)
    return df[(df["period_start"] >= first) & (period_end(df["period_start"], grain) <= last_day)]


def prepare(df: pd.DataFrame, geo: pd.DataFrame, bands: list[int]) -> pd.DataFrame:
    df = df.merge(geo, on="lsoa_code", how="inner")
    df["age_band"] = age_band(df["age"], bands)
    df["sex_group"] = df["sex"].map(C.SEX_LABELS).fillna(df["sex"])
    if "ethnicity" in df:
        df["ethnic_group"] = df["ethnicity"].map(C.ETHNIC_GROUP).fillna(C.ETHNIC_OTHERWISE)
    return df


def keys(breakdown: str) -> list[str]:
    return ["place", "period_start", *([GROUP_COLUMN[breakdown]] if GROUP_COLUMN[breakdown] else [])]


def tidy(df: pd.DataFrame, metric: str, grain: str, breakdown: str) -> pd.DataFrame:
    if GROUP_COLUMN[breakdown] is None:
        df = df.assign(group=df["place"])
    else:
        df = df.rename(columns={GROUP_COLUMN[breakdown]: "group"})
    df["group"] = df["group"].astype("str").where(df["group"].notna(), C.UNKNOWN)
    df["metric_id"], df["period_type"], df["breakdown"] = metric, grain, breakdown
    return df[C.COLUMNS]


def run(data_dir: Path, as_of: dt.date) -> pd.DataFrame:
    geo = load(data_dir, "geography", as_of, None)
    known = geo["lsoa_code"]
    geo = geo[["lsoa_code", "place", "neighbourhood", "imd_quintile"]].astype({"imd_quintile": "str"})
    out = []

    # --- inpatient spells
    spells = prepare(load(data_dir, "inpatient_spells", as_of, known), geo, C.SPELL_AGE_BANDS)
    spells["delay_days"] = (spells["discharge_date"] - spells["discharge_ready_date"]).dt.days.clip(lower=0)
    months = spells["discharge_date"].dt.to_period("M").dt.to_timestamp()
    first, last = months.min(), months.max()
    base = ((spells["patient_classification"] == 1) & (spells["discharge_date"] > spells["admission_date"])
            & (spells["discharge_method"] != 4) & (spells["age"] >= 18))
    has_drd = spells["discharge_ready_date"].notna()
    spells["drd_den"] = (base & has_drd).astype(int)
    spells["drd_num"] = (base & has_drd & (spells["discharge_date"] == spells["discharge_ready_date"])).astype(int)
    spells["rec_den"] = base.astype(int)
    spells["rec_num"] = (base & has_drd).astype(int)
    spells["delay_sum"] = spells["delay_days"].where(base & has_drd, 0)
    spells["delayed"] = spells["delay_days"].where(base & has_drd & (spells["delay_days"] > 0), 0)
    for grain in GRAINS:
        spells["period_start"] = period_start(spells["discharge_date"], grain)
        for breakdown in GROUP_COLUMN:
            g = (spells.groupby(keys(breakdown), dropna=False, observed=True)
                 [["drd_num", "drd_den", "rec_num", "rec_den", "delay_sum", "delayed"]].sum().reset_index())
            g = complete(g, grain, first, last)
            for metric, num, den in (("discharged_on_ready_date", "drd_num", "drd_den"),
                                     ("spells_with_discharge_ready_date", "rec_num", "rec_den"),
                                     ("mean_discharge_delay_days", "delay_sum", "drd_den"),
                                     ("delayed_bed_days", "delayed", None)):
                part = g.assign(numerator=g[num].astype(float),
                                denominator=g[den].astype(float) if den else np.nan)
                if den and metric != "mean_discharge_delay_days":
                    part = part[part["denominator"] > 0]
                out.append(tidy(part, metric, grain, breakdown))
    del spells

    # --- populations and community contacts
    pop = prepare(load(data_dir, "population", as_of, known), geo, C.DEFAULT_AGE_BANDS)
    first_year, last_year = pop["year"].min(), pop["year"].max()
    contacts = load(data_dir, "community_contacts", as_of, known)
    all_months = contacts["contact_date"].dt.to_period("M").dt.to_timestamp()
    first, last = all_months.min(), all_months.max()
    attended = prepare(contacts[contacts["attendance_status"].isin([5, 6])], geo, C.DEFAULT_AGE_BANDS)
    del contacts
    attended = attended.sort_values(["person_id", "contact_date"], kind="stable")
    for grain in GRAINS:
        attended["period_start"] = period_start(attended["contact_date"], grain)
        periods = complete(pd.DataFrame({"period_start": period_start(all_months.drop_duplicates(), grain)
                                         .drop_duplicates()}), grain, first, last)
        periods["year"] = periods["period_start"].dt.year.clip(first_year, last_year)
        spine = periods.merge(pop, on="year")
        people = attended.drop_duplicates(["person_id", "period_start"], keep="first")
        for breakdown in ("overall", "neighbourhood", "imd_quintile", "age_band", "sex"):
            by = keys(breakdown)
            den = spine.groupby(by, dropna=False, observed=True)["population"].sum().rename("denominator")
            for metric, frame in (("community_contacts_per_1000", attended),
                                  ("people_seen_by_community_services_per_1000", people)):
                num = frame.groupby(by, dropna=False, observed=True).size().rename("numerator")
                part = pd.concat([num, den], axis=1).reset_index()
                part = part[part["period_start"].isin(periods["period_start"])]
                part["numerator"] = part["numerator"].fillna(0).astype(float)
                part["denominator"] = part["denominator"].astype(float)
                out.append(tidy(part, metric, grain, breakdown))

    # --- breast screening snapshots
    screens = load(data_dir, "breast_screening", as_of, known)
    screens = prepare(screens[(screens["sex"] == "F") & screens["age"].between(53, 70) & ~screens["ceased"]],
                      geo, C.SCREEN_AGE_BANDS)
    screens["covered"] = (screens["last_adequate_screen_date"]
                          > screens["snapshot_date"] - pd.DateOffset(months=36)).astype(int)
    screens["period_start"] = screens["snapshot_date"]
    for breakdown in ("overall", "neighbourhood", "imd_quintile", "age_band", "ethnicity"):
        g = (screens.groupby(keys(breakdown), dropna=False, observed=True)
             .agg(numerator=("covered", "sum"), denominator=("covered", "size")).reset_index())
        g[["numerator", "denominator"]] = g[["numerator", "denominator"]].astype(float)
        out.append(tidy(g, "breast_screening_coverage", "snapshot", breakdown))
    return pd.concat(out, ignore_index=True)
