"""Realistic, deterministic demo data for the outcomes engine.

``generate_demo_data(out)`` writes one folder per source declared in ``definitions/sources/``::

    out/geography/geography.<ext>
    out/population/population_<year>.<ext>
    out/inpatient_spells/spells_<YYYY-MM>.<ext>          (one file per discharge month)
    out/community_contacts/contacts_<YYYY-MM>.<ext>      (one file per submission month)
    out/breast_screening/screening_<YYYY-MM-DD>.<ext>    (one file per quarter-end snapshot)

Everything is built on the real geography (English Indices of Deprivation 2019 LSOAs, see
:mod:`metrics.geography_data`) and a synthetic register of residents drawn from the generated
population, so that each person keeps one LSOA, sex, ethnicity and GP practice, and ages over time.
Activity is then drawn per person with vectorised numpy: no Python loop runs over rows.

Calibration (approximate, published figures in DESIGN.md section 4):

* population: place totals match mid-2024 (Dudley 331,930; Walsall 295,678) times ``scale``;
* inpatient spells: about 0.10 ordinary admissions of one night or more per resident per year,
  age-skewed, plus day cases (about a quarter of rows); among adults discharged alive with a
  Discharge Ready Date (DRD) about 87% leave on the DRD, ~3.5 points fewer in December-February,
  ~4.5 points fewer in the most deprived quintile than the least, and ~4 points more from
  January 2025 (a sustained shift); ~2% of eligible spells have no DRD;
* community contacts: about 1.8 per resident per year, ~60% for people aged 65+, more in deprived
  areas; ~2% of a month's contacts are resubmitted in the next month's file;
* breast screening: coverage (women 53-70, not ceased, screened in the last 36 months) at
  31 March 2025 is calibrated to 71.1% in Dudley and 66.6% in Walsall with ~10 points between the
  most and least deprived quintiles.

Codes that are not fixed by the NHS Data Dictionary in this project (community team types, GP
practice codes, provider mix) are illustrative. Person and record identifiers are pseudonymous
hex strings derived from the seed ("P" + 10 hex digits etc.), never NHS-number-like.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from metrics import geography_data as geo

SOURCES: tuple[str, ...] = (
    "geography",
    "population",
    "inpatient_spells",
    "community_contacts",
    "breast_screening",
)
FORMATS = {"parquet": "parquet", "csv": "csv"}
_FILE_PREFIX = {
    "geography": "geography",
    "population": "population_",
    "inpatient_spells": "spells_",
    "community_contacts": "contacts_",
    "breast_screening": "screening_",
}

# Independent random streams, one per component, so a change in one leaves the others alone.
_STREAM = {
    "population": 1,
    "register": 2,
    "spells": 3,
    "contacts": 4,
    "screening": 5,
    "defects_spells": 6,
    "defects_contacts": 7,
    "ids": 8,
}

_FUTURE_SHIFT_DAYS = 25_567  # ~70 years: "future date" defects land in the 2090s, never near today.
_FAR_FUTURE = 2**31 - 1

ETHNIC_CODES = ("A", "B", "C", "D", "E", "F", "G", "H", "J", "K", "L", "M", "N", "P", "R", "S", "Z")
# Broad groups: White, Mixed, Asian, Black, Other, Not stated; codes within each group and their split.
_ETH_GROUP_CODES = (
    (("A", 0.93), ("B", 0.01), ("C", 0.06)),
    (("D", 0.45), ("E", 0.10), ("F", 0.25), ("G", 0.20)),
    (("H", 0.55), ("J", 0.28), ("K", 0.10), ("L", 0.07)),
    (("M", 0.45), ("N", 0.45), ("P", 0.10)),
    (("R", 0.25), ("S", 0.75)),
    (("Z", 1.0),),
)
# Place-level group mix (White, Mixed, Asian, Black, Other, Z): Black Country-like, approximate.
_ETH_MIX = {
    geo.DUDLEY: (0.855, 0.022, 0.075, 0.018, 0.012, 0.018),
    geo.WALSALL: (0.750, 0.030, 0.150, 0.035, 0.015, 0.020),
    geo.SANDWELL: (0.600, 0.040, 0.240, 0.080, 0.020, 0.020),
    geo.WOLVERHAMPTON: (0.630, 0.050, 0.200, 0.080, 0.020, 0.020),
}
_ETH_MIX_OTHER = (0.820, 0.030, 0.090, 0.030, 0.015, 0.015)

_GP_PREFIX = {geo.DUDLEY: "M87", geo.WALSALL: "M91", geo.SANDWELL: "M88", geo.WOLVERHAMPTON: "M92"}
_PRACTICES_PER_NEIGHBOURHOOD = 9

_PROVIDERS = {
    geo.DUDLEY: (("RNA", 0.80), ("RXK", 0.06), ("RRK", 0.06), ("RL4", 0.05), ("RBK", 0.03)),
    geo.WALSALL: (("RBK", 0.78), ("RL4", 0.08), ("RRK", 0.07), ("RXK", 0.04), ("RNA", 0.03)),
    geo.SANDWELL: (("RXK", 0.80), ("RRK", 0.08), ("RNA", 0.05), ("RL4", 0.04), ("RBK", 0.03)),
    geo.WOLVERHAMPTON: (("RL4", 0.86), ("RBK", 0.05), ("RRK", 0.04), ("RNA", 0.03), ("RXK", 0.02)),
}
_OTHER_PRIMARY_PROVIDERS = ("RRK", "RKB", "RLT", "RJC", "RWP", "RXW", "RJE", "RLQ")

# Ordinary-admission (1+ night) rates per person-year by age band, before normalisation to 0.10.
_AGE_BAND_EDGES = np.array([0, 1, 5, 18, 45, 65, 75, 85])  # bands: 0, 1-4, 5-17, 18-44, 45-64, 65-74, 75-84, 85+
_ORDINARY_RATE = np.array([0.12, 0.05, 0.03, 0.045, 0.075, 0.16, 0.27, 0.42])
_DAYCASE_RATE = np.array([0.01, 0.01, 0.015, 0.03, 0.07, 0.12, 0.13, 0.08])
_ZERO_NIGHT_RATE = np.array([0.04, 0.02, 0.012, 0.012, 0.012, 0.015, 0.02, 0.025])
_QUINTILE_ADMISSION = np.array([1.30, 1.15, 1.00, 0.90, 0.80])
ORDINARY_SPELLS_PER_PERSON_YEAR = 0.10
DAYCASE_SHARE = 0.25  # of all spell rows
ZERO_NIGHT_SHARE = 0.085
REGULAR_ATTENDER_SHARE = 0.012  # classifications 3 and 4
DELIVERY_ONLY_SHARE = 0.003  # classification 5

ELECTIVE_METHODS = (("11", 0.70), ("12", 0.25), ("13", 0.05))
EMERGENCY_METHODS = (("21", 0.68), ("22", 0.10), ("23", 0.02), ("24", 0.06), ("25", 0.01), ("28", 0.13))
DESTINATIONS = ("19", "29", "51", "54", "65", "85", "88", "99", "79")
_DEST_ROUTINE = (0.905, 0.015, 0.02, 0.01, 0.01, 0.03, 0.005, 0.005, 0.0)
_DEST_DELAYED_OLD = (0.55, 0.01, 0.05, 0.08, 0.07, 0.20, 0.03, 0.01, 0.0)

# Timely discharge: share discharged on the DRD among adults discharged alive with a DRD.
DRD_ON_DATE_TARGET = 0.87
DRD_IMPROVEMENT = 0.04
DRD_IMPROVEMENT_FROM = "2025-01-01"
_DRD_WINTER = -0.030  # December-February; other months +0.010, so winter is ~4 points lower
_DRD_OTHER_MONTHS = 0.010
_DRD_QUINTILE = np.array([-0.028, -0.014, 0.0, 0.012, 0.024])
MISSING_DRD_SHARE = 0.02

# Community contacts: contacts per person-year by age band (0-4, 5-17, 18-44, 45-64, 65-74, 75-84, 85+) and team.
TEAM_TYPES = (
    # code, description, mean contacts per referral, mean days between contacts, face-to-face share, mean minutes
    ("A01", "District nursing", 18.0, 4.0, 0.88, 25.0),
    ("A03", "Physiotherapy", 5.0, 10.0, 0.60, 40.0),
    ("A04", "Occupational therapy", 4.0, 10.0, 0.65, 45.0),
    ("A05", "Speech and language therapy", 6.0, 14.0, 0.60, 40.0),
    ("A06", "Dietetics", 3.0, 30.0, 0.40, 30.0),
    ("A07", "Continence service", 3.0, 35.0, 0.45, 30.0),
    ("A08", "Community matron / long-term conditions", 8.0, 14.0, 0.55, 35.0),
    ("A09", "Intermediate care and rehabilitation", 10.0, 2.0, 0.90, 40.0),
    ("A10", "Podiatry", 4.0, 45.0, 0.92, 25.0),
    ("A11", "Health visiting", 4.0, 60.0, 0.70, 45.0),
    ("A12", "School nursing", 2.0, 60.0, 0.50, 30.0),
)
_CONTACT_BAND_EDGES = np.array([0, 5, 18, 45, 65, 75, 85])
_CONTACT_RATES = np.array(
    [
        # A01  A03   A04   A05   A06   A07   A08   A09   A10   A11   A12
        [0.00, 0.05, 0.00, 0.25, 0.10, 0.00, 0.00, 0.00, 0.00, 1.60, 0.00],  # 0-4
        [0.00, 0.08, 0.00, 0.20, 0.05, 0.00, 0.00, 0.00, 0.02, 0.00, 0.45],  # 5-17
        [0.08, 0.25, 0.02, 0.00, 0.06, 0.02, 0.02, 0.01, 0.04, 0.00, 0.00],  # 18-44
        [0.25, 0.30, 0.04, 0.00, 0.06, 0.05, 0.05, 0.03, 0.12, 0.00, 0.00],  # 45-64
        [1.10, 0.45, 0.12, 0.03, 0.05, 0.10, 0.20, 0.10, 0.35, 0.00, 0.00],  # 65-74
        [3.40, 0.60, 0.35, 0.05, 0.05, 0.25, 0.55, 0.35, 0.80, 0.00, 0.00],  # 75-84
        [8.50, 0.50, 0.80, 0.05, 0.05, 0.40, 1.20, 0.80, 1.20, 0.00, 0.00],  # 85+
    ]
)
_QUINTILE_CONTACTS = np.array([1.35, 1.15, 1.00, 0.88, 0.75])
CONTACTS_PER_PERSON_YEAR = 1.8
RESUBMISSION_SHARE = 0.02
ATTENDANCE_CODES = np.array([5, 6, 7, 2, 3, 4])
_ATTENDANCE_BASE = np.array([0.85, 0.03, 0.01, 0.04, 0.05, 0.02])
_DNA_BY_QUINTILE = np.array([0.07, 0.06, 0.05, 0.04, 0.03])
MEDIA = ("01", "02", "04", "05", "98")
_NON_F2F_MEDIA = (0.0, 0.75, 0.18, 0.04, 0.03)

# Breast screening: coverage targets at 31 March 2025 (women 53-70, not ceased, screened in 36 months).
SCREENING_CALIBRATION_DATE = "2025-03-31"
SCREENING_TARGET = {geo.DUDLEY: 0.711, geo.WALSALL: 0.666, geo.SANDWELL: 0.640, geo.WOLVERHAMPTON: 0.655}
SCREENING_TARGET_OTHER = 0.718
_SCREEN_QUINTILE_LOGIT = np.array([-0.42, -0.20, 0.0, 0.15, 0.30])
_SCREEN_PERSON_SD = 1.6
_SCREEN_ROUNDS = 8
CEASED_SHARE = 0.02  # of women ever; about 1% are ceased at a given snapshot


@dataclass(frozen=True)
class _Period:
    start_month: np.datetime64  # datetime64[M]
    months: int

    @property
    def start_day(self) -> int:
        return int(self.start_month.astype("datetime64[D]").astype(np.int64))

    @property
    def end_day(self) -> int:  # last day, inclusive
        return int((self.start_month + self.months).astype("datetime64[D]").astype(np.int64)) - 1

    @property
    def first_month_index(self) -> int:
        return int(self.start_month.astype(np.int64))

    @property
    def years(self) -> list[int]:
        y0 = _ymd(np.array([self.start_day]))[0][0]
        y1 = _ymd(np.array([self.end_day]))[0][0]
        return list(range(int(y0), int(y1) + 1))

    def label(self, month_index: int) -> str:
        return str(np.datetime64(int(month_index), "M"))


# ---------------------------------------------------------------------------------------------
# small vectorised helpers


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[stream]]))


def _day_table(days: np.ndarray) -> tuple[np.ndarray, int] | None:
    """For a large array spanning few distinct days: (offsets into a per-day table, first day)."""
    if days.size < 50_000:
        return None
    lo, hi = int(days.min()), int(days.max())
    if hi - lo > min(days.size // 2, 2_000_000):
        return None
    return days - lo, lo


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of days since 1970-01-01 (proleptic Gregorian calendar)."""
    d = np.asarray(days, dtype=np.int64)
    table = _day_table(d)
    if table is not None:
        off, lo = table
        y, m, dd = _ymd_arith(np.arange(lo, lo + int(off.max()) + 1, dtype=np.int64))
        return y[off], m[off], dd[off]
    return _ymd_arith(d)


def _ymd_arith(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _age_at(dob: np.ndarray, day: np.ndarray) -> np.ndarray:
    y1, m1, d1 = _ymd(dob)
    y2, m2, d2 = _ymd(day)
    return (y2 - y1 - ((m2 * 100 + d2) < (m1 * 100 + d1))).astype(np.int64)


def _month_index(days: np.ndarray) -> np.ndarray:
    """Months since January 1970."""
    y, m, _ = _ymd(days)
    return (y - 1970) * 12 + m - 1


def _day(iso: str) -> int:
    return int(np.datetime64(iso, "D").astype(np.int64))


def _band(ages: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, ages, side="right") - 1


def _categorical(
    rng: np.random.Generator, probs, group: np.ndarray | None = None, n: int | None = None
) -> np.ndarray:
    """Draw category indices; ``probs`` is (K,) or (G, K) with one distribution per group."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    p = p / p.sum(axis=1, keepdims=True)
    g_count, k = p.shape
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(g_count)[:, None]).ravel()
    if group is None:
        group = np.zeros(int(n or 0), dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    u = rng.random(group.size)
    idx = np.searchsorted(flat, group + u, side="right") - group * k
    return np.minimum(idx, k - 1)


def _round_rows(x: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of each row of ``x`` to integer ``totals`` (deterministic)."""
    x = np.asarray(x, dtype=np.float64)
    scaled = x * (totals / np.maximum(x.sum(axis=1), 1e-300))[:, None]
    base = np.floor(scaled)
    remainder = (totals - base.sum(axis=1)).astype(np.int64)
    frac = scaled - base
    order = np.argsort(-frac, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(x.shape[1])[None, :].repeat(x.shape[0], axis=0), axis=1)
    return (base + (ranks < remainder[:, None])).astype(np.int64)


def _systematic_round_rows(x: np.ndarray, totals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Round each row of ``x`` to integers summing to ``totals`` by systematic rounding.

    Each cell gets the floor or the ceiling of its expected value; the extra units are spread
    evenly along the row from ``offsets`` (one uniform [0, 1) value per row, drawn from the seed),
    so small expected values are neither all rounded away nor piled onto the largest cells.
    """
    x = np.asarray(x, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.int64)
    scaled = x * (totals / np.maximum(x.sum(axis=1), 1e-300))[:, None]
    cum = np.cumsum(scaled, axis=1)
    cum[:, -1] = totals
    k = np.floor(cum + np.asarray(offsets, dtype=np.float64)[:, None]).astype(np.int64)
    return np.diff(np.concatenate([np.zeros((x.shape[0], 1), dtype=np.int64), k], axis=1), axis=1)


def _largest_remainder(x: np.ndarray, total: int) -> np.ndarray:
    return _round_rows(x[None, :], np.array([total]))[0]


_MASK40 = np.uint64((1 << 40) - 1)


def _mix40(values: np.ndarray, key: int) -> np.ndarray:
    """A bijection on 40-bit integers keyed by ``key``: unique inputs give unique outputs."""
    k = np.uint64(key) & _MASK40
    x = (np.asarray(values, dtype=np.uint64) + k) & _MASK40
    with np.errstate(over="ignore"):
        x = (x * np.uint64(0x9E3779B97F4A7C15 & ((1 << 40) - 1) | 1)) & _MASK40
        x ^= x >> np.uint64(19)
        x = (x * np.uint64(0xD6E8FEB86659FD93 & ((1 << 40) - 1) | 1)) & _MASK40
        x ^= x >> np.uint64(17)
        x = (x * np.uint64(0xA0761D6478BD642F & ((1 << 40) - 1) | 1)) & _MASK40
        x ^= x >> np.uint64(21)
    return x


_HEX_DIGITS = "0123456789ABCDEF"
# Two hex digits per byte value, laid out so a little-endian uint16 view reads high digit first.
_HEX_PAIRS = np.array(
    [ord(_HEX_DIGITS[b >> 4]) | (ord(_HEX_DIGITS[b & 15]) << 8) for b in range(256)], dtype="<u2"
)


def _hex_ids(prefix: str, index: np.ndarray, key: int) -> pl.Series:
    """Pseudonymous identifiers ``prefix`` + 10 upper-case hex digits, unique per index."""
    x = _mix40(index, key)
    p = prefix.encode("ascii")
    width = len(p) + 10
    buf = np.empty((x.size, width), dtype=np.uint8)
    buf[:, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    pairs = np.empty((x.size, 5), dtype="<u2")
    for k in range(5):  # five bytes of the 40-bit value, most significant first
        pairs[:, 4 - k] = _HEX_PAIRS[(x >> np.uint64(8 * k)).astype(np.uint8)]
    buf[:, len(p) :] = pairs.view(np.uint8)
    return pl.Series(buf.view(f"S{width}").ravel()).cast(pl.String)


def _dates(days: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    s = pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date)
    if null is not None and null.any():
        s = pl.select(pl.when(pl.Series(null)).then(None).otherwise(s)).to_series()
    return s


def _codes(table: tuple[str, ...] | list[str], idx: np.ndarray) -> pl.Series:
    """Map integer indices to strings; a negative index gives null."""
    lookup = pl.Series([*table, None], dtype=pl.String)
    idx = np.asarray(idx, dtype=np.int64)
    return lookup.gather(np.where(idx < 0, len(table), idx))


# ---------------------------------------------------------------------------------------------
# geography, population and the person register


def _geography(places: list[str]) -> pl.DataFrame:
    lsoas = geo.assign_neighbourhoods(geo.read_lsoas(places))
    return lsoas.with_columns(
        pl.col("place_code").replace_strict({p: i for i, p in enumerate(places)}, return_dtype=pl.Int64).alias("_place"),
    )


def _age_shape() -> tuple[np.ndarray, np.ndarray]:
    """Within-group single-year weights (ages 0-90, 90 = 90+) and the age group of each age."""
    ages = np.arange(91, dtype=np.float64)
    w = np.ones(91)
    adult = (ages >= 16) & (ages < 60)
    w[adult] = 1.0 + 0.12 * np.exp(-(((ages[adult] - 31) / 7) ** 2)) + 0.12 * np.exp(-(((ages[adult] - 53) / 6) ** 2))
    w[(ages >= 18) & (ages <= 22)] *= 0.93
    old_ages = np.arange(60, 106, dtype=np.float64)
    survival = np.exp(-0.012 / 0.1 * (np.exp(0.1 * (old_ages - 60)) - 1))
    w[60:90] = survival[:30]
    w[90] = survival[30:].sum()
    group = np.where(ages < 16, 0, np.where(ages < 60, 1, 2))
    return w, group


def _female_share() -> np.ndarray:
    ages = np.arange(91, dtype=np.float64)
    return np.interp(ages, [0, 20, 45, 65, 80, 89, 90], [0.488, 0.488, 0.50, 0.52, 0.56, 0.64, 0.70])


def _population(lsoas: pl.DataFrame, places: list[str], years: list[int], people: float, seed: int) -> dict[int, np.ndarray]:
    """Counts per year as arrays (n_lsoa, 2 sexes [F, M], 91 ages)."""
    rng = _rng(seed, "population")
    n = lsoas.height
    w, group = _age_shape()
    fshare = _female_share()
    groups_2015 = np.stack(
        [lsoas[c].to_numpy().astype(np.float64) for c in ("pop_0_15_2015", "pop_16_59_2015", "pop_60_plus_2015")],
        axis=1,
    )
    # Shape within each group, normalised; a fixed per-LSOA texture keeps LSOAs from being identical.
    norm = np.array([w[group == g].sum() for g in range(3)])
    texture = np.exp(rng.normal(0.0, 0.06, size=(n, 91)))
    place_idx = lsoas["_place"].to_numpy()
    pop_total = lsoas["pop_total_2015"].to_numpy().astype(np.float64)
    place_2015 = np.bincount(place_idx, weights=pop_total, minlength=len(places))
    target_2024 = np.array([geo.target_population_2024(p, int(place_2015[i])) for i, p in enumerate(places)], dtype=np.float64)
    offsets = rng.random(n)  # the same per LSOA every year, so counts change smoothly between years
    out: dict[int, np.ndarray] = {}
    for year in years:
        t = year - 2015
        ageing = np.array([0.997**t, 1.0, 1.010**t])
        expected_age = groups_2015[:, group] * ageing[group] * (w / norm[group])[None, :] * texture
        place_total = np.round(target_2024 * people * 1.004 ** (year - 2024)).astype(np.int64)
        lsoa_total = np.zeros(n, dtype=np.int64)
        for i in range(len(places)):
            mask = place_idx == i
            lsoa_total[mask] = _largest_remainder(pop_total[mask], int(place_total[i]))
        cells = np.concatenate([expected_age * fshare[None, :], expected_age * (1 - fshare)[None, :]], axis=1)
        counts = _systematic_round_rows(cells, lsoa_total, offsets)
        out[year] = counts.reshape(n, 2, 91)
    return out


def _population_frame(lsoas: pl.DataFrame, year: int, counts: np.ndarray) -> pl.DataFrame:
    n = lsoas.height
    # Rows ordered by LSOA, age, sex (F before M).
    arr = counts.transpose(0, 2, 1).reshape(-1)
    lsoa_idx = np.repeat(np.arange(n), 182)
    age = np.tile(np.repeat(np.arange(91), 2), n)
    sex = np.tile(np.array([0, 1]), n * 91)
    return pl.DataFrame(
        {
            "year": pl.Series(np.full(arr.size, year, dtype=np.int64)),
            "lsoa_code": lsoas["lsoa_code"].gather(lsoa_idx),
            "age": pl.Series(age.astype(np.int64)),
            "sex": _codes(("F", "M"), sex),
            "population": pl.Series(arr.astype(np.int64)),
        }
    )


@dataclass
class _Register:
    lsoa: np.ndarray
    place: np.ndarray
    quintile: np.ndarray  # 0-4 (0 = most deprived)
    sex: np.ndarray  # 0 = F, 1 = M
    dob: np.ndarray  # days since epoch
    ethnicity: np.ndarray  # index into ETHNIC_CODES
    gp: np.ndarray  # index into practice codes
    person_id: pl.Series
    practices: list[str]

    @property
    def size(self) -> int:
        return self.lsoa.size


def _practices(lsoas: pl.DataFrame, places: list[str], rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Practice codes, listed neighbourhood by neighbourhood, and their list-size weights."""
    nb = lsoas.select("_place", "neighbourhood").unique(maintain_order=True)
    codes: list[str] = []
    others = 0
    for i, place_code in enumerate(places):
        names = nb.filter(pl.col("_place") == i)["neighbourhood"].to_list()
        if place_code in _GP_PREFIX:
            prefix = _GP_PREFIX[place_code]
        else:
            prefix = "ABCDEFGHJKLNPY"[(others // 100) % 14] + f"{others % 100:02d}"
            others += 1
        count = len(names) * _PRACTICES_PER_NEIGHBOURHOOD
        numbers = np.sort(rng.choice(np.arange(1, 700), size=count, replace=False))
        codes.extend(f"{prefix}{k:03d}" for k in numbers.tolist())
    weights = rng.gamma(2.0, 1.0, size=len(codes))
    return codes, weights


def _register(lsoas: pl.DataFrame, places: list[str], counts: np.ndarray, ref_day: int, end_day: int, seed: int) -> _Register:
    rng = _rng(seed, "register")
    n_lsoa = lsoas.height
    flat = counts.reshape(-1)  # (lsoa, sex, age)
    cell = np.repeat(np.arange(flat.size), flat)
    lsoa = cell // 182
    sex = (cell // 91) % 2
    age = cell % 91
    # Open-ended 90+ group: spread over 90-105.
    old = age == 90
    age = age + np.where(old, np.minimum(np.floor(rng.exponential(3.5, size=age.size)), 15), 0).astype(np.int64)
    dob = ref_day - np.floor((age + rng.random(age.size)) * 365.2425).astype(np.int64)
    # Births between the reference date and the end of the period, at the age-0 rate of each LSOA.
    years_after = max(0.0, (end_day - ref_day) / 365.2425)
    births = counts[:, :, 0].sum(axis=1) * years_after
    n_births = _largest_remainder(births, int(round(births.sum()))) if births.sum() > 0 else np.zeros(n_lsoa, np.int64)
    b_lsoa = np.repeat(np.arange(n_lsoa), n_births)
    b_sex = (rng.random(b_lsoa.size) > 0.488).astype(np.int64)
    b_dob = ref_day + 1 + np.floor(rng.random(b_lsoa.size) * max(end_day - ref_day, 1)).astype(np.int64)
    lsoa = np.concatenate([lsoa, b_lsoa])
    sex = np.concatenate([sex, b_sex])
    dob = np.concatenate([dob, b_dob])
    n = lsoa.size

    place = lsoas["_place"].to_numpy()[lsoa]
    quintile = lsoas["imd_quintile"].to_numpy()[lsoa] - 1
    age_ref = _age_at(dob, np.full(n, ref_day))
    age_band = np.searchsorted(np.array([0, 18, 45, 65]), np.maximum(age_ref, 0), side="right") - 1

    # Ethnicity: place mix, more non-White in deprived areas and at younger ages.
    q_mult = np.array([1.6, 1.2, 0.9, 0.7, 0.5])
    a_mult = np.array([1.5, 1.2, 0.8, 0.45])
    n_places = len(places)
    mix = np.array([_ETH_MIX.get(p, _ETH_MIX_OTHER) for p in places])
    # Normalise multipliers within place so the place mix holds on average.
    m = q_mult[quintile] * a_mult[age_band]
    mean_m = np.bincount(place, weights=m, minlength=n_places) / np.maximum(np.bincount(place, minlength=n_places), 1)
    grp = (place * 5 + quintile) * 4 + age_band
    probs = np.zeros((n_places * 20, 6))
    for gi in range(n_places * 20):
        pl_i, rest = divmod(gi, 20)
        qi, ai = divmod(rest, 4)
        scale = q_mult[qi] * a_mult[ai] / max(mean_m[pl_i], 1e-9)
        nonwhite = mix[pl_i, 1:5] * scale
        z = mix[pl_i, 5]
        white = max(1.0 - nonwhite.sum() - z, 0.05)
        probs[gi] = [white, *nonwhite, z]
    broad = _categorical(rng, probs, grp)
    within = np.zeros((6, 4))
    code_of = np.zeros((6, 4), dtype=np.int64)
    for gi, options in enumerate(_ETH_GROUP_CODES):
        for k, (code, share) in enumerate(options):
            within[gi, k] = share
            code_of[gi, k] = ETHNIC_CODES.index(code)
    k = _categorical(rng, within, broad)
    ethnicity = code_of[broad, k]

    # GP practice: mostly in the person's own neighbourhood, weighted by list size.
    practices, weights = _practices(lsoas, places, rng)
    nb_names = lsoas.select("_place", "neighbourhood").unique(maintain_order=True)
    nb_key = {(p, name): j for j, (p, name) in enumerate(zip(nb_names["_place"].to_list(), nb_names["neighbourhood"].to_list(), strict=True))}
    lsoa_nb = np.array([nb_key[(p, name)] for p, name in zip(lsoas["_place"].to_list(), lsoas["neighbourhood"].to_list(), strict=True)])
    person_nb = lsoa_nb[lsoa]
    # practices are listed neighbourhood by neighbourhood, _PRACTICES_PER_NEIGHBOURHOOD each
    w = weights.reshape(-1, _PRACTICES_PER_NEIGHBOURHOOD)
    k = _categorical(rng, w, person_nb)
    gp = person_nb * _PRACTICES_PER_NEIGHBOURHOOD + k
    # 2% registered elsewhere in the place.
    elsewhere = rng.random(n) < 0.02
    nb_place = nb_names["_place"].to_numpy()
    first_nb = np.array([np.flatnonzero(nb_place == i)[0] for i in range(n_places)])
    count_nb = np.bincount(nb_place, minlength=n_places)
    alt_nb = first_nb[place] + np.floor(rng.random(n) * count_nb[place]).astype(np.int64)
    alt = alt_nb * _PRACTICES_PER_NEIGHBOURHOOD + np.floor(rng.random(n) * _PRACTICES_PER_NEIGHBOURHOOD).astype(np.int64)
    gp = np.where(elsewhere, alt, gp)

    person_id = _hex_ids("P", np.arange(n, dtype=np.uint64), _id_key(seed, 0))
    return _Register(
        lsoa=lsoa,
        place=place,
        quintile=quintile,
        sex=sex,
        dob=dob,
        ethnicity=ethnicity,
        gp=gp,
        person_id=person_id,
        practices=practices,
    )


def _id_key(seed: int, which: int) -> int:
    return int(np.random.default_rng(np.random.SeedSequence([seed, _STREAM["ids"], which])).integers(0, 1 << 40))


def _exposure_years(dob: np.ndarray, start_day: int, end_day: int) -> np.ndarray:
    return np.maximum(end_day - np.maximum(start_day, dob) + 1, 0) / 365.2425


def _draw_days(
    rng: np.random.Generator, weights: np.ndarray, start_day: int, lower: np.ndarray
) -> np.ndarray:
    """Draw one day per row from day ``weights`` (index 0 = ``start_day``), never before ``lower``."""
    cdf = np.cumsum(weights)
    cdf = cdf / cdf[-1]
    lo = np.clip(lower - start_day, 0, weights.size - 1)
    f_lo = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
    u = f_lo + rng.random(lower.size) * (1.0 - f_lo)
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), weights.size - 1)
    return start_day + np.maximum(idx, lo)


def _weekday(days: np.ndarray) -> np.ndarray:
    """0 = Monday ... 6 = Sunday (1970-01-01 was a Thursday)."""
    d = np.asarray(days, dtype=np.int64)
    table = _day_table(d)
    if table is not None:
        off, lo = table
        return ((np.arange(lo, lo + int(off.max()) + 1, dtype=np.int64) + 3) % 7)[off]
    return (d + 3) % 7


# ---------------------------------------------------------------------------------------------
# inpatient spells


def _spells(reg: _Register, lsoas: pl.DataFrame, places: list[str], period: _Period, seed: int, defect_rate: float) -> tuple[pl.DataFrame, np.ndarray, dict]:
    rng = _rng(seed, "spells")
    start, end = period.start_day, period.end_day
    exposure = _exposure_years(reg.dob, start, end)
    mid_day = (start + end) // 2
    band = _band(np.maximum(_age_at(reg.dob, np.full(reg.size, mid_day)), 0), _AGE_BAND_EDGES)
    qmult = _QUINTILE_ADMISSION[reg.quintile]
    person_years = exposure.sum()

    def counts(rate_by_band: np.ndarray, total: float, eligible: np.ndarray | None = None) -> np.ndarray:
        lam = rate_by_band[band] * qmult * exposure
        if eligible is not None:
            lam = lam * eligible
        lam = lam * (total / max(lam.sum(), 1e-12))
        return rng.poisson(lam)

    n_ordinary = ORDINARY_SPELLS_PER_PERSON_YEAR * person_years
    ordinary_share = 1.0 - DAYCASE_SHARE - ZERO_NIGHT_SHARE - REGULAR_ATTENDER_SHARE - DELIVERY_ONLY_SHARE
    all_rows = n_ordinary / ordinary_share
    women_18_44 = ((reg.sex == 0) & (band == 3)).astype(np.float64)
    kinds = [
        ("ordinary", counts(_ORDINARY_RATE, n_ordinary)),
        ("zero_night", counts(_ZERO_NIGHT_RATE, all_rows * ZERO_NIGHT_SHARE)),
        ("daycase", counts(_DAYCASE_RATE, all_rows * DAYCASE_SHARE)),
        ("regular", counts(_DAYCASE_RATE, all_rows * REGULAR_ATTENDER_SHARE)),
        ("delivery", counts(np.ones(8), all_rows * DELIVERY_ONLY_SHARE, women_18_44)),
    ]
    person = np.concatenate([np.repeat(np.arange(reg.size), c) for _, c in kinds])
    kind = np.concatenate([np.full(c.sum(), k, dtype=np.int64) for k, (_, c) in enumerate(kinds)])
    n = person.size

    # Discharge day: seasonal (winter peak) and fewer at weekends; day cases on weekdays.
    days = np.arange(start, end + 1)
    _, month, _ = _ymd(days)
    season = 1.0 + 0.08 * np.cos(2 * np.pi * (month - 1) / 12)
    wd = _weekday(days)
    w_ordinary = season * np.where(wd == 5, 0.6, np.where(wd == 6, 0.45, 1.0))
    w_planned = np.where(wd >= 5, 0.05, 1.0)
    dob = reg.dob[person]
    discharge = np.empty(n, dtype=np.int64)
    planned = (kind == 2) | (kind == 3)
    discharge[~planned] = _draw_days(rng, w_ordinary, start, dob[~planned] + 1)
    discharge[planned] = _draw_days(rng, w_planned, start, dob[planned] + 1)
    age = np.maximum(_age_at(dob, discharge), 0)
    q = reg.quintile[person]

    # Admission method.
    old = age >= 65
    p_emergency = np.where(kind == 0, np.where(old, 0.80, np.where(age >= 45, 0.65, 0.55)), np.where(kind == 1, 0.92, 0.0))
    emergency = rng.random(n) < p_emergency
    e_codes, e_p = zip(*EMERGENCY_METHODS, strict=True)
    l_codes, l_p = zip(*ELECTIVE_METHODS, strict=True)
    method_codes = (*l_codes, *e_codes, "31")
    method = np.where(
        emergency,
        len(l_codes) + _categorical(rng, e_p, n=n),
        _categorical(rng, l_p, n=n),
    )
    method = np.where(kind == 3, l_codes.index("13"), method)
    method = np.where(kind == 4, len(method_codes) - 1, method)

    classification = np.select([kind == 2, kind == 3, kind == 4], [2, np.where(rng.random(n) < 0.85, 3, 4), 5], 1)

    # Died (ordinary admissions), age-skewed: ~3% of all rows.
    p_die = np.interp(age, [0, 44, 45, 64, 65, 74, 75, 84, 85, 110], [0.004, 0.004, 0.02, 0.02, 0.06, 0.06, 0.10, 0.10, 0.15, 0.15])
    died = (kind == 0) & (rng.random(n) < p_die) | (kind == 1) & (rng.random(n) < 0.004)
    discharge_method = np.where(died, 4, _categorical(rng, [0.988, 0.009, 0.001, 0.002], n=n).choose([1, 2, 3, 9]))
    discharge_method = np.where(kind >= 2, 1, discharge_method)

    # Clinical length of stay (to the discharge ready date) for 1+ night ordinary admissions.
    median = np.where(emergency, 3.6, 2.4) * np.where(age >= 75, 1.45, np.where(age >= 65, 1.2, np.where(age < 18, 0.55, 1.0)))
    clinical = np.maximum(1, np.round(median * np.exp(rng.normal(0, 0.95, n)))).astype(np.int64)
    clinical = np.minimum(clinical, 365)
    clinical = np.where(kind == 0, clinical, np.where(kind == 3, np.where(classification == 4, 1, 0), np.where(kind == 4, (rng.random(n) < 0.4).astype(np.int64), 0)))

    # Delays from DRD to discharge: adults discharged alive (eligible), children rarely delayed.
    month_idx = _month_index(discharge)
    _, dm, _ = _ymd(discharge)
    winter = np.isin(dm, [12, 1, 2])
    eligible = (kind == 0) & ~died & (age >= 18)
    adj = np.where(winter, _DRD_WINTER, _DRD_OTHER_MONTHS) + _DRD_QUINTILE[q] + np.where(age >= 80, -0.03, np.where(age >= 65, 0.0, 0.025))
    if eligible.any():
        adj = adj - adj[eligible].mean()
    post = discharge >= _day(DRD_IMPROVEMENT_FROM)
    frac_post = post[eligible].mean() if eligible.any() else 0.0
    base = DRD_ON_DATE_TARGET - DRD_IMPROVEMENT * frac_post + DRD_IMPROVEMENT * post
    p_on = np.clip(base + adj, 0.5, 0.995)
    p_on = np.where(eligible, p_on, np.where((kind == 0) & ~died, 0.96, 1.0))
    delayed = (kind == 0) & (rng.random(n) >= p_on)
    d_median = 2.2 * np.where(age >= 80, 1.3, np.where(age >= 65, 1.1, 0.8))
    delay = np.where(delayed, 1 + np.floor(d_median * np.exp(rng.normal(0, 1.35, n))), 0).astype(np.int64)
    delay = np.where(age < 18, np.minimum(delay, 3), np.minimum(delay, 180))

    admission = discharge - clinical - delay
    admission = np.maximum(admission, dob)
    drd = np.maximum(discharge - delay, admission)
    age_at_admission = np.maximum(_age_at(dob, admission), 0)

    # DRD recording: ~2% missing among 1+ night ordinary spells; deaths mostly without DRD. The DRD
    # is collected for stays of one night or more, so zero-night stays, day cases and others have none.
    drd_null = np.where(
        kind == 0, np.where(died, rng.random(n) < 0.8, rng.random(n) < MISSING_DRD_SHARE), True
    )

    # Destination.
    dest_group = np.where((delay >= 4) & (age >= 75), 1, 0)
    destination = _categorical(rng, np.array([_DEST_ROUTINE, _DEST_DELAYED_OLD]), dest_group)
    destination = np.where(died, DESTINATIONS.index("79"), destination)
    destination = np.where(kind >= 2, 0, destination)
    destination = np.where(rng.random(n) < 0.004, -1, destination)

    # Provider by the patient's place.
    prov_codes: list[str] = []
    prov_probs = []
    for i, p in enumerate(places):
        mix = _PROVIDERS.get(p)
        if mix is None:
            primary = _OTHER_PRIMARY_PROVIDERS[i % len(_OTHER_PRIMARY_PROVIDERS)]
            secondary = "RKB" if primary == "RRK" else "RRK"
            mix = ((primary, 0.88), (secondary, 0.12))
        prov_probs.append(mix)
        for code, _ in mix:
            if code not in prov_codes:
                prov_codes.append(code)
    pmat = np.zeros((len(places), len(prov_codes)))
    for i, mix in enumerate(prov_probs):
        for code, share in mix:
            pmat[i, prov_codes.index(code)] = share
    provider = _categorical(rng, pmat, reg.place[person])

    # Order rows and assign identifiers.
    order = np.lexsort((kind, person, admission, discharge))
    cols = {
        "person": person,
        "kind": kind,
        "admission": admission,
        "discharge": discharge,
        "method": method,
        "classification": classification,
        "discharge_method": discharge_method,
        "destination": destination,
        "drd": drd,
        "drd_null": drd_null,
        "age": age_at_admission,
        "provider": provider,
        "month": month_idx,
    }
    cols = {k: v[order] for k, v in cols.items()}
    cols["rank"] = np.arange(n, dtype=np.int64)
    cols["gp_null"] = rng.random(n) < 0.003
    cols["eth_null"] = rng.random(n) < 0.005
    cols["lsoa_override"] = np.full(n, -1, dtype=np.int64)
    cols["submission"] = _submission_id(cols["month"])

    defects = {"discharge_before_admission": 0, "future_date": 0, "unknown_lsoa": 0, "duplicate_resubmission": 0}
    if defect_rate > 0 and n:
        drng = _rng(seed, "defects_spells")
        k = int(round(defect_rate * n / 4))
        pick = drng.permutation(n)[: 4 * k]
        before, future, unknown, dup = pick[:k], pick[k : 2 * k], pick[2 * k : 3 * k], pick[3 * k :]
        cols["admission"][before] = cols["discharge"][before] + drng.integers(1, 21, size=before.size)
        cols["discharge"][future] = cols["discharge"][future] + _FUTURE_SHIFT_DAYS
        cols["lsoa_override"][unknown] = drng.integers(0, 10_000, size=unknown.size)
        dup = np.sort(dup)
        cols = {c: np.concatenate([v, v[dup]]) for c, v in cols.items()}
        cols["submission"][n:] += 1
        defects = {
            "discharge_before_admission": int(before.size),
            "future_date": int(future.size),
            "unknown_lsoa": int(unknown.size),
            "duplicate_resubmission": int(dup.size),
        }
        order = np.lexsort((cols["submission"], cols["rank"], cols["month"]))
        cols = {c: v[order] for c, v in cols.items()}

    person = cols["person"]
    frame = pl.DataFrame(
        {
            "spell_id": _hex_ids("S", cols["rank"].astype(np.uint64), _id_key(seed, 1)),
            "person_id": reg.person_id.gather(person),
            "provider_code": _codes(prov_codes, cols["provider"]),
            "admission_date": _dates(cols["admission"]),
            "admission_method": _codes(method_codes, cols["method"]),
            "patient_classification": pl.Series(cols["classification"].astype(np.int64)),
            "discharge_date": _dates(cols["discharge"]),
            "discharge_method": pl.Series(cols["discharge_method"].astype(np.int64)),
            "discharge_destination": _codes(DESTINATIONS, cols["destination"]),
            "discharge_ready_date": _dates(cols["drd"], cols["drd_null"]),
            "age": pl.Series(cols["age"].astype(np.int64)),
            "sex": _codes(("F", "M"), reg.sex[person]),
            "ethnicity": _codes(ETHNIC_CODES, np.where(cols["eth_null"], -1, reg.ethnicity[person])),
            "lsoa_code": _lsoa_codes(lsoas, reg.lsoa[person], cols["lsoa_override"]),
            "gp_practice_code": _codes(reg.practices, np.where(cols["gp_null"], -1, reg.gp[person])),
            "submission_id": pl.Series(cols["submission"].astype(np.int64)),
        }
    )
    return frame, cols["month"], defects


def _lsoa_codes(lsoas: pl.DataFrame, lsoa_idx: np.ndarray, override: np.ndarray) -> pl.Series:
    """LSOA codes of rows; where ``override`` >= 0 a well-formed code not in the lookup (E0109xxxx)."""
    codes = lsoas["lsoa_code"].gather(lsoa_idx)
    bad = np.flatnonzero(override >= 0)
    if bad.size:
        fake = pl.select(
            pl.lit("E0109") + pl.Series(override[bad].astype(np.int64)).cast(pl.String).str.zfill(4)
        ).to_series()
        codes = codes.scatter(bad, fake)
    return codes.alias("lsoa_code")


def _submission_id(month_index: np.ndarray) -> np.ndarray:
    """Submission id for a month's file: YYYYMM * 100 + 1 (a later resubmission adds 1)."""
    y = month_index // 12 + 1970
    m = month_index % 12 + 1
    return (y * 100 + m) * 100 + 1


# ---------------------------------------------------------------------------------------------
# community contacts


def _contacts(reg: _Register, lsoas: pl.DataFrame, period: _Period, seed: int, defect_rate: float) -> tuple[pl.DataFrame, np.ndarray, dict]:
    rng = _rng(seed, "contacts")
    start, end = period.start_day, period.end_day
    lead = 365
    t0 = start - lead
    exposure = _exposure_years(reg.dob, start, end)
    ext_exposure = _exposure_years(reg.dob, t0, end)
    mid_day = (start + end) // 2
    band = _band(np.maximum(_age_at(reg.dob, np.full(reg.size, mid_day)), 0), _CONTACT_BAND_EDGES)
    qm = _QUINTILE_CONTACTS[reg.quintile]
    mean_contacts = np.array([t[2] for t in TEAM_TYPES])
    gap = np.array([t[3] for t in TEAM_TYPES])
    f2f = np.array([t[4] for t in TEAM_TYPES])
    minutes = np.array([t[5] for t in TEAM_TYPES])

    # Referrals: rate per person-year = contact rate / mean contacts per referral.
    referral_rate = _CONTACT_RATES / mean_contacts[None, :]
    target = CONTACTS_PER_PERSON_YEAR * exposure.sum()
    expected = (_CONTACT_RATES.sum(axis=1)[band] * qm * exposure).sum()
    oversupply = 1.15 * target / max(expected, 1e-12)
    lam = referral_rate.sum(axis=1)[band] * qm * ext_exposure * oversupply
    n_ref = rng.poisson(lam)
    ref_person = np.repeat(np.arange(reg.size), n_ref)
    ref_team = _categorical(rng, referral_rate, band[ref_person])
    ref_start = np.maximum(t0, reg.dob[ref_person]) + np.floor(
        rng.random(ref_person.size) * (end + 1 - np.maximum(t0, reg.dob[ref_person]))
    ).astype(np.int64)
    # Contacts per referral: 1 + gamma-Poisson (overdispersed), capped.
    m = mean_contacts[ref_team]
    extra = rng.poisson(rng.gamma(1.2, (m - 1) / 1.2))
    n_con = np.minimum(1 + extra, 150)
    ref_idx = np.repeat(np.arange(ref_person.size), n_con)
    first = np.cumsum(n_con) - n_con
    step = np.maximum(1, np.round(gap[ref_team[ref_idx]] * rng.gamma(2.0, 0.5, ref_idx.size))).astype(np.int64)
    step[first] = 0
    csum = np.cumsum(step)
    offset = csum - np.repeat(csum[first], n_con)
    day = ref_start[ref_idx] + offset
    del step, csum, offset, first
    # Contacts before the period (from referrals opened earlier) or after it are never written.
    near = (day >= start - 2) & (day <= end)
    ref_idx, day = ref_idx[near], day[near]
    del near
    team = ref_team[ref_idx]
    # Most teams do not work weekends: move to Monday.
    wd = _weekday(day)
    weekday_team = ~np.isin(team, [0, 7])
    day = np.where(weekday_team & (wd == 5), day + 2, np.where(weekday_team & (wd == 6), day + 1, day))
    keep = (day >= start) & (day <= end)
    # Seasonal thinning (fewer in August and December), a gentle upward trend, and calibration.
    _, mon, _ = _ymd(day)
    season = np.select([mon == 12, mon == 8], [0.86, 0.92], 1.0)
    trend = 0.96 + 0.06 * (day - start) / max(end - start, 1)
    w = season * trend
    kept_weight = (w * keep).sum()
    thin = min(1.0, target / max(kept_weight, 1e-12))
    keep &= rng.random(day.size) < w * thin
    ref_idx, day, team = ref_idx[keep], day[keep], team[keep]
    del wd, weekday_team, mon, season, trend, w, keep
    person = ref_person[ref_idx]
    n = person.size
    age = np.maximum(_age_at(reg.dob[person], day), 0)
    q = reg.quintile[person]

    # Attendance status by deprivation quintile and age.
    age3 = np.where(age < 18, 0, np.where(age < 75, 1, 2))
    probs = np.zeros((15, 6))
    for qi in range(5):
        for ai, dna_adj in enumerate((0.0, 0.01, -0.02)):
            p = _ATTENDANCE_BASE.copy()
            p[4] = _DNA_BY_QUINTILE[qi] + dna_adj
            p[0] = 1.0 - p[1:].sum()
            probs[qi * 3 + ai] = p
    status_idx = _categorical(rng, probs, q * 3 + age3)
    status = ATTENDANCE_CODES[status_idx]

    # Consultation medium and duration.
    is_f2f = rng.random(n) < f2f[team]
    medium = np.where(is_f2f, 0, _categorical(rng, _NON_F2F_MEDIA, n=n))
    medium = np.where(rng.random(n) < 0.003, -1, medium)
    med_factor = np.array([1.0, 0.4, 0.7, 0.3, 0.6])[np.maximum(medium, 0)]
    dur = minutes[team] * med_factor * rng.gamma(4.0, 0.25, n)
    dur = np.maximum(5, 5 * np.round(dur / 5)).astype(np.int64)
    dur = np.minimum(dur, 240)
    attended = np.isin(status, [5, 6])
    dur_null = ~attended | (rng.random(n) < 0.02)

    month = _month_index(day)
    # Contact ids follow date order; rows are gathered once, after resubmissions are added.
    # Sort by (day, referral); a stable sort keeps generation order for same-day contacts.
    order = np.argsort(((day - t0) << 32) | ref_idx, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    gp_null = rng.random(n) < 0.003
    eth_null = rng.random(n) < 0.01
    lsoa_override = np.full(n, -1, dtype=np.int64)

    defects = {"future_date": 0, "unknown_lsoa": 0}
    if defect_rate > 0 and n:
        drng = _rng(seed, "defects_contacts")
        k = int(round(defect_rate * n / 2))
        pick = drng.permutation(n)[: 2 * k]
        future, unknown = pick[:k], pick[k:]
        day[future] += _FUTURE_SHIFT_DAYS
        lsoa_override[unknown] = drng.integers(0, 10_000, size=unknown.size)
        defects = {"future_date": int(future.size), "unknown_lsoa": int(unknown.size)}

    # Resubmissions: ~2% of a month's contacts reappear in next month's file, some with a new status.
    last_month = period.first_month_index + period.months - 1
    defect_row = (lsoa_override >= 0) | (day > end)
    resub = np.flatnonzero((rng.random(n) < RESUBMISSION_SHARE) & (month < last_month) & ~defect_row)
    old_status = status[resub]
    change = rng.random(resub.size) < 0.3
    new_status = ATTENDANCE_CODES[_categorical(rng, _ATTENDANCE_BASE, n=resub.size)]
    new_status = np.where(new_status == old_status, np.where(old_status == 5, 2, 5), new_status)
    copy_status = np.where(change, new_status, old_status)
    copy_dur_null = np.where(change, ~np.isin(copy_status, [5, 6]), dur_null[resub])
    src = np.concatenate([np.arange(n, dtype=np.int64), resub])
    status_all = np.concatenate([status, copy_status])
    dur_null_all = np.concatenate([dur_null, copy_dur_null])
    file_month_all = np.concatenate([month, month[resub] + 1])
    final = np.argsort(((file_month_all - period.first_month_index) << 40) | rank[src], kind="stable")
    idx = src[final]
    status_all, dur_null_all, file_month_all = status_all[final], dur_null_all[final], file_month_all[final]
    defects["resubmitted_rows"] = int(resub.size)

    person = person[idx]
    frame = pl.DataFrame(
        {
            "contact_id": _hex_ids("C", rank[idx].astype(np.uint64), _id_key(seed, 2)),
            "person_id": reg.person_id.gather(person),
            "service_request_id": _hex_ids("R", ref_idx[idx].astype(np.uint64), _id_key(seed, 3)),
            "contact_date": _dates(day[idx]),
            "attendance_status": pl.Series(status_all.astype(np.int64)),
            "duration_minutes": pl.Series(dur[idx].astype(np.int64)).set(pl.Series(dur_null_all), None),
            "consultation_medium": _codes(MEDIA, medium[idx]),
            "team_type": _codes([t[0] for t in TEAM_TYPES], team[idx]),
            "age": pl.Series(age[idx].astype(np.int64)),
            "sex": _codes(("F", "M"), reg.sex[person]),
            "ethnicity": _codes(ETHNIC_CODES, np.where(eth_null[idx], -1, reg.ethnicity[person])),
            "lsoa_code": _lsoa_codes(lsoas, reg.lsoa[person], lsoa_override[idx]),
            "gp_practice_code": _codes(reg.practices, np.where(gp_null[idx], -1, reg.gp[person])),
            "submission_id": pl.Series(_submission_id(file_month_all).astype(np.int64)),
        }
    )
    return frame, file_month_all, defects


# ---------------------------------------------------------------------------------------------
# breast screening


def _shift_months(day: int, k: int) -> int:
    """The same day of the month ``k`` months later (clamped to the month's last day)."""
    d = np.datetime64(int(day), "D")
    m = d.astype("datetime64[M]")
    dom = int((d - m.astype("datetime64[D]")).astype(np.int64))
    target = m + k
    last = int(((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)) - 1
    return int((target.astype("datetime64[D]") + min(dom, last)).astype(np.int64))


def _add_years(days: np.ndarray, years: np.ndarray) -> np.ndarray:
    return days + np.round(years * 365.2425).astype(np.int64)


def _screening(reg: _Register, lsoas: pl.DataFrame, places: list[str], period: _Period, seed: int) -> tuple[list[tuple[str, pl.DataFrame]], dict]:
    rng = _rng(seed, "screening")
    ends = (period.start_month + np.arange(1, period.months + 1)).astype("datetime64[D]").astype(np.int64) - 1
    _, mon, _ = _ymd(ends)
    snapshots = ends[np.isin(mon, [3, 6, 9, 12])]
    calib_day = _day(SCREENING_CALIBRATION_DATE)
    lo = min(int(snapshots.min()) if snapshots.size else calib_day, calib_day)
    hi = max(int(snapshots.max()) if snapshots.size else calib_day, calib_day)
    # Women who are 50-70 at some snapshot (or the calibration date).
    age_lo = _age_at(reg.dob, np.full(reg.size, lo))
    age_hi = _age_at(reg.dob, np.full(reg.size, hi))
    women = np.flatnonzero((reg.sex == 0) & (age_hi >= 50) & (age_lo <= 70))
    nw = women.size
    dob = reg.dob[women]
    place = reg.place[women]
    quint = reg.quintile[women]

    # Invitation history: first invitation between 50 and 53, then every ~3 years.
    first_age = 50 + 3 * rng.random(nw)
    rounds = np.arange(_SCREEN_ROUNDS)
    invite = _add_years(dob[:, None], first_age[:, None] + 3 * rounds[None, :]) + np.round(rng.normal(0, 40, (nw, _SCREEN_ROUNDS))).astype(np.int64)
    lag = 14 + np.round(rng.gamma(2.0, 12.0, (nw, _SCREEN_ROUNDS))).astype(np.int64)
    late = rng.random((nw, _SCREEN_ROUNDS)) < 0.08
    lag = lag + np.where(late, 60 + np.floor(rng.random((nw, _SCREEN_ROUNDS)) * 180).astype(np.int64), 0)
    screen_day = invite + lag
    beyond_71 = screen_day > _add_years(dob, np.full(nw, 71.0))[:, None]
    ceased_ever = rng.random(nw) < CEASED_SHARE
    cease_day = np.where(ceased_ever, _add_years(dob, 50 + 21 * rng.random(nw)), _FAR_FUTURE)
    valid_round = ~beyond_71 & (screen_day < cease_day[:, None])

    z = rng.normal(0, _SCREEN_PERSON_SD, nw)
    u = rng.random((nw, _SCREEN_ROUNDS))

    # Calibrate the place intercept so coverage at the calibration date hits the target.
    calib_age = _age_at(dob, np.full(nw, calib_day))
    cohort = (calib_age >= 53) & (calib_age <= 70) & (cease_day > calib_day)
    covered_from = _shift_months(calib_day, -36)  # screened after this day and on or before the date
    in_window = valid_round & (screen_day > covered_from) & (screen_day <= calib_day)

    def coverage(alpha: float, members: np.ndarray) -> float:
        pi = 1 / (1 + np.exp(-(alpha + _SCREEN_QUINTILE_LOGIT[quint[members]] + z[members])))
        att = u[members] < pi[:, None]
        return float((att & in_window[members]).any(axis=1).mean())

    alphas = np.zeros(len(places))
    achieved = {}
    for i, p in enumerate(places):
        members = np.flatnonzero(cohort & (place == i))
        target = SCREENING_TARGET.get(p, SCREENING_TARGET_OTHER)
        if members.size == 0:
            alphas[i] = 1.2
            continue
        a, b = -3.0, 6.0
        for _ in range(40):
            mid = (a + b) / 2
            if coverage(mid, members) < target:
                a = mid
            else:
                b = mid
        alphas[i] = (a + b) / 2
        achieved[p] = coverage(alphas[i], members)
    pi = 1 / (1 + np.exp(-(alphas[place] + _SCREEN_QUINTILE_LOGIT[quint] + z)))
    attended = (u < pi[:, None]) & valid_round
    screens = np.where(attended, screen_day, _FAR_FUTURE)

    frames: list[tuple[str, pl.DataFrame]] = []
    person_all = women
    for snap in snapshots.tolist():
        age = _age_at(dob, np.full(nw, snap))
        sel = np.flatnonzero((age >= 50) & (age <= 70))
        s = screens[sel]
        last = np.where(s <= snap, s, -_FAR_FUTURE).max(axis=1)
        has = last > -_FAR_FUTURE
        person = person_all[sel]
        frame = pl.DataFrame(
            {
                "snapshot_date": _dates(np.full(sel.size, snap)),
                "person_id": reg.person_id.gather(person),
                "age": pl.Series(age[sel].astype(np.int64)),
                "sex": pl.repeat("F", sel.size, dtype=pl.String, eager=True),
                "ethnicity": _codes(ETHNIC_CODES, reg.ethnicity[person]),
                "lsoa_code": lsoas["lsoa_code"].gather(reg.lsoa[person]),
                "gp_practice_code": _codes(reg.practices, reg.gp[person]),
                "ceased": pl.Series(cease_day[sel] <= snap),
                "last_adequate_screen_date": _dates(np.where(has, last, 0), ~has),
            }
        )
        frames.append((str(np.datetime64(snap, "D")), frame))
    return frames, {p: round(v * 100, 2) for p, v in achieved.items()}


# ---------------------------------------------------------------------------------------------
# writing


def _write(df: pl.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        df.write_parquet(tmp, compression="zstd", statistics=True)
    else:
        df.write_csv(tmp, include_header=True, date_format="%Y-%m-%d", datetime_format="%Y-%m-%d %H:%M:%S",
                     null_value="")
    tmp.replace(path)


def _clear_old(folder: Path, source: str) -> None:
    """Remove files an earlier run wrote for this source (only our own file-name patterns)."""
    if not folder.is_dir():
        return
    prefix = _FILE_PREFIX[source]
    for ext in FORMATS.values():
        for f in sorted(folder.glob(f"{prefix}*.{ext}")):
            f.unlink()


def _write_monthly(df: pl.DataFrame, file_month: np.ndarray, folder: Path, prefix: str, fmt: str, period: _Period) -> list[Path]:
    paths: list[Path] = []
    months = period.first_month_index + np.arange(period.months)
    bounds = np.searchsorted(file_month, np.concatenate([months, [months[-1] + 1]]))
    for i, m in enumerate(months.tolist()):
        part = df.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        path = folder / f"{prefix}{period.label(m)}.{fmt}"
        _write(part, path, fmt)
        paths.append(path)
    return paths


def _parse_month(text: str) -> np.datetime64:
    try:
        m = np.datetime64(text, "M")
    except ValueError as exc:
        raise ValueError(f"start_month must look like 'YYYY-MM', got {text!r}") from exc
    if str(m) != text:
        raise ValueError(f"start_month must look like 'YYYY-MM', got {text!r}")
    return m


def generate_demo_data(
    out: Path,
    *,
    scale: float = 1.0,
    seed: int = 20240401,
    fmt: str = "parquet",
    start_month: str = "2023-04",
    months: int = 36,
    defect_rate: float = 0.005,
    progress: Callable[[str], None] | None = None,
    places: list[str] | None = None,
    catalogue_sources: bool = True,
) -> dict:
    """Write realistic demo extracts for every source under ``out`` and return a summary.

    Deterministic: the same arguments give byte-identical files. ``scale`` <= 1 keeps every
    Dudley and Walsall LSOA and scales the number of people; ``scale`` > 1 adds further real
    local authorities (Sandwell and Wolverhampton first). ``fmt`` is "parquet" or "csv".
    ``defect_rate`` is the share of activity rows given a deliberate defect (0 for none).
    ``places``: generate every resident of these local authorities (LAD codes) instead of the
    places ``scale`` picks (the benchmark builds scales too big for memory from parts this way).
    ``catalogue_sources=False`` writes only the foundation's sources.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if not (isinstance(months, int) and months >= 1):
        raise ValueError(f"months must be a positive integer, got {months!r}")
    if not (0 <= defect_rate < 0.25):
        raise ValueError(f"defect_rate must be in [0, 0.25), got {defect_rate!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError("seed must be non-negative")
    period = _Period(_parse_month(start_month), months)
    say = progress or (lambda _msg: None)
    out = Path(out)
    ext = FORMATS[fmt]

    people = min(float(scale), 1.0) if places is None else 1.0
    places = geo.select_places_for_scale(scale) if places is None else list(places)
    say(f"geography: {len(places)} place(s)")
    lsoas = _geography(places)
    geography = lsoas.select(
        "lsoa_code", "lsoa_name", "place_code", "place", "neighbourhood", "imd_rank", "imd_decile", "imd_quintile"
    )
    files: dict[str, list[str]] = {s: [] for s in SOURCES}
    rows: dict[str, int] = {}
    for s in SOURCES:
        _clear_old(out / s, s)
        (out / s).mkdir(parents=True, exist_ok=True)
    _write(geography, out / "geography" / f"geography.{ext}", fmt)
    files["geography"].append(f"geography/geography.{ext}")
    rows["geography"] = geography.height

    years = period.years
    mid_month = period.first_month_index + (period.months - 1) // 2
    ref_year = int(mid_month // 12 + 1970)
    pop_years = sorted(set(years) | {ref_year})
    say(f"population: years {pop_years[0]}-{pop_years[-1]}")
    pop = _population(lsoas, places, pop_years, people, seed)
    rows["population"] = 0
    for year in years:
        frame = _population_frame(lsoas, year, pop[year])
        _write(frame, out / "population" / f"population_{year}.{ext}", fmt)
        files["population"].append(f"population/population_{year}.{ext}")
        rows["population"] += frame.height

    ref_day = _day(f"{ref_year}-07-01")
    reg = _register(lsoas, places, pop[ref_year], ref_day, period.end_day, seed)
    say(f"register: {reg.size:,} residents")

    spells, spell_month, spell_defects = _spells(reg, lsoas, places, period, seed, defect_rate)
    say(f"inpatient spells: {spells.height:,} rows")
    for p in _write_monthly(spells, spell_month, out / "inpatient_spells", "spells_", ext, period):
        files["inpatient_spells"].append(p.relative_to(out).as_posix())
    rows["inpatient_spells"] = spells.height
    del spells

    contacts, contact_month, contact_defects = _contacts(reg, lsoas, period, seed, defect_rate)
    say(f"community contacts: {contacts.height:,} rows")
    for p in _write_monthly(contacts, contact_month, out / "community_contacts", "contacts_", ext, period):
        files["community_contacts"].append(p.relative_to(out).as_posix())
    rows["community_contacts"] = contacts.height
    del contacts

    snapshots, coverage = _screening(reg, lsoas, places, period, seed)
    rows["breast_screening"] = 0
    for label, frame in snapshots:
        path = out / "breast_screening" / f"screening_{label}.{ext}"
        _write(frame, path, fmt)
        files["breast_screening"].append(path.relative_to(out).as_posix())
        rows["breast_screening"] += frame.height
    say(f"breast screening: {len(snapshots)} snapshot(s), {rows['breast_screening']:,} rows")

    files["benchmarks"] = [write_england_benchmarks(out).relative_to(out).as_posix()]
    say("benchmarks: a Fingertips-format export of England values")

    # The rest of the outcomes catalogue, from the same residents (imported here: it imports us).
    from metrics.demo_catalogue import generate_catalogue_sources

    if months >= 12 and catalogue_sources:
        catalogue = generate_catalogue_sources(out, register=reg, lsoas=lsoas, places=places, population=pop,
                                               seed=seed, fmt=fmt, start_month=start_month, months=months,
                                               defect_rate=defect_rate, progress=say)
        rows.update(catalogue["rows"])
        files.update(catalogue["files"])
    else:  # annual collections and snapshots need at least a year of activity
        catalogue = {}
        say("catalogue sources: skipped" + ("" if not catalogue_sources else " (they need 12 months or more of activity)"))

    place_names = dict(zip(lsoas["place_code"].to_list(), lsoas["place"].to_list(), strict=True))
    ref_counts = pop[ref_year].sum(axis=(1, 2))
    place_idx = lsoas["_place"].to_numpy()
    return {
        "out": str(out),
        "format": fmt,
        "seed": seed,
        "scale": scale,
        "period": {
            "start_month": period.label(period.first_month_index),
            "end_month": period.label(period.first_month_index + period.months - 1),
            "start_date": str(np.datetime64(period.start_day, "D")),
            "end_date": str(np.datetime64(period.end_day, "D")),
            "population_years": years,
            "screening_snapshots": [label for label, _ in snapshots],
        },
        "places": [
            {
                "place_code": p,
                "place": place_names[p],
                "lsoas": int((place_idx == i).sum()),
                f"population_{ref_year}": int(ref_counts[place_idx == i].sum()),
            }
            for i, p in enumerate(places)
        ],
        "residents": int(reg.size),
        "rows": rows,
        "files": files,
        "defects": {"inpatient_spells": spell_defects, "community_contacts": contact_defects,
                    **catalogue.get("defects", {})},
        "screening_coverage_calibrated": {"date": SCREENING_CALIBRATION_DATE, "percent": coverage},
    }


# England values as published (DESIGN.md §4), in Fingertips' CSV export layout, so the demo
# exercises the same reader a user's downloaded file goes through. Confidence limits are narrow
# (national denominators are in the millions); they are illustrative where not published.
ENGLAND_BENCHMARKS = [
    # indicator id, indicator name, time period, value, lower 95, upper 95
    (22001, "Cancer screening coverage: breast cancer", "2024/25", 71.8, 71.77, 71.83),
    (90631, "School readiness: percentage of children achieving a good level of development at the end of Reception", "2023/24",
     67.7, 67.6, 67.8),
    (90319, "Reception prevalence of obesity (including severe obesity)", "2023/24", 9.6, 9.5, 9.7),
    (90323, "Year 6 prevalence of obesity (including severe obesity)", "2023/24", 22.1, 22.0, 22.2),
]
FINGERTIPS_HEADER = ["Indicator ID", "Indicator Name", "Parent Code", "Parent Name", "Area Code", "Area Name",
                     "Area Type", "Sex", "Age", "Category Type", "Category", "Time period", "Value",
                     "Lower CI 95.0 limit", "Upper CI 95.0 limit", "Lower CI 99.8 limit", "Upper CI 99.8 limit",
                     "Count", "Denominator", "Value note", "Recent Trend", "Compared to England value or percentiles",
                     "Compared to percentiles", "Time period Sortable", "New data", "Compared to goal",
                     "Time period range"]


def write_england_benchmarks(out: Path, extra: list[tuple] | None = None) -> Path:
    """Write ``benchmarks/fingertips_england.csv`` (England rows, Fingertips export layout)."""
    rows = []
    for indicator, name, period, value, lower, upper in [*ENGLAND_BENCHMARKS, *(extra or [])]:
        rows.append({"Indicator ID": str(indicator), "Indicator Name": name, "Parent Code": "", "Parent Name": "",
                     "Area Code": "E92000001", "Area Name": "England", "Area Type": "England", "Sex": "Persons",
                     "Age": "All ages", "Category Type": "", "Category": "", "Time period": period,
                     "Value": str(value), "Lower CI 95.0 limit": str(lower), "Upper CI 95.0 limit": str(upper),
                     "Lower CI 99.8 limit": "", "Upper CI 99.8 limit": "", "Count": "", "Denominator": "",
                     "Value note": "", "Recent Trend": "", "Compared to England value or percentiles": "",
                     "Compared to percentiles": "", "Time period Sortable": "", "New data": "",
                     "Compared to goal": "", "Time period range": "1y"})
    path = Path(out) / "benchmarks" / "fingertips_england.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema={c: pl.String for c in FINGERTIPS_HEADER}).write_csv(path)
    return path


__all__ = ["SOURCES", "generate_demo_data", "write_england_benchmarks"]
