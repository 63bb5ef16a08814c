"""Demo extracts for the rest of the outcomes catalogue (DESIGN.md section 4), on the same residents.

``generate_catalogue_sources(out, register=..., lsoas=..., places=..., population=...)`` writes one
folder per source below, drawn from the synthetic residents and real LSOAs that
:mod:`metrics.demo` builds, so a person keeps one LSOA, sex, ethnicity and GP practice across every
source. ``demo_context(scale=..., seed=...)`` builds those inputs exactly as
``generate_demo_data`` does, for standalone use::

    deaths/deaths_<YYYY-MM>.<ext>                    registrations, by month of registration
    live_births/live_births_<YYYY>.<ext>             births by LSOA and sex (a population-kind source)
    eyfsp/eyfsp_<YYYY-YY>.<ext>                      EYFS profile, one file per academic year
    ncmp/ncmp_<YYYY-YY>.<ext>                        child measurements, one file per academic year
    child_immunisations/immunisations_<date>.<ext>   children reaching 5 in the quarter ending <date>
    smi_health_checks/smi_<date>.<ext>               SMI register snapshots at quarter ends
    ucr_referrals/ucr_<YYYY-MM>.<ext>                urgent community response referrals
    reablement/reablement_<YYYY-MM>.<ext>            discharges to reablement, by discharge month
    social_care_survey/ascs_<YYYY-YY>.<ext>          adult social care survey, one file per year
    nhs_health_checks/health_checks_<date>.<ext>     eligible cohort snapshots at quarter ends
    diabetes_care_processes/nda_<YYYY-YY>.<ext>      National Diabetes Audit, one file per audit year
    ae_attendances/ae_<YYYY-MM>.<ext>                A&E and UTC attendances, by arrival month
    rtt_waiting_list/rtt_<date>.<ext>                incomplete RTT pathways at each month end
    mental_health_contacts/mh_contacts_<YYYY-MM>.<ext>  MHSDS care contacts
    nhs_app_registrations/nhs_app_<date>.<ext>       registered patients 13+ at quarter ends
    emergency_admissions/admissions_<YYYY-MM>.<ext>  emergency admissions with diagnoses

Deaths and births start ``HISTORY_YEARS`` calendar years before the demo window so that 3-year
pooled measures (infant mortality) have more than one value; annual returns (EYFSP, NCMP, the
survey, the diabetes audit) hold every collection year whose collection falls in the window.
Register snapshots (SMI, Health Checks, NHS App) are taken at quarter ends (``SNAPSHOT_MONTHS``) to
keep volumes down: the NHS App snapshot alone is every registered patient aged 13+. Sources with a
date and time (UCR referrals, A&E arrivals) also carry the date on its own, which metrics use as
their period date. Extracts reflect what was known at the end of the window: deaths not yet
registered are missing, follow-ups not yet due are blank, patients still in hospital have no
discharge date.

Calibration targets (``CALIBRATION``) are the published figures in DESIGN.md where there is one
(Reception obesity Dudley 10.2% / Walsall 13.8%, Year 6 24.8% / 27.6%, MMR2 at 5 Dudley 89.3%,
good level of development 63% / 64%, infant mortality Walsall 5.3 per 1,000, England figures for
other places); the others are illustrative values near England's, with Walsall (more deprived)
generally a little worse. Every source has a deprivation gradient: outcomes are worse, and need
higher, in the most deprived quintile. Calibration is on expected values: small-scale runs scatter
around the targets by chance.

Each source also gets a few realistic defects (at ``defect_rate`` of its rows, split over its
defect kinds) that its declaration in ``definitions/sources/`` catches: unknown LSOAs, dates out of
order, future dates, malformed codes, values out of range and duplicate keys. The summary reports
how many of each were written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import ndtri

from metrics import demo as d
from metrics import geography_data as geo

__all__ = ["CATALOGUE_SOURCES", "CALIBRATION", "HISTORY_YEARS", "demo_context", "generate_catalogue_sources"]

CATALOGUE_SOURCES: tuple[str, ...] = (
    "deaths",
    "live_births",
    "eyfsp",
    "ncmp",
    "child_immunisations",
    "smi_health_checks",
    "ucr_referrals",
    "reablement",
    "social_care_survey",
    "nhs_health_checks",
    "diabetes_care_processes",
    "ae_attendances",
    "rtt_waiting_list",
    "mental_health_contacts",
    "nhs_app_registrations",
    "emergency_admissions",
)
_PREFIX = {
    "deaths": "deaths_",
    "live_births": "live_births_",
    "eyfsp": "eyfsp_",
    "ncmp": "ncmp_",
    "child_immunisations": "immunisations_",
    "smi_health_checks": "smi_",
    "ucr_referrals": "ucr_",
    "reablement": "reablement_",
    "social_care_survey": "ascs_",
    "nhs_health_checks": "health_checks_",
    "diabetes_care_processes": "nda_",
    "ae_attendances": "ae_",
    "rtt_waiting_list": "rtt_",
    "mental_health_contacts": "mh_contacts_",
    "nhs_app_registrations": "nhs_app_",
    "emergency_admissions": "admissions_",
}
# Independent random streams (100+ so they never meet metrics.demo's), one per source plus defects.
_STREAM = {name: 100 + i for i, name in enumerate(CATALOGUE_SOURCES)}
_DEFECT_STREAM = {name: 200 + i for i, name in enumerate(CATALOGUE_SOURCES)}
_ID_KEY = {name: 20 + i for i, name in enumerate(CATALOGUE_SOURCES)}

HISTORY_YEARS = 2  # deaths and births start this many calendar years before the window's first year
SNAPSHOT_MONTHS = (3, 6, 9, 12)  # quarter-end snapshots (SMI register, Health Checks, NHS App)

DUDLEY, WALSALL = geo.DUDLEY, geo.WALSALL
# Targets per place; "other" applies to places added at scale > 1 (England's figure where known).
CALIBRATION: dict[str, dict[str, float]] = {
    # deaths
    "circulatory_dsr_under_75": {DUDLEY: 88.0, WALSALL: 101.0, "other": 77.0},  # per 100,000 (illustrative)
    "infant_mortality": {DUDLEY: 4.6, WALSALL: 5.3, "other": 4.1},  # per 1,000 live births
    "deaths_in_hospital": {DUDLEY: 0.46, WALSALL: 0.48, "other": 0.44},
    # children
    "gld": {DUDLEY: 0.63, WALSALL: 0.64, "other": 0.677},
    "obesity_reception": {DUDLEY: 0.102, WALSALL: 0.138, "other": 0.096},
    "obesity_year6": {DUDLEY: 0.248, WALSALL: 0.276, "other": 0.221},
    "mmr2_by_5": {DUDLEY: 0.893, WALSALL: 0.860, "other": 0.839},
    # adults
    "smi_all_six": {DUDLEY: 0.58, WALSALL: 0.55, "other": 0.60},
    "ucr_two_hours": {DUDLEY: 0.86, WALSALL: 0.81, "other": 0.84},
    "reablement_at_home": {DUDLEY: 0.84, WALSALL: 0.80, "other": 0.83},
    "social_contact": {DUDLEY: 0.44, WALSALL: 0.42, "other": 0.456},
    "health_check_5yr": {DUDLEY: 0.38, WALSALL: 0.34, "other": 0.36},
    "diabetes_all_eight": {DUDLEY: 0.50, WALSALL: 0.46, "other": 0.47},
    "ae_four_hours": {DUDLEY: 0.76, WALSALL: 0.73, "other": 0.75},
    "rtt_under_18_weeks": {DUDLEY: 0.60, WALSALL: 0.56, "other": 0.59},
    "cyp_mh_per_1000": {DUDLEY: 58.0, WALSALL: 62.0, "other": 60.0},  # people 0-25 in contact, 12 months
    "nhs_app": {DUDLEY: 0.64, WALSALL: 0.60, "other": 0.66},  # of registered patients 13+
    "falls_dsr_65": {DUDLEY: 2150.0, WALSALL: 2300.0, "other": 1980.0},  # per 100,000 aged 65+
    "acsc_per_1000": {DUDLEY: 1.0, WALSALL: 1.15, "other": 0.85},  # per 1,000 population per year
}
# The date at which snapshot measures are calibrated (the published "as at 31 March").
CALIBRATION_DATE = "2025-03-31"

# European Standard Population 2013: 19 five-year bands 0-4 ... 85-89, 90+.
ESP2013 = np.array([5000, 5500, 5500, 5500, 6000, 6000, 6500, 7000, 7000, 7000, 7000, 6500, 6000, 5500, 5000,
                    4000, 2500, 1500, 1000], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# context and small helpers


@dataclass(frozen=True)
class _Ctx:
    reg: d._Register
    lsoas: pl.DataFrame
    places: list[str]
    pop: dict[int, np.ndarray]
    period: d._Period
    seed: int
    defect_rate: float

    @property
    def start(self) -> int:
        return self.period.start_day

    @property
    def end(self) -> int:
        return self.period.end_day

    @property
    def history_start(self) -> int:
        year = int(d._ymd(np.array([self.start]))[0][0]) - HISTORY_YEARS
        return d._day(f"{year}-01-01")

    @property
    def lsoa_place(self) -> np.ndarray:
        return self.lsoas["_place"].to_numpy()

    @property
    def lsoa_quintile(self) -> np.ndarray:
        return self.lsoas["imd_quintile"].to_numpy() - 1

    def population(self, year: int) -> np.ndarray:
        """(n_lsoa, 2, 91) counts for ``year``, the nearest year generated outside the range."""
        years = sorted(self.pop)
        return self.pop[min(max(year, years[0]), years[-1])]

    def target(self, name: str) -> np.ndarray:
        table = CALIBRATION[name]
        return np.array([table.get(p, table["other"]) for p in self.places], dtype=np.float64)

    def rng(self, source: str) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM[source]]))

    def ids(self, source: str, prefix: str, n: int) -> pl.Series:
        return d._hex_ids(prefix, np.arange(n, dtype=np.uint64), d._id_key(self.seed, _ID_KEY[source]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _solve_intercepts(mean_of: Callable[[np.ndarray], np.ndarray], targets: np.ndarray,
                      lo: float = -12.0, hi: float = 12.0, iterations: int = 32) -> np.ndarray:
    """Bisection, all groups at once: intercepts ``a`` with ``mean_of(a) == targets`` (increasing in a)."""
    lo_a = np.full(targets.size, lo)
    hi_a = np.full(targets.size, hi)
    for _ in range(iterations):
        mid = (lo_a + hi_a) / 2
        below = mean_of(mid) < targets
        lo_a = np.where(below, mid, lo_a)
        hi_a = np.where(below, hi_a, mid)
    return (lo_a + hi_a) / 2


def _group_mean(values: np.ndarray, group: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> np.ndarray:
    w = np.ones(values.size) if weights is None else weights
    return np.bincount(group, weights=values * w, minlength=n_groups) / np.maximum(
        np.bincount(group, weights=w, minlength=n_groups), 1e-12)


def _logistic_intercepts(base: np.ndarray, group: np.ndarray, targets: np.ndarray,
                         weights: np.ndarray | None = None) -> np.ndarray:
    """Per-group intercepts so that the mean of sigmoid(intercept + base) in each group hits its target."""
    n = targets.size
    return _solve_intercepts(lambda a: _group_mean(_sigmoid(a[group] + base), group, n, weights), targets)


def _defects(ctx: _Ctx, source: str, n: int, kinds: tuple[str, ...],
             eligible: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Disjoint sets of row indices to spoil, one per defect kind, about ``defect_rate`` of rows in all."""
    empty = {k: np.zeros(0, dtype=np.int64) for k in kinds}
    pool = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    if ctx.defect_rate <= 0 or pool.size == 0:
        return empty
    k = int(round(ctx.defect_rate * pool.size / len(kinds)))
    if pool.size >= 40 * len(kinds):  # small extracts still get one of each, so every rule is exercised
        k = max(k, 1)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, _DEFECT_STREAM[source]]))
    pick = pool[rng.choice(pool.size, size=min(k * len(kinds), pool.size), replace=False)]
    return {kind: np.sort(pick[i * k : (i + 1) * k]) for i, kind in enumerate(kinds)}


def _datetimes(days: np.ndarray, seconds: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    micros = (np.asarray(days, dtype=np.int64) * 86_400 + np.asarray(seconds, dtype=np.int64)) * 1_000_000
    s = pl.Series(micros).cast(pl.Datetime("us"))
    if null is not None and null.any():
        s = pl.select(pl.when(pl.Series(null)).then(None).otherwise(s)).to_series()
    return s


def _ints(values: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(values).astype(np.int64))


def _add_years(days: np.ndarray, years: int | np.ndarray) -> np.ndarray:
    """The same calendar date ``years`` later (29 February becomes 1 March)."""
    y, m, dd = d._ymd(days)
    months = (y + years - 1970) * 12 + (m - 1)
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + (dd - 1)


def _month_ends(ctx: _Ctx, months: Collection[int] | None = None) -> np.ndarray:
    ends = (ctx.period.start_month + np.arange(1, ctx.period.months + 1)).astype("datetime64[D]").astype(np.int64) - 1
    if months is None:
        return ends
    _, mon, _ = d._ymd(ends)
    return ends[np.isin(mon, list(months))]


def _exposure(ctx: _Ctx, start: int | None = None, end: int | None = None) -> np.ndarray:
    return d._exposure_years(ctx.reg.dob, ctx.start if start is None else start, ctx.end if end is None else end)


def _age_mid(ctx: _Ctx) -> np.ndarray:
    mid = (ctx.start + ctx.end) // 2
    return np.maximum(d._age_at(ctx.reg.dob, np.full(ctx.reg.size, mid)), 0)


def _season_weights(days: np.ndarray, winter: float = 0.1, weekend: float = 1.0) -> np.ndarray:
    _, month, _ = d._ymd(days)
    w = 1.0 + winter * np.cos(2 * np.pi * (month - 1) / 12)
    return w * np.where(d._weekday(days) >= 5, weekend, 1.0)


def _draw_in_window(ctx: _Ctx, rng: np.random.Generator, n: int, lower: np.ndarray | None = None,
                    start: int | None = None, end: int | None = None, winter: float = 0.1,
                    weekend: float = 1.0) -> np.ndarray:
    start = ctx.start if start is None else start
    end = ctx.end if end is None else end
    days = np.arange(start, end + 1)
    lower = np.full(n, start) if lower is None else lower
    return d._draw_days(rng, _season_weights(days, winter, weekend), start, lower)


def _person_events(ctx: _Ctx, rng: np.random.Generator, rate: np.ndarray, start: int | None = None,
                   end: int | None = None) -> np.ndarray:
    """Person index of each event: Poisson(rate per person-year x years alive in the window)."""
    counts = rng.poisson(rate * _exposure(ctx, start, end))
    return np.repeat(np.arange(ctx.reg.size), counts)


def _person_columns(ctx: _Ctx, person: np.ndarray, rng: np.random.Generator, *, override: np.ndarray | None = None,
                    ethnicity: bool = True, gp: bool = True) -> dict[str, pl.Series]:
    """sex, ethnicity, lsoa_code and gp_practice_code of each row's person (a few codes missing)."""
    reg = ctx.reg
    n = person.size
    cols = {"sex": d._codes(("F", "M"), reg.sex[person])}
    if ethnicity:
        cols["ethnicity"] = d._codes(d.ETHNIC_CODES, np.where(rng.random(n) < 0.01, -1, reg.ethnicity[person]))
    override = np.full(n, -1, dtype=np.int64) if override is None else override
    cols["lsoa_code"] = d._lsoa_codes(ctx.lsoas, reg.lsoa[person], override)
    if gp:
        cols["gp_practice_code"] = d._codes(reg.practices, np.where(rng.random(n) < 0.003, -1, reg.gp[person]))
    return cols


def _unknown_lsoa(ctx: _Ctx, source: str, n: int, rows: np.ndarray) -> np.ndarray:
    override = np.full(n, -1, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, _DEFECT_STREAM[source], 1]))
    override[rows] = rng.integers(0, 10_000, size=rows.size)
    return override


def _academic_label(year: int) -> str:
    return f"{year}-{(year + 1) % 100:02d}"


# ---------------------------------------------------------------------------------------------
# deaths and live births

# Mortality per person-year (England-like), log-linearly interpolated between these ages; 90 = 90+.
_MORT_AGES = np.array([1, 5, 15, 25, 35, 45, 55, 65, 75, 85, 90], dtype=np.float64)
_MORT = {
    0: np.array([0.00012, 0.00007, 0.00020, 0.00030, 0.0007, 0.0017, 0.0040, 0.0095, 0.025, 0.075, 0.20]),
    1: np.array([0.00014, 0.00009, 0.00040, 0.00075, 0.0013, 0.0027, 0.0065, 0.0150, 0.037, 0.100, 0.23]),
}
_MORT_Q_UNDER_75 = np.array([1.50, 1.22, 1.0, 0.86, 0.74])
_MORT_Q_75_PLUS = np.array([1.15, 1.07, 1.0, 0.95, 0.90])
_CIRC_Q = np.array([1.20, 1.08, 1.0, 0.94, 0.88])  # circulatory deaths are steeper still

CAUSES = ("circulatory", "cancer", "respiratory", "dementia", "external", "other", "infant")
_CAUSE_AGE_EDGES = np.array([0, 45, 65, 75, 85])
_CAUSE_SHARE = np.array([
    # circ  cancer resp  dem   ext   other
    [0.10, 0.20, 0.05, 0.00, 0.40, 0.25],  # 1-44
    [0.20, 0.38, 0.08, 0.01, 0.08, 0.25],  # 45-64
    [0.22, 0.40, 0.11, 0.04, 0.02, 0.21],  # 65-74
    [0.24, 0.28, 0.13, 0.12, 0.02, 0.21],  # 75-84
    [0.25, 0.13, 0.14, 0.22, 0.02, 0.24],  # 85+
])
# ICD-10 underlying cause codes (4 characters, no dot, as ONS mortality files) and their weights.
_ICD = {
    "circulatory": (("I219", 18), ("I251", 25), ("I639", 8), ("I64X", 7), ("I500", 8), ("I48X", 6), ("I110", 4),
                    ("I269", 4), ("I710", 5), ("I119", 3), ("I350", 4), ("I678", 8)),
    "cancer": (("C349", 22), ("C189", 8), ("C509", 8), ("C61X", 7), ("C259", 7), ("C159", 6), ("C169", 4),
               ("C679", 4), ("C719", 3), ("C800", 5), ("C900", 3), ("C859", 5), ("C220", 4), ("C56X", 3),
               ("C649", 3), ("C20X", 4)),
    "respiratory": (("J189", 30), ("J440", 15), ("J449", 30), ("J841", 10), ("J690", 10), ("J22X", 5)),
    "dementia": (("F03X", 55), ("G309", 35), ("F019", 10)),
    "external": (("X599", 10), ("W19X", 25), ("X700", 15), ("X420", 15), ("V892", 10), ("X440", 10), ("Y349", 15)),
    "other": (("K703", 12), ("E119", 8), ("N189", 8), ("A419", 10), ("R54X", 12), ("K746", 7), ("G122", 5),
              ("G20X", 8), ("E86X", 3), ("K566", 4), ("N390", 5), ("K922", 5), ("G35X", 3), ("D469", 5), ("K259", 5)),
    "infant": (("P072", 25), ("P220", 10), ("Q249", 15), ("Q899", 10), ("P369", 8), ("R95X", 7), ("P219", 8),
               ("P285", 7), ("Q000", 5), ("P011", 5)),
}
PLACES_OF_DEATH = ("hospital", "home", "care_home", "hospice", "other")
_PLACE_OF_DEATH = np.array([
    # hospital home  care   hospice other
    [0.50, 0.30, 0.16, 0.01, 0.03],  # circulatory
    [0.32, 0.36, 0.12, 0.18, 0.02],  # cancer
    [0.60, 0.18, 0.20, 0.01, 0.01],  # respiratory
    [0.18, 0.12, 0.68, 0.01, 0.01],  # dementia
    [0.45, 0.35, 0.05, 0.00, 0.15],  # external
    [0.52, 0.24, 0.20, 0.02, 0.02],  # other
    [0.80, 0.12, 0.00, 0.04, 0.04],  # infant
])
_HOSPITAL_Q = np.array([1.12, 1.06, 1.0, 0.95, 0.90])
_INFANT_Q = np.array([1.40, 1.15, 0.95, 0.80, 0.70])


def _mortality(age: np.ndarray, sex: int) -> np.ndarray:
    return np.exp(np.interp(age, _MORT_AGES, np.log(_MORT[sex])))


def _icd_codes(rng: np.random.Generator, cause: np.ndarray) -> pl.Series:
    """A specific ICD-10 code for each row's broad cause."""
    table: list[str] = []
    probs = np.zeros((len(CAUSES), max(len(v) for v in _ICD.values())))
    offsets = []
    for ci, name in enumerate(CAUSES):
        offsets.append(len(table))
        for k, (code, weight) in enumerate(_ICD[name]):
            table.append(code)
            probs[ci, k] = weight
    k = d._categorical(rng, probs, cause)
    return d._codes(table, np.array(offsets)[cause] + k)


def _birth_years(ctx: _Ctx) -> tuple[list[int], list[int]]:
    """(calendar years with complete births, every calendar year the deaths cover)."""
    y0 = int(d._ymd(np.array([ctx.history_start]))[0][0])
    y_end, m_end, d_end = (int(v[0]) for v in d._ymd(np.array([ctx.end])))
    complete_to = y_end if (m_end, d_end) == (12, 31) else y_end - 1
    return list(range(y0, complete_to + 1)), list(range(y0, y_end + 1))


def _year_fraction(ctx: _Ctx, year: int) -> tuple[int, int, float]:
    lo = max(d._day(f"{year}-01-01"), ctx.history_start)
    hi = min(d._day(f"{year}-12-31"), ctx.end)
    length = d._day(f"{year}-12-31") - d._day(f"{year}-01-01") + 1
    return lo, hi, max(hi - lo + 1, 0) / length


def _live_births(ctx: _Ctx) -> dict[int, np.ndarray]:
    """Live births per calendar year as (n_lsoa, 2) arrays: the age-0 population, births falling ~1.5% a year."""
    rng = ctx.rng("live_births")
    _, all_years = _birth_years(ctx)
    return {y: rng.poisson(ctx.population(y)[:, :, 0] * 1.02 * 0.985 ** (y - 2024)).astype(np.int64)
            for y in all_years}


def _births_frames(ctx: _Ctx, births: dict[int, np.ndarray]) -> list[tuple[str, pl.DataFrame]]:
    complete, _ = _birth_years(ctx)
    n = ctx.lsoas.height
    frames = []
    for year in complete:
        counts = births[year]
        frames.append((str(year), pl.DataFrame({
            "year": _ints(np.full(2 * n, year)),
            "lsoa_code": ctx.lsoas["lsoa_code"].gather(np.repeat(np.arange(n), 2)),
            "age": _ints(np.zeros(2 * n)),
            "sex": d._codes(("F", "M"), np.tile([0, 1], n)),
            "population": _ints(counts.reshape(-1)),
        })))
    return frames


def _deaths(ctx: _Ctx, births: dict[int, np.ndarray]) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    rng = ctx.rng("deaths")
    n_lsoa = ctx.lsoas.height
    lplace, lq = ctx.lsoa_place, ctx.lsoa_quintile
    ages = np.arange(1, 91)
    _, years = _birth_years(ctx)
    q_age = np.where(ages[None, :] < 75, _MORT_Q_UNDER_75[lq][:, None], _MORT_Q_75_PLUS[lq][:, None])  # (lsoa, age)

    # Deaths at ages 1+: Poisson per LSOA x sex x single year of age x calendar year.
    parts = []
    for year in years:
        lo, hi, frac = _year_fraction(ctx, year)
        if frac <= 0:
            continue
        pop = ctx.population(year)[:, :, 1:]
        lam = np.stack([pop[:, s, :] * _mortality(ages, s)[None, :] * q_age for s in (0, 1)], axis=1) * frac
        counts = rng.poisson(lam).reshape(-1)
        cell = np.repeat(np.arange(counts.size), counts)
        days = d._draw_days(rng, _season_weights(np.arange(lo, hi + 1), 0.15), lo, np.full(cell.size, lo))
        parts.append((cell // 180, (cell // 90) % 2, cell % 90 + 1, days))
    lsoa = np.concatenate([p[0] for p in parts])
    sex = np.concatenate([p[1] for p in parts])
    age = np.concatenate([p[2] for p in parts])
    day = np.concatenate([p[3] for p in parts])
    age = age + np.where(age == 90, np.minimum(np.floor(rng.exponential(3.5, age.size)), 15), 0).astype(np.int64)

    # Infant deaths: births of the year x the place's infant mortality, steeper in deprived LSOAs.
    imr = ctx.target("infant_mortality") / 1000
    births_w = sum(births.values()).sum(axis=1).astype(np.float64)
    qnorm = _group_mean(_INFANT_Q[lq], lplace, len(ctx.places), births_w)
    q_inf = imr[lplace] * _INFANT_Q[lq] / qnorm[lplace]
    inf_parts = []
    for year in years:
        lo, hi, frac = _year_fraction(ctx, year)
        if frac <= 0:
            continue
        counts = rng.binomial(births[year], np.clip(q_inf * frac, 0, 1)[:, None]).reshape(-1)
        cell = np.repeat(np.arange(counts.size), counts)
        days = lo + np.floor(rng.random(cell.size) * (hi - lo + 1)).astype(np.int64)
        inf_parts.append((cell // 2, cell % 2, days))
    i_lsoa = np.concatenate([p[0] for p in inf_parts])
    i_sex = np.concatenate([p[1] for p in inf_parts])
    i_day = np.concatenate([p[2] for p in inf_parts])

    # Causes: age-specific shares, circulatory scaled per place to its under-75 DSR target.
    band = d._band(age, _CAUSE_AGE_EDGES)
    place = lplace[lsoa]
    q = lq[lsoa]
    share = _CAUSE_SHARE[band]
    circ_w = share[:, 0] * _CIRC_Q[q]

    def circ_prob(k: np.ndarray) -> np.ndarray:
        scale = np.where(age < 75, k[place], 1.0)
        return scale * circ_w / (scale * circ_w + (1 - share[:, 0]))

    # Expected DSR from expected counts: deaths under 75 by place x ESP band over the years generated.
    esp_band = np.minimum(age // 5, 18)
    under75 = age < 75
    n_places = len(ctx.places)
    pop_years = np.zeros((n_places, 19))
    for year in years:
        _, _, frac = _year_fraction(ctx, year)
        pop = ctx.population(year).sum(axis=1)  # (lsoa, 91)
        by_band = np.zeros((n_lsoa, 19))
        for b in range(19):
            by_band[:, b] = pop[:, 5 * b : min(5 * b + 5, 91)].sum(axis=1)
        pop_years += np.stack([by_band[lplace == i].sum(axis=0) for i in range(n_places)]) * frac
    weights = ESP2013[:15]

    def dsr(k: np.ndarray) -> np.ndarray:
        p = circ_prob(k)
        exp_deaths = np.zeros((n_places, 19))
        np.add.at(exp_deaths, (place[under75], esp_band[under75]), p[under75])
        rates = exp_deaths[:, :15] / np.maximum(pop_years[:, :15], 1e-9)
        return (rates * weights).sum(axis=1) / weights.sum() * 1e5

    k = _solve_intercepts(dsr, ctx.target("circulatory_dsr_under_75"), lo=0.05, hi=6.0)
    circulatory_dsr = dsr(k)
    p_circ = circ_prob(k)
    rest = share[:, 1:] / share[:, 1:].sum(axis=1, keepdims=True) * (1 - p_circ)[:, None]
    cause = d._categorical(rng, np.column_stack([p_circ, rest]), np.arange(age.size))  # one distribution per row

    # Stitch adult and infant deaths together.
    lsoa = np.concatenate([lsoa, i_lsoa])
    sex = np.concatenate([sex, i_sex])
    age = np.concatenate([age, np.zeros(i_lsoa.size, dtype=np.int64)])
    day = np.concatenate([day, i_day])
    cause = np.concatenate([cause, np.full(i_lsoa.size, CAUSES.index("infant"))])
    place = lplace[lsoa]
    q = lq[lsoa]

    # Place of death: by cause and age, more hospital deaths in deprived areas, calibrated per place.
    probs = _PLACE_OF_DEATH[cause].copy()
    probs[:, 2] *= np.where(age >= 85, 1.6, np.where(age < 65, 0.2, 1.0))
    probs[:, 1] *= np.where(age < 65, 1.2, 1.0)
    probs[:, 0] *= _HOSPITAL_Q[q]
    probs /= probs.sum(axis=1, keepdims=True)

    def hospital_share(f: np.ndarray) -> np.ndarray:
        h = probs[:, 0] * f[place]
        return _group_mean(h / (h + 1 - probs[:, 0]), place, n_places)

    f = _solve_intercepts(hospital_share, ctx.target("deaths_in_hospital"), lo=0.05, hi=20.0)
    hospital_expected = hospital_share(f)
    h = probs[:, 0] * f[place]
    probs[:, 1:] *= ((1 - h / (h + 1 - probs[:, 0])) / (1 - probs[:, 0]))[:, None]
    probs[:, 0] = h / (h + 1 - probs[:, 0])
    where = d._categorical(rng, probs, np.arange(age.size))

    # Registration: usually within a week (weekdays); ~4% referred to a coroner take months.
    delay = 1 + np.floor(rng.gamma(2.0, 2.5, day.size)).astype(np.int64)
    coroner = rng.random(day.size) < 0.04
    delay = np.where(coroner, 30 + np.floor(rng.exponential(90, day.size)).astype(np.int64), delay)
    registered = day + delay
    wd = d._weekday(registered)
    registered = registered + np.where(wd == 5, 2, np.where(wd == 6, 1, 0))
    keep = registered <= ctx.end  # deaths not yet registered are not in the extract
    order = np.flatnonzero(keep)[np.lexsort((day[keep], registered[keep]))]
    lsoa, sex, age, day, cause, where, registered = (a[order] for a in (lsoa, sex, age, day, cause, where, registered))
    n = lsoa.size
    codes = _icd_codes(rng, cause)

    kinds = ("registration_before_death", "malformed_cause_code", "unknown_lsoa", "duplicate_registration")
    bad = _defects(ctx, "deaths", n, kinds)
    registered[bad["registration_before_death"]] = day[bad["registration_before_death"]] - rng.integers(
        1, 30, bad["registration_before_death"].size)
    if bad["malformed_cause_code"].size:  # a dotted code typed by hand: "I21.9"
        idx = bad["malformed_cause_code"]
        dotted = pl.select(pl.concat_str([codes.gather(idx).str.slice(0, 3), pl.lit("."),
                                          codes.gather(idx).str.slice(3, 1)])).to_series()
        codes = codes.scatter(idx, dotted)
    override = _unknown_lsoa(ctx, "deaths", n, bad["unknown_lsoa"])
    frame = pl.DataFrame({
        "death_id": ctx.ids("deaths", "D", n),
        "date_of_death": d._dates(day),
        "date_of_registration": d._dates(registered),
        "age": _ints(age),
        "sex": d._codes(("F", "M"), sex),
        "lsoa_code": d._lsoa_codes(ctx.lsoas, lsoa, override),
        "underlying_cause": codes,
        "place_of_death": d._codes(PLACES_OF_DEATH, where),
    })
    dup = bad["duplicate_registration"]
    file_month = d._month_index(registered)
    if dup.size:  # the same registration sent again in the next month's file
        frame = pl.concat([frame, frame[dup]])
        file_month = np.concatenate([file_month, np.minimum(file_month[dup] + 1, d._month_index(np.array([ctx.end]))[0])])
        order = np.argsort(file_month, kind="stable")
        frame, file_month = frame[order], file_month[order]
    expected = {"infant_mortality_per_1000": dict(zip(ctx.places, (imr * 1000).round(2).tolist(), strict=True)),
                "circulatory_dsr_under_75": dict(zip(ctx.places, circulatory_dsr.round(1).tolist(), strict=True)),
                "deaths_in_hospital": dict(zip(ctx.places, hospital_expected.round(3).tolist(), strict=True))}
    return frame, file_month, {k: int(v.size) for k, v in bad.items()}, expected


# ---------------------------------------------------------------------------------------------
# children: school readiness, child measurement, immunisations


def _weekdays_between(lo: int, hi: int, skip: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    days = np.arange(lo, hi + 1)
    keep = d._weekday(days) < 5
    for a, b in skip:
        keep &= (days < a) | (days > b)
    return days[keep]


def _school_years(ctx: _Ctx, month_day: str, inside_month_day: str | None = None) -> list[int]:
    """Academic years (by their starting year) whose collection date, ``month_day`` in the calendar
    year the academic year ends, falls inside the window (and ``inside_month_day`` too, if given)."""
    y0 = int(d._ymd(np.array([ctx.start]))[0][0]) - 1
    y1 = int(d._ymd(np.array([ctx.end]))[0][0])
    years = []
    for y in range(y0, y1 + 1):
        marks = [d._day(f"{y + 1}-{month_day}")]
        if inside_month_day:
            marks.append(d._day(f"{y + 1}-{inside_month_day}"))
        if all(ctx.start <= m <= ctx.end for m in marks):
            years.append(y)
    return years


def _born_between(ctx: _Ctx, first: str, last: str) -> np.ndarray:
    return np.flatnonzero((ctx.reg.dob >= d._day(first)) & (ctx.reg.dob <= d._day(last)))


_GLD_Q = np.array([-0.45, -0.20, 0.0, 0.15, 0.30])


def _eyfsp(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """End-of-Reception EYFS profile: one row per child assessed in June of each academic year."""
    rng = ctx.rng("eyfsp")
    reg = ctx.reg
    years = _school_years(ctx, "06-01", "06-30")
    person, year = [], []
    for y in years:
        cohort = _born_between(ctx, f"{y - 5}-09-01", f"{y - 4}-08-31")
        cohort = cohort[rng.random(cohort.size) < 0.98]  # a few are not assessed (moved, independent school)
        person.append(cohort)
        year.append(np.full(cohort.size, y))
    person = np.concatenate(person) if person else np.zeros(0, dtype=np.int64)
    year = np.concatenate(year) if year else np.zeros(0, dtype=np.int64)
    n = person.size
    june = [_weekdays_between(d._day(f"{y + 1}-06-01"), d._day(f"{y + 1}-06-30")) for y in years]
    day = np.zeros(n, dtype=np.int64)
    for i, y in enumerate(years):
        sel = year == y
        day[sel] = june[i][rng.integers(0, june[i].size, sel.sum())]
    _, birth_month, _ = d._ymd(reg.dob[person])
    months_young = (birth_month - 9) % 12  # 0 = September-born (oldest), 11 = August-born
    place = reg.place[person]
    base = (np.where(reg.sex[person] == 0, 0.28, -0.28) - 0.055 * (months_young - 5.5) + _GLD_Q[reg.quintile[person]]
            + 0.03 * (year - (np.mean(years) if years else 0)))
    alpha = _logistic_intercepts(base, place, ctx.target("gld"))
    gld = rng.random(n) < _sigmoid(alpha[place] + base)
    goals = np.where(gld, 12 + rng.binomial(5, 0.92, n), np.minimum(rng.binomial(17, 0.58, n), 16))

    kinds = ("gld_without_twelve_goals", "duplicate_child", "unknown_lsoa")
    bad = _defects(ctx, "eyfsp", n, kinds)
    gld[bad["gld_without_twelve_goals"]] = True
    goals[bad["gld_without_twelve_goals"]] = rng.integers(6, 12, bad["gld_without_twelve_goals"].size)
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "eyfsp", n, bad["unknown_lsoa"]), gp=False)
    frame = pl.DataFrame({
        "child_id": reg.person_id.gather(person),
        "assessment_date": d._dates(day),
        "age": _ints(d._age_at(reg.dob[person], day)),
        **cols,
        "goals_at_expected": _ints(goals),
        "gld": pl.Series(gld),
    })
    frame, year = _with_duplicates(frame, year, bad["duplicate_child"])
    frames = [(_academic_label(y), frame.filter(pl.Series(year == y)).sort("assessment_date", "child_id"))
              for y in years]
    return frames, {k: int(v.size) for k, v in bad.items()}, {"gld": _expected(ctx, "gld")}


def _with_duplicates(frame: pl.DataFrame, label: np.ndarray, rows: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """Append exact copies of ``rows`` (the same record sent twice)."""
    if rows.size == 0:
        return frame, label
    return pl.concat([frame, frame[rows]]), np.concatenate([label, label[rows]])


def _expected(ctx: _Ctx, name: str) -> dict[str, float]:
    return dict(zip(ctx.places, ctx.target(name).tolist(), strict=True))


_OBESE_Q = {"R": np.array([0.40, 0.18, 0.0, -0.20, -0.45]), "6": np.array([0.35, 0.15, 0.0, -0.20, -0.45])}
_BOYS = {"R": 0.08, "6": 0.25}  # boys more often obese than girls, especially in Year 6


def _ncmp(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """National Child Measurement Programme: Reception and Year 6, measured October to June."""
    rng = ctx.rng("ncmp")
    reg = ctx.reg
    years = _school_years(ctx, "08-31")
    person, year, group = [], [], []
    for y in years:
        for g, (lag, take) in enumerate(((5, 0.95), (11, 0.93))):
            cohort = _born_between(ctx, f"{y - lag}-09-01", f"{y - lag + 1}-08-31")
            cohort = cohort[rng.random(cohort.size) < take]  # participation
            person.append(cohort)
            year.append(np.full(cohort.size, y))
            group.append(np.full(cohort.size, g))
    person, year, group = (np.concatenate(a) if a else np.zeros(0, dtype=np.int64) for a in (person, year, group))
    n = person.size
    day = np.zeros(n, dtype=np.int64)
    for y in years:
        term = _weekdays_between(d._day(f"{y}-10-01"), d._day(f"{y + 1}-06-30"),
                                 ((d._day(f"{y}-12-18"), d._day(f"{y + 1}-01-04")),
                                  (d._day(f"{y + 1}-04-01"), d._day(f"{y + 1}-04-14"))))
        sel = year == y
        day[sel] = term[rng.integers(0, term.size, sel.sum())]
    place = reg.place[person]
    q = reg.quintile[person]
    boy = reg.sex[person] == 1
    base = np.where(group == 0, _OBESE_Q["R"][q] + np.where(boy, 0.5, -0.5) * _BOYS["R"],
                    _OBESE_Q["6"][q] + np.where(boy, 0.5, -0.5) * _BOYS["6"])
    cell = place * 2 + group
    targets = np.column_stack([ctx.target("obesity_reception"), ctx.target("obesity_year6")]).reshape(-1)
    alpha = _logistic_intercepts(base, cell, targets)
    obese = rng.random(n) < _sigmoid(alpha[cell] + base)
    # BMI centile (UK90): obese >= 95th; otherwise underweight, healthy weight or overweight.
    u = rng.random(n)
    over_share = np.where(group == 0, 0.13, 0.145)
    centile = np.where(
        obese, 95 + 4.9 * rng.beta(0.7, 1.0, n),
        np.where(u < 0.012, 0.1 + 1.8 * rng.random(n),
                 np.where(u < 0.012 + over_share, 85 + 9.9 * rng.random(n), 2 + 82.9 * rng.random(n))))
    centile = np.round(centile, 1)
    centile = np.where(obese, np.clip(centile, 95.0, 99.9), np.minimum(centile, 94.9))
    age = d._age_at(reg.dob[person], day)

    kinds = ("centile_out_of_range", "age_not_school_year", "unknown_lsoa")
    bad = _defects(ctx, "ncmp", n, kinds)
    centile[bad["centile_out_of_range"]] = np.round(100.5 + 60 * rng.random(bad["centile_out_of_range"].size), 1)
    age[bad["age_not_school_year"]] += 3  # typed the wrong birth year
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "ncmp", n, bad["unknown_lsoa"]), gp=False)
    frame = pl.DataFrame({
        "child_id": reg.person_id.gather(person),
        "measurement_date": d._dates(day),
        "school_year": d._codes(("R", "6"), group),
        "age": _ints(age),
        **cols,
        "bmi_centile": pl.Series(centile.astype(np.float64)),
    })
    frames = [(_academic_label(y), frame.filter(pl.Series(year == y)).sort("measurement_date", "child_id"))
              for y in years]
    expected = {"obesity_reception": _expected(ctx, "obesity_reception"), "obesity_year6": _expected(ctx, "obesity_year6")}
    return frames, {k: int(v.size) for k, v in bad.items()}, expected


_MMR_Q = np.array([-0.50, -0.25, 0.0, 0.20, 0.40])


def _quarter_end(days: np.ndarray) -> np.ndarray:
    y, m, _ = d._ymd(days)
    months = (y - 1970) * 12 + (m - 1) // 3 * 3 + 3  # first month after the quarter
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - 1


def _child_immunisations(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """COVER-style cohort: children reaching their 5th birthday, with MMR dose dates."""
    rng = ctx.rng("child_immunisations")
    reg = ctx.reg
    fifth_all = _add_years(reg.dob, 5)
    person = np.flatnonzero((fifth_all >= ctx.start) & (fifth_all <= ctx.end))
    n = person.size
    dob, fifth = reg.dob[person], fifth_all[person]
    place = reg.place[person]
    z = _MMR_Q[reg.quintile[person]] + rng.normal(0, 0.8, n)
    alpha = _logistic_intercepts(z, place, ctx.target("mmr2_by_5"))
    u = rng.random(n)
    dose2 = u < _sigmoid(alpha[place] + z)
    dose1 = u < _sigmoid(alpha[place] + z + 1.5)  # nested: everyone with two doses has one
    first_birthday = _add_years(dob, 1)
    late1 = rng.random(n) < 0.15
    room1 = np.maximum(fifth - first_birthday - 90, 61)
    lag1 = np.where(late1, 60 + np.floor(rng.random(n) * (room1 - 60)), 7 + rng.gamma(1.5, 15, n)).astype(np.int64)
    mmr1 = np.minimum(first_birthday + lag1, fifth - 30)
    due2 = _add_years(dob, 3) + 120  # three years and four months
    late2 = rng.random(n) < 0.12
    room2 = np.maximum(fifth - due2 - 1, 2)
    lag2 = np.where(late2, np.floor(rng.random(n) * room2), 7 + rng.gamma(1.5, 20, n)).astype(np.int64)
    mmr2 = np.minimum(np.maximum(due2 + lag2, mmr1 + 28), fifth)
    # Catch-up after the 5th birthday (outside the measure, but in the record).
    catch1 = ~dose1 & (rng.random(n) < 0.10)
    catch2 = dose1 & ~dose2 & (rng.random(n) < 0.30)
    after = fifth + 1 + np.floor(rng.random(n) * 400).astype(np.int64)
    mmr1 = np.where(dose1, mmr1, np.where(catch1, after, -1))
    mmr2 = np.where(dose2, mmr2, np.where(catch2, after, -1))
    mmr1 = np.where(mmr1 > ctx.end, -1, mmr1)
    mmr2 = np.where(mmr2 > ctx.end, -1, mmr2)

    kinds = ("second_dose_before_first", "duplicate_child", "unknown_lsoa")
    bad = _defects(ctx, "child_immunisations", n, kinds, eligible=(mmr1 >= 0) & (mmr2 >= 0))
    swap = bad["second_dose_before_first"]
    mmr2[swap] = mmr1[swap] - rng.integers(30, 300, swap.size)
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "child_immunisations", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "child_id": reg.person_id.gather(person),
        "date_of_birth": d._dates(dob),
        "fifth_birthday": d._dates(fifth),
        **cols,
        "mmr1_date": d._dates(np.maximum(mmr1, 0), mmr1 < 0),
        "mmr2_date": d._dates(np.maximum(mmr2, 0), mmr2 < 0),
    })
    quarter = _quarter_end(fifth)
    frame, quarter = _with_duplicates(frame, quarter, bad["duplicate_child"])
    frames = [(str(np.datetime64(int(qe), "D")), frame.filter(pl.Series(quarter == qe)).sort("fifth_birthday", "child_id"))
              for qe in np.unique(quarter).tolist()]
    return frames, {k: int(v.size) for k, v in bad.items()}, {"mmr2_by_5": _expected(ctx, "mmr2_by_5")}


# ---------------------------------------------------------------------------------------------
# adults: SMI health checks, urgent community response, reablement, social care survey


def _snapshot_days(ctx: _Ctx) -> np.ndarray:
    return _month_ends(ctx, SNAPSHOT_MONTHS)


def _calibration_day(snapshots: np.ndarray) -> int:
    """The calibration date, or the snapshot nearest to it when the window does not include it."""
    target = d._day(CALIBRATION_DATE)
    if snapshots.size == 0 or target in snapshots.tolist():
        return target
    return int(snapshots[np.argmin(np.abs(snapshots - target))])


SMI_CHECKS = ("bmi_date", "blood_pressure_date", "alcohol_date", "smoking_date", "glucose_date", "lipid_date")
_SMI_Q = np.array([1.8, 1.3, 1.0, 0.75, 0.55])
_SMI_CHECK_Q = np.array([-0.25, -0.12, 0.0, 0.08, 0.15])


def _smi_health_checks(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """SMI register snapshots: the last date of each of the six physical health checks."""
    rng = ctx.rng("smi_health_checks")
    reg = ctx.reg
    snapshots = _snapshot_days(ctx)
    age = _age_mid(ctx)
    age_factor = np.select([age < 18, age < 25, age < 65, age < 75], [0.0, 0.6, 1.2, 0.9], 0.6)
    p = 0.0105 * age_factor * _SMI_Q[reg.quintile]
    p *= 0.0105 * (age >= 18).sum() / max(p.sum(), 1e-12)
    person = np.flatnonzero(rng.random(reg.size) < p)
    n = person.size
    diagnosed = np.where(rng.random(n) < 0.92, ctx.start - 1 - np.floor(rng.random(n) * 7300),
                         ctx.start + np.floor(rng.random(n) * max(ctx.end - ctx.start, 1))).astype(np.int64)
    diagnosed = np.maximum(diagnosed, _add_years(reg.dob[person], 16))
    # Annual reviews from three years before the first snapshot; each is a full review (all six
    # checks) or a partial one (each check with probability 0.55). Engagement varies by person.
    first = int(snapshots.min()) if snapshots.size else ctx.start
    anchor = first - 3 * 365 + np.floor(rng.random(n) * 365).astype(np.int64)
    k_reviews = int(math.ceil((ctx.end - first) / 365)) + 4
    reviews = (anchor[:, None] + 365 * np.arange(k_reviews)[None, :]
               + np.round(rng.normal(0, 25, (n, k_reviews))).astype(np.int64))
    valid = reviews >= diagnosed[:, None]
    years_from_start = (reviews - ctx.start) / 365.25
    base = _SMI_CHECK_Q[reg.quintile[person]][:, None] + rng.normal(0, 1.0, n)[:, None] + 0.15 * years_from_start
    u_full = rng.random((n, k_reviews))
    partial = rng.random((n, k_reviews, 6)) < 0.55
    place = reg.place[person]
    calib = _calibration_day(snapshots)
    window = valid & (reviews <= calib) & (reviews > _add_years(np.array([calib]), -1)[0])
    in_cohort = (d._age_at(reg.dob[person], np.full(n, calib)) >= 18) & (diagnosed <= calib)

    def share(alpha: np.ndarray) -> np.ndarray:
        full = u_full < _sigmoid(alpha[place][:, None] + base)
        done = (full[:, :, None] | partial) & window[:, :, None]
        all_six = done.any(axis=1).all(axis=1)
        return _group_mean(all_six[in_cohort].astype(np.float64), place[in_cohort], len(ctx.places))

    alpha = _solve_intercepts(share, ctx.target("smi_all_six"), lo=-6, hi=8, iterations=30)
    full = u_full < _sigmoid(alpha[place][:, None] + base)
    done = (full[:, :, None] | partial) & valid[:, :, None]  # (n, reviews, checks)
    check_days = np.where(done, reviews[:, :, None], -d._FAR_FUTURE)

    frames, parts = [], []
    for snap in snapshots.tolist():
        sel = np.flatnonzero((d._age_at(reg.dob[person], np.full(n, snap)) >= 18) & (diagnosed <= snap))
        last = np.where(check_days[sel] <= snap, check_days[sel], -d._FAR_FUTURE).max(axis=1)  # (m, 6)
        parts.append((np.full(sel.size, snap), sel, last))
    snap_day = np.concatenate([p[0] for p in parts])
    who = np.concatenate([p[1] for p in parts])
    last = np.concatenate([p[2] for p in parts])
    rows = snap_day.size
    kinds = ("check_after_snapshot", "under_18", "unknown_lsoa")
    bad = _defects(ctx, "smi_health_checks", rows, kinds)
    last[bad["check_after_snapshot"], 1] = snap_day[bad["check_after_snapshot"]] + rng.integers(
        1, 40, bad["check_after_snapshot"].size)
    ages = d._age_at(reg.dob[person[who]], snap_day)
    ages[bad["under_18"]] = 17
    override = _unknown_lsoa(ctx, "smi_health_checks", rows, bad["unknown_lsoa"])
    cols = _person_columns(ctx, person[who], rng, override=override)
    frame = pl.DataFrame({
        "snapshot_date": d._dates(snap_day),
        "person_id": reg.person_id.gather(person[who]),
        "age": _ints(ages),
        **cols,
        **{name: d._dates(np.maximum(last[:, j], 0), last[:, j] < 0) for j, name in enumerate(SMI_CHECKS)},
    })
    for snap in snapshots.tolist():
        frames.append((str(np.datetime64(snap, "D")), frame.filter(pl.Series(snap_day == snap))))
    return frames, {k: int(v.size) for k, v in bad.items()}, {"smi_all_six": _expected(ctx, "smi_all_six")}


_UCR_AGE_EDGES = np.array([0, 18, 65, 75, 85])
_UCR_RATE = np.array([0.0005, 0.002, 0.012, 0.04, 0.12])  # 2-hour referrals per person-year, before scaling
_UCR_Q = np.array([1.25, 1.10, 1.0, 0.92, 0.85])
UCR_TWO_HOUR_PER_1000_MONTH = 1.35
UCR_SOURCES = ("GP", "NHS 111", "Ambulance service", "Care home", "Self or carer", "Other health professional")
_UCR_SOURCE_P = (0.30, 0.12, 0.20, 0.12, 0.08, 0.18)


def _minutes_of_day(rng: np.random.Generator, n: int, start_hour: float, end_hour: float, peak: float = 2.0) -> np.ndarray:
    """Seconds after midnight, between the hours given, peaking late morning."""
    span = (end_hour - start_hour) * 3600
    return (start_hour * 3600 + span * rng.beta(peak, peak * 1.3, n)).astype(np.int64)


def _response_times(rng: np.random.Generator, p_within: np.ndarray, limit_minutes: float, sigma: float) -> np.ndarray:
    """Lognormal times (minutes) with P(time <= limit) = p_within for each row."""
    median = np.exp(np.log(limit_minutes) - sigma * ndtri(np.clip(p_within, 1e-6, 1 - 1e-6)))
    return median * np.exp(sigma * rng.normal(0, 1, p_within.size))


def _ucr_referrals(ctx: _Ctx) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    """Urgent community response referrals (CSDS): 2-hour and other urgent referrals, first contact time."""
    rng = ctx.rng("ucr_referrals")
    reg = ctx.reg
    band = d._band(_age_mid(ctx), _UCR_AGE_EDGES)
    rate = _UCR_RATE[band] * _UCR_Q[reg.quintile]
    two_hour_total = UCR_TWO_HOUR_PER_1000_MONTH / 1000 * 12 * _exposure(ctx).sum()
    rate *= two_hour_total / max((rate * _exposure(ctx)).sum(), 1e-12) / 0.74  # 74% are 2-hour referrals
    person = _person_events(ctx, rng, rate)
    n = person.size
    day = _draw_in_window(ctx, rng, n, np.maximum(reg.dob[person], ctx.start), winter=0.15)
    seconds = _minutes_of_day(rng, n, 8, 20)
    two_hour = rng.random(n) < 0.74
    place = reg.place[person]
    _, month, _ = d._ymd(day)
    adj = (np.where(np.isin(month, [12, 1, 2]), -0.25, 0.08) + 0.25 * (day - ctx.start) / max(ctx.end - ctx.start, 1)
           + np.array([-0.12, -0.05, 0.0, 0.05, 0.1])[reg.quintile[person]])
    alpha = _logistic_intercepts(adj, place, ctx.target("ucr_two_hours"), weights=two_hour.astype(np.float64))
    p = _sigmoid(alpha[place] + adj)
    minutes = np.where(two_hour, _response_times(rng, p, 120, 0.55), 60 + rng.random(n) * 2820)
    contact = day * 86_400 + seconds + np.round(minutes * 60).astype(np.int64)
    # Closed before contact (declined, admitted elsewhere), or not yet seen when the extract was taken.
    contact_null = (rng.random(n) < 0.015) | (contact >= (ctx.end + 1) * 86_400)
    start_s = day * 86_400 + seconds
    order = np.lexsort((seconds, day))
    person, day, seconds, two_hour, contact, contact_null, start_s = (
        a[order] for a in (person, day, seconds, two_hour, contact, contact_null, start_s))
    kinds = ("contact_before_referral", "future_referral", "unknown_lsoa")
    bad = _defects(ctx, "ucr_referrals", n, kinds, eligible=~contact_null)
    contact[bad["contact_before_referral"]] = start_s[bad["contact_before_referral"]] - 60 * rng.integers(
        5, 600, bad["contact_before_referral"].size)
    shift = d._FUTURE_SHIFT_DAYS * 86_400
    start_s[bad["future_referral"]] += shift
    contact[bad["future_referral"]] += shift
    month_idx = d._month_index(day)
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "ucr_referrals", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "referral_id": ctx.ids("ucr_referrals", "U", n),
        "person_id": reg.person_id.gather(person),
        "referral_date": d._dates(start_s // 86_400),
        "referral_datetime": _datetimes(np.zeros(n), start_s),
        "first_contact_datetime": _datetimes(np.zeros(n), contact, contact_null),
        "two_hour_referral": pl.Series(two_hour),
        "referral_source": d._codes(UCR_SOURCES, d._categorical(rng, _UCR_SOURCE_P, n=n)),
        "age": _ints(np.maximum(d._age_at(reg.dob[person], day), 0)),
        **cols,
    })
    return frame, month_idx, {k: int(v.size) for k, v in bad.items()}, {"ucr_two_hours": _expected(ctx, "ucr_two_hours")}


REABLEMENT_SERVICES = ("home_reablement", "intermediate_care_bed", "rehabilitation")
REABLEMENT_STATUS = ("at_home", "in_hospital", "care_home", "died")
_REABLE_AGE_EDGES = np.array([0, 18, 65, 75, 85])
_REABLE_RATE = np.array([0.0, 0.0004, 0.006, 0.022, 0.05])


def _reablement(ctx: _Ctx) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    """Discharges from hospital to reablement / rehabilitation, with where the person is 91 days on."""
    rng = ctx.rng("reablement")
    reg = ctx.reg
    age_mid = _age_mid(ctx)
    rate = _REABLE_RATE[d._band(age_mid, _REABLE_AGE_EDGES)] * np.array([1.2, 1.1, 1.0, 0.92, 0.85])[reg.quintile]
    person = _person_events(ctx, rng, rate)
    n = person.size
    day = _draw_in_window(ctx, rng, n, np.maximum(reg.dob[person], ctx.start), winter=0.12, weekend=0.5)
    age = np.maximum(d._age_at(reg.dob[person], day), 0)
    adult = age >= 18  # adult services only (the rate is by age at mid-window)
    person, day, age = person[adult], day[adult], age[adult]
    n = person.size
    service = d._categorical(rng, (0.70, 0.20, 0.10), n=n)
    place = reg.place[person]
    base = (np.array([-0.30, -0.15, 0.0, 0.10, 0.20])[reg.quintile[person]]
            + np.select([age >= 85, age < 75], [-0.4, 0.3], 0.0) + np.where(service == 1, -0.3, 0.0))
    older = (age >= 65).astype(np.float64)
    alpha = _logistic_intercepts(base, place, ctx.target("reablement_at_home"), weights=older)
    home = rng.random(n) < _sigmoid(alpha[place] + base)
    other = d._categorical(rng, np.array([[0.35, 0.30, 0.35], [0.25, 0.30, 0.45]]), (age >= 85).astype(np.int64))
    status = np.where(home, 0, 1 + other)
    follow = day + 91
    pending = follow > ctx.end
    status = np.where(pending, -1, status)
    order = np.argsort(day, kind="stable")
    person, day, age, service, status, follow, pending = (
        a[order] for a in (person, day, age, service, status, follow, pending))
    kinds = ("followup_before_discharge", "status_not_recognised", "unknown_lsoa")
    bad = _defects(ctx, "reablement", n, kinds, eligible=~pending)
    follow[bad["followup_before_discharge"]] = day[bad["followup_before_discharge"]] - rng.integers(
        1, 30, bad["followup_before_discharge"].size)
    status_codes = (*REABLEMENT_STATUS, "home")  # "home": a free-text status the return does not allow
    status[bad["status_not_recognised"]] = len(REABLEMENT_STATUS)
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "reablement", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "episode_id": ctx.ids("reablement", "E", n),
        "person_id": reg.person_id.gather(person),
        "discharge_date": d._dates(day),
        "service_type": d._codes(REABLEMENT_SERVICES, service),
        "followup_date": d._dates(follow, pending),
        "status_at_91_days": d._codes(status_codes, status),
        "age": _ints(age),
        **cols,
    })
    expected = {"reablement_at_home": _expected(ctx, "reablement_at_home")}
    return frame, d._month_index(day), {k: int(v.size) for k, v in bad.items()}, expected


SUPPORT_SETTINGS = ("community", "residential", "nursing")
_LTS_AGE_EDGES = np.array([0, 18, 65, 75, 85])
_LTS_RATE = np.array([0.0, 0.006, 0.015, 0.04, 0.12])  # share receiving long-term support
SURVEY_RESPONSE_SHARE = 0.13  # sampled and responding, per year


def _social_care_survey(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """Adult Social Care Survey: fieldwork January to March; question 8a on social contact."""
    rng = ctx.rng("social_care_survey")
    reg = ctx.reg
    years = _school_years(ctx, "01-15", "03-31")  # survey year Y/Y+1: fieldwork in Jan-Mar of Y+1
    parts = []
    for y in years:
        when = d._day(f"{y + 1}-01-15")
        age = d._age_at(reg.dob, np.full(reg.size, when))
        p = _LTS_RATE[d._band(np.maximum(age, 0), _LTS_AGE_EDGES)] * np.array([1.3, 1.15, 1.0, 0.9, 0.8])[reg.quintile]
        who = np.flatnonzero(rng.random(reg.size) < p * SURVEY_RESPONSE_SHARE)
        days = _weekdays_between(d._day(f"{y + 1}-01-06"), d._day(f"{y + 1}-03-31"))
        parts.append((np.full(who.size, y), who, days[rng.integers(0, days.size, who.size)]))
    year = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    person = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    day = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    n = person.size
    age = d._age_at(reg.dob[person], day)
    setting = d._categorical(rng, np.array([[0.92, 0.05, 0.03], [0.70, 0.21, 0.09]]), (age >= 65).astype(np.int64))
    place = reg.place[person]
    base = (np.array([-0.25, -0.10, 0.0, 0.10, 0.20])[reg.quintile[person]] + np.where(setting > 0, 0.2, 0.0)
            + np.where(age < 65, -0.2, 0.0))
    alpha = _logistic_intercepts(base, place, ctx.target("social_contact"))
    best = rng.random(n) < _sigmoid(alpha[place] + base)
    rest = 2 + d._categorical(rng, (0.58, 0.28, 0.14), n=n)  # adequate; some but not enough; little, isolated
    answer = np.where(best, 1, rest)
    answer = np.where(rng.random(n) < 0.02, -1, answer)  # question left blank
    kinds = ("answer_not_allowed", "duplicate_response", "unknown_lsoa")
    bad = _defects(ctx, "social_care_survey", n, kinds)
    answer[bad["answer_not_allowed"]] = 9  # several boxes ticked, keyed as 9
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "social_care_survey", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "response_id": ctx.ids("social_care_survey", "Q", n),
        "person_id": reg.person_id.gather(person),
        "response_date": d._dates(day),
        "age": _ints(age),
        **cols,
        "support_setting": d._codes(SUPPORT_SETTINGS, setting),
        "social_contact": pl.Series(np.where(answer < 0, 0, answer).astype(np.int64)).set(pl.Series(answer < 0), None),
    })
    frame, year = _with_duplicates(frame, year, bad["duplicate_response"])
    frames = [(_academic_label(y), frame.filter(pl.Series(year == y)).sort("response_date", "response_id"))
              for y in years]
    return frames, {k: int(v.size) for k, v in bad.items()}, {"social_contact": _expected(ctx, "social_contact")}


# ---------------------------------------------------------------------------------------------
# prevention: NHS Health Checks and the National Diabetes Audit

_HC_Q = np.array([-0.20, -0.08, 0.0, 0.05, 0.10])
# Uptake by financial year (logit shift): the 2020/21 pause and the recovery after it.
_HC_YEAR = {2020: -2.0, 2021: -0.9, 2022: -0.3}
_HC_EPOCH = "2009-04-01"


def _snapshot_offsets(counts: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _nhs_health_checks(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """Quarterly snapshots of people aged 40-74: existing conditions, last offer and last check."""
    rng = ctx.rng("nhs_health_checks")
    reg = ctx.reg
    snapshots = _snapshot_days(ctx)
    if snapshots.size == 0:
        return [], {}, {}
    lo, hi = int(snapshots.min()), int(snapshots.max())
    calib = _calibration_day(snapshots)
    age_lo = d._age_at(reg.dob, np.full(reg.size, min(lo, calib)))
    age_hi = d._age_at(reg.dob, np.full(reg.size, max(hi, calib)))
    person = np.flatnonzero((age_hi >= 40) & (age_lo <= 74))
    n = person.size
    dob, q, place = reg.dob[person], reg.quintile[person], reg.place[person]
    # Existing conditions (CVD, diabetes, CKD, hypertension ...) exclude people from the programme:
    # cumulative share 3% at 40 rising to ~33% at 74, more in deprived areas.
    u = rng.random(n) / np.array([1.3, 1.15, 1.0, 0.9, 0.8])[q]
    x = np.clip((u - 0.03) / 0.30, 0, None) ** (1 / 1.6)
    onset_age = np.where(u < 0.03, 35.0, np.where(u > 0.33, 200.0, 40 + 34 * x))
    onset = dob + np.round(onset_age * 365.25).astype(np.int64)
    # Invitations every five years from a personal offset; uptake by person, deprivation and year.
    epoch = d._day(_HC_EPOCH)
    k_rounds = int(math.ceil((hi - epoch) / 1826.25)) + 1
    offset = np.floor(rng.random(n) * 1826.25).astype(np.int64)
    rounds = np.round(1826.25 * np.arange(k_rounds)).astype(np.int64)
    invite = epoch + offset[:, None] + rounds[None, :] + np.round(rng.normal(0, 30, (n, k_rounds))).astype(np.int64)
    age_inv = (invite - dob[:, None]) / 365.25
    offered = (age_inv >= 40) & (age_inv < 75) & (invite < onset[:, None]) & (invite <= hi)
    y, m, _ = d._ymd(invite.reshape(-1))
    fy = (y - (m < 4)).reshape(invite.shape)
    year_effect = np.zeros(invite.shape)
    for year, shift in _HC_YEAR.items():
        year_effect[fy == year] = shift
    base = _HC_Q[q][:, None] + rng.normal(0, 1.0, n)[:, None] + year_effect
    check = invite + 14 + np.floor(rng.gamma(2.0, 14.0, invite.shape)).astype(np.int64)
    u_att = rng.random(invite.shape)
    age_c = d._age_at(dob, np.full(n, calib))
    cohort = (age_c >= 40) & (age_c <= 74) & (onset > calib)
    five_years_before = int(_add_years(np.array([calib]), -5)[0])
    in_window = offered & (check > five_years_before) & (check <= calib)

    # Only people in the calibration cohort with an invitation in the window can count.
    counts = np.bincount(place[cohort], minlength=len(ctx.places))
    rows = np.flatnonzero(cohort & in_window.any(axis=1))
    c_place, c_base, c_u, c_window = place[rows], base[rows], u_att[rows], in_window[rows]

    def share(alpha: np.ndarray) -> np.ndarray:
        attended = ((c_u < _sigmoid(alpha[c_place][:, None] + c_base)) & c_window).any(axis=1)
        return np.bincount(c_place, weights=attended, minlength=len(ctx.places)) / np.maximum(counts, 1)

    alpha = _solve_intercepts(share, ctx.target("health_check_5yr"), lo=-6, hi=8, iterations=24)
    attended = (u_att < _sigmoid(alpha[place][:, None] + base)) & offered
    offers = np.where(offered, invite, -d._FAR_FUTURE)
    checks = np.where(attended, check, -d._FAR_FUTURE)

    members = [np.flatnonzero((a >= 40) & (a <= 74)) for a in (d._age_at(dob, np.full(n, s)) for s in snapshots.tolist())]
    offsets = _snapshot_offsets([m.size for m in members])
    kinds = ("check_after_snapshot", "age_out_of_range", "unknown_lsoa")
    bad = _defects(ctx, "nhs_health_checks", int(offsets[-1]), kinds)
    frames = []
    for i, (snap, sel) in enumerate(zip(snapshots.tolist(), members, strict=True)):
        local = {k: v[(v >= offsets[i]) & (v < offsets[i + 1])] - offsets[i] for k, v in bad.items()}
        last_offer = np.where(offers[sel] <= snap, offers[sel], -d._FAR_FUTURE).max(axis=1)
        last_check = np.where(checks[sel] <= snap, checks[sel], -d._FAR_FUTURE).max(axis=1)
        last_check[local["check_after_snapshot"]] = snap + rng.integers(1, 60, local["check_after_snapshot"].size)
        age = d._age_at(dob[sel], np.full(sel.size, snap))
        age[local["age_out_of_range"]] = np.where(age[local["age_out_of_range"]] < 57, 39, 75)
        who = person[sel]
        cols = _person_columns(ctx, who, rng, override=_unknown_lsoa(ctx, "nhs_health_checks", sel.size,
                                                                        local["unknown_lsoa"]))
        frames.append((str(np.datetime64(snap, "D")), pl.DataFrame({
            "snapshot_date": d._dates(np.full(sel.size, snap)),
            "person_id": reg.person_id.gather(who),
            "age": _ints(age),
            **cols,
            "existing_condition": pl.Series(onset[sel] <= snap),
            "last_offer_date": d._dates(np.maximum(last_offer, 0), last_offer < 0),
            "last_check_date": d._dates(np.maximum(last_check, 0), last_check < 0),
        })))
    return frames, {k: int(v.size) for k, v in bad.items()}, {"health_check_5yr": _expected(ctx, "health_check_5yr")}


CARE_PROCESSES = ("hba1c", "blood_pressure", "cholesterol", "serum_creatinine", "urine_albumin", "foot_surveillance",
                  "bmi", "smoking")
_CP_BASE = _logit(np.array([0.95, 0.94, 0.90, 0.94, 0.72, 0.85, 0.91, 0.93]))
DIABETES_TYPES = ("type_1", "type_2", "other")
_DM_AGE_EDGES = np.array([0, 17, 40, 60, 80])
_DM_PREVALENCE = np.array([0.002, 0.012, 0.065, 0.16, 0.17])
_DM_Q = np.array([1.35, 1.15, 1.0, 0.88, 0.75])
_SOUTH_ASIAN = np.isin(np.array(d.ETHNIC_CODES), ["H", "J", "K", "L"])
_BLACK = np.isin(np.array(d.ETHNIC_CODES), ["M", "N", "P"])


def _diabetes_care_processes(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """National Diabetes Audit: people with diabetes at each audit year end and the 8 care processes."""
    rng = ctx.rng("diabetes_care_processes")
    reg = ctx.reg
    ends = _month_ends(ctx, (3,))
    age = _age_mid(ctx)
    p = (_DM_PREVALENCE[d._band(age, _DM_AGE_EDGES)] * _DM_Q[reg.quintile]
         * np.where(_SOUTH_ASIAN[reg.ethnicity], 2.0, np.where(_BLACK[reg.ethnicity], 1.5, 1.0)))
    person = np.flatnonzero(rng.random(reg.size) < p)
    n = person.size
    dob = reg.dob[person]
    a = age[person]
    dm_type = np.where(rng.random(n) < np.where(a < 40, 0.5, 0.05), 0, np.where(rng.random(n) < 0.02, 2, 1))
    earliest = np.maximum(dob + np.where(dm_type == 0, 2, 25) * 365, ctx.end - 20 * 365)
    diagnosed = earliest + np.floor(rng.random(n) * np.maximum(ctx.end - earliest, 1)).astype(np.int64)
    rows = [(e, np.flatnonzero((diagnosed <= e) & (dob <= e))) for e in ends.tolist()]
    year_end = np.concatenate([np.full(r.size, e) for e, r in rows]) if rows else np.zeros(0, dtype=np.int64)
    idx = np.concatenate([r for _, r in rows]) if rows else np.zeros(0, dtype=np.int64)
    m = idx.size
    who = person[idx]
    place = reg.place[who]
    trend = 0.08 * (year_end - ctx.start) / 365.25
    effect = (rng.normal(0, 1.2, n)[idx] + rng.normal(0, 0.5, m) + np.array([-0.2, -0.1, 0.0, 0.05, 0.1])[reg.quintile[who]]
              + np.where(dm_type[idx] == 0, -0.6, 0.0) + trend)
    logits = effect[:, None] + _CP_BASE[None, :]

    def all_eight(alpha: np.ndarray) -> np.ndarray:
        return _group_mean(_sigmoid(alpha[place][:, None] + logits).prod(axis=1), place, len(ctx.places))

    alpha = _solve_intercepts(all_eight, ctx.target("diabetes_all_eight"), lo=-6, hi=8, iterations=30)
    done = rng.random((m, 8)) < _sigmoid(alpha[place][:, None] + logits)
    diag = diagnosed[idx].copy()
    types = dm_type[idx].copy()
    kinds = ("diagnosis_after_audit_year", "type_not_recognised", "unknown_lsoa")
    bad = _defects(ctx, "diabetes_care_processes", m, kinds)
    diag[bad["diagnosis_after_audit_year"]] = year_end[bad["diagnosis_after_audit_year"]] + rng.integers(
        1, 200, bad["diagnosis_after_audit_year"].size)
    type_codes = (*DIABETES_TYPES, "T2")
    types[bad["type_not_recognised"]] = 3
    cols = _person_columns(ctx, who, rng, override=_unknown_lsoa(ctx, "diabetes_care_processes", m, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "audit_year_end": d._dates(year_end),
        "person_id": reg.person_id.gather(who),
        "age": _ints(d._age_at(dob[idx], year_end)),
        **cols,
        "diabetes_type": d._codes(type_codes, types),
        "diagnosis_date": d._dates(diag),
        **{name: pl.Series(done[:, j]) for j, name in enumerate(CARE_PROCESSES)},
    })
    frames = []
    for e in ends.tolist():
        y = int(d._ymd(np.array([e]))[0][0])
        frames.append((_academic_label(y - 1), frame.filter(pl.Series(year_end == e))))
    return frames, {k: int(v.size) for k, v in bad.items()}, {"diabetes_all_eight": _expected(ctx, "diabetes_all_eight")}


# ---------------------------------------------------------------------------------------------
# hospital: A&E, waiting lists, emergency admissions


def _providers(ctx: _Ctx, rng: np.random.Generator, person: np.ndarray) -> pl.Series:
    """Provider codes: mostly the person's local trust (as metrics.demo's provider mix)."""
    codes: list[str] = []
    mixes = []
    for i, p in enumerate(ctx.places):
        mix = d._PROVIDERS.get(p) or ((d._OTHER_PRIMARY_PROVIDERS[i % len(d._OTHER_PRIMARY_PROVIDERS)], 0.9),
                                      ("RRK", 0.1))
        mixes.append(mix)
        codes += [c for c, _ in mix if c not in codes]
    matrix = np.zeros((len(ctx.places), len(codes)))
    for i, mix in enumerate(mixes):
        for c, share in mix:
            matrix[i, codes.index(c)] += share
    return d._codes(codes, d._categorical(rng, matrix, ctx.reg.place[person]))


_AE_AGE_EDGES = np.array([0, 1, 5, 18, 45, 65, 75, 85])
_AE_RATE = np.array([0.9, 0.45, 0.28, 0.38, 0.30, 0.36, 0.55, 0.95])
_AE_Q = np.array([1.45, 1.20, 1.0, 0.85, 0.72])
AE_PER_PERSON_YEAR = 0.42
# Arrivals by hour of day (relative), an emergency department's usual profile.
_AE_HOURS = np.array([2.2, 1.7, 1.4, 1.2, 1.1, 1.1, 1.5, 2.6, 4.2, 5.6, 6.2, 6.2, 5.9, 5.7, 5.6, 5.5, 5.4, 5.4,
                      5.3, 5.0, 4.5, 3.9, 3.2, 2.6])
ARRIVAL_MODES = ("ambulance", "walk_in")


def _ae_attendances(ctx: _Ctx) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    """A&E attendances of every type (1 major ED, 2 single specialty, 3 UTC), arrival and departure."""
    rng = ctx.rng("ae_attendances")
    reg = ctx.reg
    age_mid = _age_mid(ctx)
    rate = _AE_RATE[d._band(age_mid, _AE_AGE_EDGES)] * _AE_Q[reg.quintile]
    exposure = _exposure(ctx)
    rate *= AE_PER_PERSON_YEAR * exposure.sum() / max((rate * exposure).sum(), 1e-12)
    person = _person_events(ctx, rng, rate)
    n = person.size
    days = np.arange(ctx.start, ctx.end + 1)
    weights = _season_weights(days, 0.06) * np.where(d._weekday(days) == 0, 1.12, 1.0)
    day = d._draw_days(rng, weights, ctx.start, np.maximum(reg.dob[person], ctx.start))
    hour = d._categorical(rng, _AE_HOURS, n=n)
    seconds = hour * 3600 + np.floor(rng.random(n) * 3600).astype(np.int64)
    age = np.maximum(d._age_at(reg.dob[person], day), 0)
    p_utc = np.select([age < 18, age < 65, age < 75], [0.45, 0.38, 0.22], 0.12)
    u = rng.random(n)
    dept = np.where(u < p_utc, 3, np.where(u < p_utc + 0.02, 2, 1))
    p_amb = np.where(dept == 1, np.select([age >= 75, age >= 65], [0.55, 0.35], 0.15), 0.01)
    ambulance = rng.random(n) < p_amb
    place = reg.place[person]
    _, month, _ = d._ymd(day)
    adj = (np.where(np.isin(month, [12, 1, 2]), -0.30, 0.08) + 0.30 * (day - ctx.start) / max(ctx.end - ctx.start, 1)
           + np.where(age >= 75, -0.35, 0.0) + np.where(ambulance, -0.25, 0.0)
           + np.array([-0.06, -0.03, 0.0, 0.02, 0.04])[reg.quintile[person]])
    type1 = dept == 1
    fixed = np.where(dept == 3, 0.96, 0.93)
    n_places = len(ctx.places)

    def overall(alpha: np.ndarray) -> np.ndarray:
        p = np.where(type1, _sigmoid(alpha[place] + adj), fixed)
        return _group_mean(p, place, n_places)

    alpha = _solve_intercepts(overall, ctx.target("ae_four_hours"))
    p = np.where(type1, _sigmoid(alpha[place] + adj), fixed)
    minutes = np.clip(_response_times(rng, p, 240, np.where(type1, 0.75, 0.5)), 5, 72 * 60)
    arrive = day * 86_400 + seconds
    depart = arrive + np.round(minutes * 60).astype(np.int64)
    order = np.argsort(arrive, kind="stable")
    person, day, age, dept, ambulance, arrive, depart = (
        a[order] for a in (person, day, age, dept, ambulance, arrive, depart))
    kinds = ("departure_before_arrival", "future_arrival", "unknown_lsoa")
    bad = _defects(ctx, "ae_attendances", n, kinds)
    depart[bad["departure_before_arrival"]] = arrive[bad["departure_before_arrival"]] - 60 * rng.integers(
        10, 300, bad["departure_before_arrival"].size)
    arrive[bad["future_arrival"]] += d._FUTURE_SHIFT_DAYS * 86_400
    depart[bad["future_arrival"]] += d._FUTURE_SHIFT_DAYS * 86_400
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "ae_attendances", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "attendance_id": ctx.ids("ae_attendances", "A", n),
        "person_id": reg.person_id.gather(person),
        "provider_code": _providers(ctx, rng, person),
        "department_type": _ints(dept),
        "arrival_mode": d._codes(ARRIVAL_MODES, np.where(ambulance, 0, 1)),
        "arrival_date": d._dates(arrive // 86_400),
        "arrival_datetime": _datetimes(np.zeros(n), arrive),
        "departure_datetime": _datetimes(np.zeros(n), depart),
        "age": _ints(age),
        **cols,
    })
    expected = {"ae_four_hours": _expected(ctx, "ae_four_hours")}
    return frame, d._month_index(day), {k: int(v.size) for k, v in bad.items()}, expected


_RTT_AGE_EDGES = np.array([0, 18, 45, 65, 75, 85])
_RTT_RATE = np.array([0.12, 0.22, 0.38, 0.55, 0.62, 0.50])
_RTT_Q = np.array([1.10, 1.05, 1.0, 0.97, 0.95])
RTT_LIST_SHARE = 0.13  # of residents with an incomplete pathway at any month end
RTT_FUNCTIONS = (("100", 10), ("101", 7), ("110", 15), ("120", 7), ("130", 12), ("140", 5), ("300", 6), ("301", 6),
                 ("320", 6), ("330", 5), ("340", 3), ("400", 3), ("502", 8))
_RTT_MAX_DAYS = 1100


def _rtt_durations(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard draws for clock-stop times: (short, log-normal noise, which) - scaled per place later."""
    return 7 + rng.exponential(40, n), rng.normal(0, 0.4, n), rng.random(n) < 0.4


def _rtt_waiting_list(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """Month-end census of incomplete referral-to-treatment pathways, with weeks waited."""
    rng = ctx.rng("rtt_waiting_list")
    reg = ctx.reg
    snapshots = _month_ends(ctx)
    n_places = len(ctx.places)
    # Calibrate each place's median wait of the long-wait component so that the census share under
    # 18 weeks hits the target: for a steady flow, P(waited < t) = E[min(D, t)] / E[D].
    short, noise, is_short = _rtt_durations(np.random.default_rng(np.random.SeedSequence([ctx.seed, 999])), 20_000)

    def durations(median: float | np.ndarray, s=short, z=noise, w=is_short) -> np.ndarray:
        return np.minimum(np.where(w, s, median * np.exp(z)), _RTT_MAX_DAYS)

    def census_share(a: np.ndarray) -> np.ndarray:
        out = np.empty(a.size)
        for i, ai in enumerate(a):
            dd = durations(np.exp(-ai))
            out[i] = np.minimum(dd, 126).mean() / dd.mean()
        return out

    log_median = -_solve_intercepts(census_share, ctx.target("rtt_under_18_weeks"), lo=-8, hi=-2, iterations=40)
    mean_days = np.array([durations(np.exp(lm)).mean() for lm in log_median])
    span_start = (int(snapshots.min()) if snapshots.size else ctx.start) - _RTT_MAX_DAYS
    rate = _RTT_RATE[d._band(_age_mid(ctx), _RTT_AGE_EDGES)] * _RTT_Q[reg.quintile]
    exposure = _exposure(ctx, span_start, ctx.end)
    # Clock starts per day = list size / mean wait, per place.
    place_pop = np.bincount(reg.place, minlength=n_places)
    per_day = RTT_LIST_SHARE * place_pop / mean_days
    expected_place = np.bincount(reg.place, weights=rate * exposure, minlength=n_places)
    rate *= (per_day * (ctx.end - span_start + 1) / np.maximum(expected_place, 1e-12))[reg.place]
    person = np.repeat(np.arange(reg.size), rng.poisson(rate * exposure))
    m = person.size
    lower = np.maximum(reg.dob[person], span_start)
    start = lower + np.floor(rng.random(m) * (ctx.end + 1 - lower)).astype(np.int64)
    s, z, w = _rtt_durations(rng, m)
    improving = np.exp(-0.10 * np.clip((start - ctx.start) / max(ctx.end - ctx.start, 1), 0, 1))
    length = np.round(durations(np.exp(log_median)[reg.place[person]] * improving, s, z, w)).astype(np.int64)
    stop = start + np.maximum(length, 1)
    j0 = np.searchsorted(snapshots, start, side="left")
    j1 = np.searchsorted(snapshots, stop, side="left") - 1
    count = np.maximum(j1 - j0 + 1, 0)
    pathway = np.repeat(np.arange(m), count)
    first = np.cumsum(count) - count
    snap_idx = j0[pathway] + (np.arange(pathway.size) - np.repeat(first, count))
    order = np.lexsort((pathway, snap_idx))
    pathway, snap_idx = pathway[order], snap_idx[order]
    rows = pathway.size
    kinds = ("clock_start_after_snapshot", "duplicate_pathway", "unknown_lsoa")
    bad = _defects(ctx, "rtt_waiting_list", rows, kinds)
    function_codes, function_w = zip(*RTT_FUNCTIONS, strict=True)
    function = d._categorical(rng, function_w, n=m)
    pathway_ids = ctx.ids("rtt_waiting_list", "W", m)
    providers = _providers(ctx, rng, person)
    bounds = np.searchsorted(snap_idx, np.arange(snapshots.size + 1))
    frames = []
    for j, snap in enumerate(snapshots.tolist()):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        local = {k: v[(v >= lo) & (v < hi)] - lo for k, v in bad.items()}
        pw = pathway[lo:hi]
        who = person[pw]
        clock = start[pw].copy()
        weeks = (snap - clock) // 7
        clock[local["clock_start_after_snapshot"]] = snap + rng.integers(1, 30, local["clock_start_after_snapshot"].size)
        override = _unknown_lsoa(ctx, "rtt_waiting_list", pw.size, local["unknown_lsoa"])
        cols = _person_columns(ctx, who, rng, override=override)
        frame = pl.DataFrame({
            "snapshot_date": d._dates(np.full(pw.size, snap)),
            "pathway_id": pathway_ids.gather(pw),
            "person_id": reg.person_id.gather(who),
            "provider_code": providers.gather(pw),
            "treatment_function_code": d._codes(function_codes, function[pw]),
            "clock_start_date": d._dates(clock),
            "weeks_waiting": _ints(weeks),
            "age": _ints(np.maximum(d._age_at(reg.dob[who], np.full(pw.size, snap)), 0)),
            **cols,
        })
        if local["duplicate_pathway"].size:
            frame = pl.concat([frame, frame[local["duplicate_pathway"]]])
        frames.append((str(np.datetime64(snap, "D")), frame))
    return frames, {k: int(v.size) for k, v in bad.items()}, {"rtt_under_18_weeks": _expected(ctx, "rtt_under_18_weeks")}


_ADM_AGE_EDGES = np.array([0, 1, 5, 18, 45, 65, 75, 85])
_ADM_RATE = np.array([0.30, 0.09, 0.04, 0.06, 0.09, 0.17, 0.30, 0.55])
_ADM_Q = np.array([1.45, 1.20, 1.0, 0.85, 0.72])
EMERGENCY_ADMISSIONS_PER_PERSON_YEAR = 0.10
ADMISSION_GROUPS = ("acsc", "fall_injury", "other_injury", "respiratory_infection", "chest_pain", "abdominal",
                    "infection", "cardiovascular", "other")
_ADM_GROUP_SHARE = np.array([
    # acsc  fall  injury resp  chest abdo  infect cardio other
    [0.02, 0.01, 0.04, 0.30, 0.00, 0.05, 0.06, 0.00, 0.52],  # under 1
    [0.08, 0.04, 0.08, 0.30, 0.00, 0.08, 0.04, 0.00, 0.38],  # 1-4
    [0.08, 0.05, 0.12, 0.12, 0.03, 0.20, 0.03, 0.00, 0.37],  # 5-17
    [0.05, 0.02, 0.10, 0.06, 0.08, 0.22, 0.05, 0.02, 0.40],  # 18-44
    [0.09, 0.03, 0.06, 0.08, 0.12, 0.16, 0.06, 0.08, 0.32],  # 45-64
    [0.11, 0.06, 0.03, 0.12, 0.09, 0.10, 0.08, 0.12, 0.29],  # 65-74
    [0.11, 0.08, 0.02, 0.15, 0.06, 0.07, 0.11, 0.11, 0.29],  # 75-84
    [0.09, 0.13, 0.02, 0.16, 0.03, 0.05, 0.14, 0.08, 0.30],  # 85+
])
_ACSC_Q = np.array([1.40, 1.20, 1.0, 0.88, 0.76])
_FALL_Q = np.array([1.15, 1.07, 1.0, 0.95, 0.90])
# Primary diagnoses (ICD-10, 4 characters) per group; near misses (E119, J209, I214) test the filters.
_ADM_CODES = {
    "acsc": (("I209", 8), ("I259", 8), ("J459", 8), ("J46X", 2), ("J440", 12), ("J441", 10), ("J449", 6), ("J47X", 2),
             ("I500", 10), ("I501", 3), ("J81X", 2), ("G409", 6), ("G419", 1), ("R568", 5), ("F03X", 3), ("F019", 1),
             ("E101", 2), ("E110", 1), ("E116", 2), ("E117", 1), ("I10X", 3), ("I110", 2), ("D509", 2), ("D519", 1)),
    "fall_injury": (("S720", 25), ("S721", 5), ("S069", 6), ("S065", 4), ("S010", 5), ("S019", 3), ("S420", 4),
                    ("S422", 4), ("S525", 8), ("S322", 4), ("S223", 6), ("S800", 5), ("S810", 4), ("S300", 6),
                    ("S700", 5), ("T141", 6)),
    "other_injury": (("S610", 10), ("S620", 8), ("S828", 8), ("S099", 8), ("T391", 10), ("T424", 8), ("S018", 6),
                     ("T783", 6), ("S911", 6), ("T220", 5), ("S318", 5)),
    "respiratory_infection": (("J189", 40), ("J22X", 25), ("J181", 8), ("J121", 5), ("J069", 10), ("J209", 12)),
    "chest_pain": (("R074", 60), ("R073", 25), ("R072", 15)),
    "abdominal": (("R104", 40), ("K358", 15), ("K802", 12), ("K590", 8), ("K529", 10), ("K560", 5), ("K851", 5),
                  ("R11X", 5)),
    "infection": (("N390", 55), ("A419", 30), ("N10X", 10), ("L031", 5)),
    "cardiovascular": (("I214", 30), ("I219", 10), ("I48X", 25), ("I639", 20), ("I64X", 10), ("I269", 5)),
    "other": (("R55X", 10), ("R296", 6), ("E119", 4), ("F101", 6), ("R51X", 6), ("K922", 5), ("D649", 5), ("E871", 5),
              ("N179", 6), ("L039", 5), ("G459", 5), ("R402", 4), ("O209", 5), ("Z030", 4), ("M796", 5), ("R42X", 5),
              ("I959", 4), ("F329", 5)),
}
# External cause codes (4th character: place of occurrence, 0 = home, 8 = other specified place).
_FALL_CAUSES = (("W010", 15), ("W018", 10), ("W060", 8), ("W100", 12), ("W180", 15), ("W188", 10), ("W190", 20),
                ("W198", 10))
_OTHER_CAUSES = (("X400", 8), ("X440", 8), ("V892", 8), ("W220", 10), ("W540", 6), ("X780", 8), ("X590", 10),
                 ("W250", 8), ("V030", 6), ("Y040", 6))


def _weighted_codes(rng: np.random.Generator, table: tuple[tuple[str, int], ...], n: int) -> tuple[list[str], np.ndarray]:
    codes, weights = zip(*table, strict=True)
    return list(codes), d._categorical(rng, weights, n=n)


def _odds_scaled(p: np.ndarray, k: np.ndarray) -> np.ndarray:
    return k * p / (k * p + 1 - p)


def _emergency_admissions(ctx: _Ctx) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    """Emergency admissions (SUS APC, first episode) with primary diagnosis and external cause."""
    rng = ctx.rng("emergency_admissions")
    reg = ctx.reg
    n_places = len(ctx.places)
    age_mid = _age_mid(ctx)
    rate = _ADM_RATE[d._band(age_mid, _ADM_AGE_EDGES)] * _ADM_Q[reg.quintile]
    exposure = _exposure(ctx)
    rate *= EMERGENCY_ADMISSIONS_PER_PERSON_YEAR * exposure.sum() / max((rate * exposure).sum(), 1e-12)
    person = _person_events(ctx, rng, rate)
    n = person.size
    day = _draw_in_window(ctx, rng, n, np.maximum(reg.dob[person], ctx.start), winter=0.12, weekend=0.85)
    age = np.maximum(d._age_at(reg.dob[person], day), 0)
    q = reg.quintile[person]
    place = reg.place[person]
    share = _ADM_GROUP_SHARE[d._band(age, _ADM_AGE_EDGES)]
    acsc = share[:, 0] * _ACSC_Q[q]
    fall = share[:, 1] * _FALL_Q[q]
    # Calibrate: ACSC admissions per 1,000 person-years; falls 65+ as a DSR over ESP bands 65-69 ... 90+.
    person_years = np.bincount(reg.place, weights=exposure, minlength=n_places)
    k_acsc = _solve_intercepts(
        lambda k: np.bincount(place, weights=_odds_scaled(acsc, k[place]), minlength=n_places) / person_years * 1000,
        ctx.target("acsc_per_1000"), lo=0.05, hi=20.0)
    old = age >= 65
    band = np.minimum(age // 5, 18)
    # Person-years by ESP band as the engine counts them: the mid-year population times the years.
    mid_year = int(d._ymd(np.array([(ctx.start + ctx.end) // 2]))[0][0])
    pop = ctx.population(mid_year).sum(axis=1)  # (lsoa, 91)
    py_band = np.zeros((n_places, 19))
    for b in range(19):
        py_band[:, b] = np.bincount(ctx.lsoa_place, weights=pop[:, 5 * b : min(5 * b + 5, 91)].sum(axis=1),
                                    minlength=n_places)
    py_band *= (ctx.end - ctx.start + 1) / 365.25
    weights = ESP2013[13:]

    def falls_dsr(k: np.ndarray) -> np.ndarray:
        expected = np.zeros((n_places, 19))
        np.add.at(expected, (place[old], band[old]), _odds_scaled(fall[old], k[place[old]]))
        return (expected[:, 13:] / np.maximum(py_band[:, 13:], 1e-9) * weights).sum(axis=1) / weights.sum() * 1e5

    k_fall = _solve_intercepts(falls_dsr, ctx.target("falls_dsr_65"), lo=0.05, hi=20.0)
    p_acsc = _odds_scaled(acsc, k_acsc[place])
    p_fall = _odds_scaled(fall, k_fall[place])
    rest = share[:, 2:] / share[:, 2:].sum(axis=1, keepdims=True) * np.maximum(1 - p_acsc - p_fall, 0)[:, None]
    group = d._categorical(rng, np.column_stack([p_acsc, p_fall, rest]), np.arange(n))
    # Diagnosis codes within each group.
    all_codes: list[str] = []
    diagnosis = np.zeros(n, dtype=np.int64)
    for gi, name in enumerate(ADMISSION_GROUPS):
        sel = np.flatnonzero(group == gi)
        codes, k = _weighted_codes(rng, _ADM_CODES[name], sel.size)
        diagnosis[sel] = len(all_codes) + k
        all_codes += codes
    cause_codes: list[str] = []
    cause = np.full(n, -1, dtype=np.int64)
    for gi, table in ((1, _FALL_CAUSES), (2, _OTHER_CAUSES)):
        sel = np.flatnonzero(group == gi)
        codes, k = _weighted_codes(rng, table, sel.size)
        cause[sel] = len(cause_codes) + k
        cause_codes += codes
    cause = np.where((group == 2) & (rng.random(n) < 0.05), -1, cause)  # some injuries lack a cause code
    median = np.where(age >= 85, 5.0, np.where(age >= 65, 3.0, 1.5)) * np.where(group == 1, 2.5, 1.0)
    los = np.floor(median * np.exp(rng.normal(0, 0.9, n))).astype(np.int64)
    discharge = day + np.minimum(los, 200)
    in_hospital = discharge > ctx.end  # not yet discharged when the extract was taken
    e_codes, e_p = zip(*d.EMERGENCY_METHODS, strict=True)
    method = d._categorical(rng, e_p, n=n)
    order = np.argsort(day, kind="stable")
    person, day, age, diagnosis, cause, discharge, method, in_hospital = (
        a[order] for a in (person, day, age, diagnosis, cause, discharge, method, in_hospital))
    kinds = ("discharge_before_admission", "malformed_diagnosis", "unknown_lsoa")
    bad = _defects(ctx, "emergency_admissions", n, kinds, eligible=~in_hospital)
    discharge[bad["discharge_before_admission"]] = day[bad["discharge_before_admission"]] - rng.integers(
        1, 20, bad["discharge_before_admission"].size)
    diagnoses = d._codes(all_codes, diagnosis)
    if bad["malformed_diagnosis"].size:
        idx = bad["malformed_diagnosis"]
        dotted = pl.select(pl.concat_str([diagnoses.gather(idx).str.slice(0, 3), pl.lit("."),
                                          diagnoses.gather(idx).str.slice(3, 1)])).to_series()
        diagnoses = diagnoses.scatter(idx, dotted)
    cols = _person_columns(ctx, person, rng, override=_unknown_lsoa(ctx, "emergency_admissions", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "admission_id": ctx.ids("emergency_admissions", "S", n),
        "person_id": reg.person_id.gather(person),
        "provider_code": _providers(ctx, rng, person),
        "admission_date": d._dates(day),
        "admission_method": d._codes(e_codes, method),
        "discharge_date": d._dates(discharge, in_hospital),
        "age": _ints(age),
        **cols,
        "primary_diagnosis": diagnoses,
        "external_cause": d._codes(cause_codes, cause),
    })
    expected = {"acsc_per_1000": _expected(ctx, "acsc_per_1000"), "falls_dsr_65": _expected(ctx, "falls_dsr_65")}
    return frame, d._month_index(day), {k: int(v.size) for k, v in bad.items()}, expected


# ---------------------------------------------------------------------------------------------
# mental health contacts and the NHS App

MH_TEAMS = ("cypmhs", "eating_disorders", "early_intervention_psychosis", "crisis_resolution",
            "community_mental_health", "perinatal", "older_adult_mental_health")
_MH_TEAM_BY_AGE = np.array([
    [0.78, 0.07, 0.04, 0.11, 0.00, 0.00, 0.00],  # under 18
    [0.05, 0.05, 0.15, 0.15, 0.52, 0.08, 0.00],  # 18-25
    [0.00, 0.02, 0.05, 0.15, 0.70, 0.08, 0.00],  # 26-64
    [0.00, 0.00, 0.00, 0.15, 0.10, 0.00, 0.75],  # 65+
])
_MH_AGE_EDGES = np.array([0, 5, 13, 18, 26, 65])
_MH_REL = np.array([0.08, 0.8, 1.8, 1.15, 0.6, 0.45])  # people in contact per year, relative to ages 0-25
_MH_Q = np.array([1.35, 1.15, 1.0, 0.90, 0.80])
MH_MEDIA = ("01", "02", "04", "98")


def _mental_health_contacts(ctx: _Ctx) -> tuple[pl.DataFrame, np.ndarray, dict, dict]:
    """Mental health care contacts (MHSDS) for all ages, with the team and attendance."""
    rng = ctx.rng("mental_health_contacts")
    reg = ctx.reg
    age_mid = _age_mid(ctx)
    young = age_mid <= 25
    rel = _MH_REL[d._band(age_mid, _MH_AGE_EDGES)] * _MH_Q[reg.quintile]
    norm = _group_mean(rel, reg.place, len(ctx.places), young.astype(np.float64))
    # About 1.15 people in contact in a 12-month window per episode started in a year (episodes overlap).
    episode_rate = ctx.target("cyp_mh_per_1000")[reg.place] / 1000 / 1.15 * rel / norm[reg.place]
    t0 = ctx.start - 365
    exposure = d._exposure_years(reg.dob, t0, ctx.end)
    person = np.repeat(np.arange(reg.size), rng.poisson(episode_rate * exposure))
    e = person.size
    lower = np.maximum(reg.dob[person], t0)
    opened = lower + np.floor(rng.random(e) * (ctx.end + 1 - lower)).astype(np.int64)
    n_contacts = 1 + rng.poisson(rng.gamma(1.3, 5.0 / 1.3, e))
    episode = np.repeat(np.arange(e), n_contacts)
    first = np.cumsum(n_contacts) - n_contacts
    step = np.maximum(1, np.round(14 * rng.gamma(2.0, 0.5, episode.size))).astype(np.int64)
    step[first] = 0
    csum = np.cumsum(step)
    day = opened[episode] + csum - np.repeat(csum[first], n_contacts)
    wd = d._weekday(day)
    day = day + np.where(wd == 5, 2, np.where(wd == 6, 1, 0))
    keep = (day >= ctx.start) & (day <= ctx.end)
    episode, day = episode[keep], day[keep]
    who = person[episode]
    n = who.size
    age = np.maximum(d._age_at(reg.dob[who], day), 0)
    age_group = np.select([age < 18, age <= 25, age < 65], [0, 1, 2], 3)
    team_of_episode = d._categorical(rng, _MH_TEAM_BY_AGE, np.select(
        [age_mid[person] < 18, age_mid[person] <= 25, age_mid[person] < 65], [0, 1, 2], 3))
    team = team_of_episode[episode]
    dna = np.array([0.09, 0.07, 0.055, 0.045, 0.035])[reg.quintile[who]] + np.where(age_group == 1, 0.03, 0.0)
    fixed = [np.full(n, p) for p in (0.84, 0.02, 0.01, 0.04)]
    probs = np.stack([*fixed, dna, np.full(n, 0.02)], axis=1)  # status 5, 6, 7, 2, 3 (did not attend), 4
    status = d.ATTENDANCE_CODES[d._categorical(rng, probs / probs.sum(axis=1, keepdims=True), np.arange(n))]
    medium = d._categorical(rng, (0.60, 0.25, 0.12, 0.03), n=n)
    order = np.lexsort((episode, day))
    who, day, age, team, status, medium, episode = (a[order] for a in (who, day, age, team, status, medium, episode))
    kinds = ("duplicate_contact", "future_date", "unknown_lsoa")
    bad = _defects(ctx, "mental_health_contacts", n, kinds)
    month = d._month_index(day)
    day[bad["future_date"]] += d._FUTURE_SHIFT_DAYS
    cols = _person_columns(ctx, who, rng, override=_unknown_lsoa(ctx, "mental_health_contacts", n, bad["unknown_lsoa"]))
    frame = pl.DataFrame({
        "contact_id": ctx.ids("mental_health_contacts", "M", n),
        "person_id": reg.person_id.gather(who),
        "service_request_id": d._hex_ids("R", episode.astype(np.uint64), d._id_key(ctx.seed, 60)),
        "contact_date": d._dates(day),
        "team_type": d._codes(MH_TEAMS, team),
        "attendance_status": _ints(status),
        "consultation_medium": d._codes(MH_MEDIA, medium),
        "age": _ints(age),
        **cols,
    })
    dup = bad["duplicate_contact"]
    if dup.size:  # sent again in the same month's file
        frame = pl.concat([frame, frame[dup]])
        month = np.concatenate([month, month[dup]])
        order = np.argsort(month, kind="stable")
        frame, month = frame[order], month[order]
    return frame, month, {k: int(v.size) for k, v in bad.items()}, {"cyp_mh_per_1000": _expected(ctx, "cyp_mh_per_1000")}


_APP_Q = np.array([-0.40, -0.20, 0.0, 0.15, 0.30])
_APP_AGE_EDGES = np.array([0, 18, 45, 65, 75, 85])
_APP_AGE = np.array([-0.5, 0.6, 0.3, -0.2, -0.9, -1.8])
_APP_TAU = 1460.0  # days: adoption grows ~6 points a year around 60%
APP_LAUNCH = "2019-01-01"


def _nhs_app_registrations(ctx: _Ctx) -> tuple[list[tuple[str, pl.DataFrame]], dict, dict]:
    """Registered patients aged 13+ at quarter ends, with whether (and when) they joined the NHS App."""
    rng = ctx.rng("nhs_app_registrations")
    reg = ctx.reg
    snapshots = _snapshot_days(ctx)
    if snapshots.size == 0:
        return [], {}, {}
    calib = _calibration_day(snapshots)
    thirteen = _add_years(reg.dob, 13)
    age_c = np.maximum(d._age_at(reg.dob, np.full(reg.size, calib)), 0)
    base = _APP_Q[reg.quintile] + _APP_AGE[d._band(age_c, _APP_AGE_EDGES)] + rng.normal(0, 0.8, reg.size)
    eligible = (age_c >= 13).astype(np.float64)
    a = _logistic_intercepts(base, reg.place, ctx.target("nhs_app"), weights=eligible)
    # Registration time T with P(T <= s) = sigmoid((s - calib) / tau + a + base).
    u = rng.random(reg.size)
    t = calib + _APP_TAU * (np.log(u / (1 - u)) - a[reg.place] - base)
    launch = d._day(APP_LAUNCH)
    t = np.where(t < launch, launch + rng.random(reg.size) * 200, t)
    registered_on = np.maximum(np.round(t).astype(np.int64), thirteen)
    members = [np.flatnonzero(thirteen <= s) for s in snapshots.tolist()]
    offsets = _snapshot_offsets([m.size for m in members])
    kinds = ("registration_after_snapshot", "flag_without_date", "unknown_lsoa")
    bad = _defects(ctx, "nhs_app_registrations", int(offsets[-1]), kinds)
    frames = []
    for i, (snap, who) in enumerate(zip(snapshots.tolist(), members, strict=True)):
        local = {k: v[(v >= offsets[i]) & (v < offsets[i + 1])] - offsets[i] for k, v in bad.items()}
        on = registered_on[who].copy()
        flag = on <= snap
        null = ~flag
        on[local["registration_after_snapshot"]] = snap + rng.integers(1, 60, local["registration_after_snapshot"].size)
        null[local["registration_after_snapshot"]] = False
        flag[local["registration_after_snapshot"]] = True
        flag[local["flag_without_date"]] = True
        null[local["flag_without_date"]] = True
        cols = _person_columns(ctx, who, rng, override=_unknown_lsoa(ctx, "nhs_app_registrations", who.size,
                                                                        local["unknown_lsoa"]), ethnicity=False)
        frames.append((str(np.datetime64(snap, "D")), pl.DataFrame({
            "snapshot_date": d._dates(np.full(who.size, snap)),
            "person_id": reg.person_id.gather(who),
            "age": _ints(d._age_at(reg.dob[who], np.full(who.size, snap))),
            **cols,
            "app_registered": pl.Series(flag),
            "app_registration_date": d._dates(np.where(null, 0, on), null),
        })))
    return frames, {k: int(v.size) for k, v in bad.items()}, {"nhs_app": _expected(ctx, "nhs_app")}


# ---------------------------------------------------------------------------------------------
# writing and the entry points


def _clear(folder: Path, source: str) -> None:
    """Remove files an earlier run wrote for this source (only our own file-name pattern)."""
    if folder.is_dir():
        for ext in d.FORMATS.values():
            for f in sorted(folder.glob(f"{_PREFIX[source]}*.{ext}")):
                f.unlink()


def _monthly(frame: pl.DataFrame, month: np.ndarray) -> list[tuple[str, pl.DataFrame]]:
    """Split rows (sorted by file month) into one frame per month that has rows."""
    order = np.argsort(month, kind="stable")
    if not np.array_equal(order, np.arange(month.size)):
        frame, month = frame[order], month[order]
    months, starts = np.unique(month, return_index=True)
    bounds = [*starts.tolist(), month.size]
    return [(str(np.datetime64(int(m), "M")), frame.slice(bounds[i], bounds[i + 1] - bounds[i]))
            for i, m in enumerate(months.tolist())]


def demo_context(*, scale: float = 1.0, seed: int = 20240401, start_month: str = "2023-04", months: int = 36) -> dict:
    """The keyword arguments ``generate_catalogue_sources`` needs, built as ``generate_demo_data`` builds them
    (the same LSOAs, population and residents for the same arguments)."""
    period = d._Period(d._parse_month(start_month), months)
    places = geo.select_places_for_scale(scale)
    lsoas = d._geography(places)
    mid_month = period.first_month_index + (period.months - 1) // 2
    ref_year = int(mid_month // 12 + 1970)
    years = sorted(set(period.years) | {ref_year})
    pop = d._population(lsoas, places, years, min(float(scale), 1.0), int(seed))
    reg = d._register(lsoas, places, pop[ref_year], d._day(f"{ref_year}-07-01"), period.end_day, int(seed))
    return {"register": reg, "lsoas": lsoas, "places": places, "population": pop}


def generate_catalogue_sources(
    out: Path,
    *,
    register: d._Register,
    lsoas: pl.DataFrame,
    places: list[str],
    population: dict[int, np.ndarray],
    seed: int = 20240401,
    fmt: str = "parquet",
    start_month: str = "2023-04",
    months: int = 36,
    defect_rate: float = 0.005,
    progress: Callable[[str], None] | None = None,
    sources: Collection[str] | None = None,
) -> dict:
    """Write the catalogue's other sources under ``out`` (one folder each) and return a summary.

    ``register``, ``lsoas``, ``places`` and ``population`` are the residents, geography (with its
    ``_place`` index), place codes and population arrays ``metrics.demo.generate_demo_data`` builds;
    :func:`demo_context` builds them standalone. ``sources`` limits which sources are written
    (default: all of ``CATALOGUE_SOURCES``). Deterministic: the same arguments give the same bytes.
    """
    if fmt not in d.FORMATS:
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if not (isinstance(months, int) and months >= 1):
        raise ValueError(f"months must be a positive integer, got {months!r}")
    if not (0 <= defect_rate < 0.25):
        raise ValueError(f"defect_rate must be in [0, 0.25), got {defect_rate!r}")
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    wanted = list(CATALOGUE_SOURCES if sources is None else sources)
    unknown = sorted(set(wanted) - set(CATALOGUE_SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {list(CATALOGUE_SOURCES)}")
    say = progress or (lambda _msg: None)
    out = Path(out)
    ext = d.FORMATS[fmt]
    ctx = _Ctx(reg=register, lsoas=lsoas, places=list(places), pop=population,
               period=d._Period(d._parse_month(start_month), months), seed=int(seed), defect_rate=float(defect_rate))
    summary: dict = {"rows": {}, "files": {}, "defects": {}, "calibration_targets": {}}

    def emit(source: str, parts: list[tuple[str, pl.DataFrame]], defects: dict, expected: dict) -> None:
        folder = out / source
        _clear(folder, source)
        folder.mkdir(parents=True, exist_ok=True)
        files, rows = [], 0
        for label, frame in parts:
            path = folder / f"{_PREFIX[source]}{label}.{ext}"
            d._write(frame, path, fmt)  # the foundation generator's atomic writer
            files.append(path.relative_to(out).as_posix())
            rows += frame.height
        summary["rows"][source] = rows
        summary["files"][source] = files
        summary["defects"][source] = defects
        summary["calibration_targets"].update(expected)
        say(f"{source}: {rows:,} rows in {len(files)} file(s)")

    births = _live_births(ctx) if {"deaths", "live_births"} & set(wanted) else {}
    for source in CATALOGUE_SOURCES:
        if source not in wanted:
            continue
        if source == "live_births":
            emit(source, _births_frames(ctx, births), {}, {})
        elif source == "deaths":
            frame, month, defects, expected = _deaths(ctx, births)
            emit(source, _monthly(frame, month), defects, expected)
        elif source in _MONTHLY:
            frame, month, defects, expected = _MONTHLY[source](ctx)
            emit(source, _monthly(frame, month), defects, expected)
        else:
            parts, defects, expected = _BY_FILE[source](ctx)
            emit(source, parts, defects, expected)
    return summary


# Sources whose generator returns one frame split into monthly files, and those returning files.
_MONTHLY: dict[str, Callable[[_Ctx], tuple[pl.DataFrame, np.ndarray, dict, dict]]] = {
    "ucr_referrals": _ucr_referrals,
    "reablement": _reablement,
    "ae_attendances": _ae_attendances,
    "mental_health_contacts": _mental_health_contacts,
    "emergency_admissions": _emergency_admissions,
}
_BY_FILE: dict[str, Callable[[_Ctx], tuple[list[tuple[str, pl.DataFrame]], dict, dict]]] = {
    "eyfsp": _eyfsp,
    "ncmp": _ncmp,
    "child_immunisations": _child_immunisations,
    "smi_health_checks": _smi_health_checks,
    "social_care_survey": _social_care_survey,
    "nhs_health_checks": _nhs_health_checks,
    "diabetes_care_processes": _diabetes_care_processes,
    "rtt_waiting_list": _rtt_waiting_list,
    "nhs_app_registrations": _nhs_app_registrations,
}
