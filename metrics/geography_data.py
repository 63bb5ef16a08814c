"""Real LSOA geography: English Indices of Deprivation 2019 extracts shipped with the package.

The files in ``metrics/data/imd2019/`` (MHCLG, Open Government Licence v3.0; see its README) are
gzip CSVs that start with a UTF-8 byte-order mark and quote numbers above 999 with thousands
separators. :func:`read_lsoas` reads both, strips the BOM and the commas, and returns one row per
LSOA (2011) for the chosen local authorities with IMD rank / decile / quintile and the mid-2015
population denominators.

Also here, because the demo data and possibly the engine reuse them:

* :func:`select_places_for_scale` - the fixed, deterministic order in which further real local
  authorities are added when demo data is generated at a scale above 1;
* :func:`assign_neighbourhoods` - an illustrative grouping of each place's LSOAs into five
  neighbourhoods by contiguous blocks of MSOA number (real partnerships supply their own file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

DATA_DIR = Path(__file__).resolve().parent / "data" / "imd2019"
IMD_FILE = DATA_DIR / "imd2019_lsoa_rank_decile.csv.gz"
POP_FILE = DATA_DIR / "iod2019_lsoa_population_mid2015.csv.gz"

DUDLEY = "E08000027"
WALSALL = "E08000030"
SANDWELL = "E08000028"
WOLVERHAMPTON = "E08000031"
DEFAULT_PLACES: tuple[str, str] = (DUDLEY, WALSALL)

#: Mid-2024 resident population used to scale the mid-2015 LSOA denominators (DESIGN.md section 4).
MID_2024_POPULATION: dict[str, int] = {DUDLEY: 331_930, WALSALL: 295_678}
#: Growth applied to mid-2015 populations of places without a mid-2024 figure above.
DEFAULT_GROWTH_2015_TO_2024 = 1.05

#: Order in which further local authorities are added at scale > 1: the rest of the Black Country
#: first, then the other West Midlands metropolitan boroughs, then every other LAD by code.
PREFERRED_EXTRA_PLACES: tuple[str, ...] = (SANDWELL, WOLVERHAMPTON, "E08000025", "E08000026", "E08000029")

#: Illustrative neighbourhood names, in MSOA-number order (MSOAs are numbered roughly north to south).
NEIGHBOURHOOD_NAMES: dict[str, tuple[str, ...]] = {
    DUDLEY: (
        "Sedgley, Coseley and Gornal",
        "Dudley and Netherton",
        "Brierley Hill and Kingswinford",
        "Stourbridge",
        "Halesowen",
    ),
    WALSALL: (
        "Brownhills, Pelsall and Aldridge",
        "Walsall North",
        "Willenhall",
        "Walsall Central",
        "Darlaston and Bentley",
    ),
}
NEIGHBOURHOODS_PER_PLACE = 5

_IMD_COLUMNS = ["lsoa_code", "lsoa_name", "place_code", "place", "imd_rank", "imd_decile"]
_POP_COLUMNS = [
    "lsoa_code",
    "lsoa_name",
    "place_code",
    "place",
    "pop_total_2015",
    "pop_0_15_2015",
    "pop_16_59_2015",
    "pop_60_plus_2015",
    "pop_working_age_2015",
]


def _read_raw(path: Path, names: list[str]) -> pl.DataFrame:
    """Read one extract as strings, name columns by position, strip BOM and thousands separators."""
    raw = pl.read_csv(path, infer_schema=False, encoding="utf8")
    if raw.width != len(names):
        raise ValueError(f"{path.name}: expected {len(names)} columns, found {raw.width}")
    raw.columns = names
    return raw.with_columns(
        pl.col(c).str.strip_chars().str.strip_chars_start("\ufeff") for c in names
    )


def _to_int(col: str) -> pl.Expr:
    return pl.col(col).str.replace_all(",", "", literal=True).str.strip_chars().cast(pl.Int64)


def read_all_lsoas() -> pl.DataFrame:
    """Every LSOA (2011) in England with IMD 2019 and mid-2015 population fields (32,844 rows)."""
    imd = _read_raw(IMD_FILE, _IMD_COLUMNS).with_columns(_to_int("imd_rank"), _to_int("imd_decile"))
    pop = _read_raw(POP_FILE, _POP_COLUMNS).with_columns(_to_int(c) for c in _POP_COLUMNS[4:])
    out = imd.join(
        pop.drop("lsoa_name", "place_code", "place"),
        on="lsoa_code",
        how="inner",
        validate="1:1",
        maintain_order="left",
    )
    if out.height != imd.height:
        raise ValueError("IMD and population extracts do not cover the same LSOAs")
    return out.with_columns(
        ((pl.col("imd_decile") + 1) // 2).alias("imd_quintile"),
    ).select(
        "lsoa_code",
        "lsoa_name",
        "place_code",
        "place",
        "imd_rank",
        "imd_decile",
        "imd_quintile",
        "pop_total_2015",
        "pop_0_15_2015",
        "pop_16_59_2015",
        "pop_60_plus_2015",
        "pop_working_age_2015",
    ).sort("lsoa_code")


def read_lsoas(places: Sequence[str] = DEFAULT_PLACES) -> pl.DataFrame:
    """LSOAs of the given local authority districts (2019 codes), in the order of ``places``.

    Columns: lsoa_code, lsoa_name, place_code, place, imd_rank, imd_decile, imd_quintile
    (= ceil(decile / 2)), pop_total_2015, pop_0_15_2015, pop_16_59_2015, pop_60_plus_2015,
    pop_working_age_2015. All integers are Int64. Raises ``KeyError`` for an unknown code.
    """
    places = list(places)
    allrows = read_all_lsoas()
    known = set(allrows["place_code"].unique().to_list())
    missing = [p for p in places if p not in known]
    if missing:
        raise KeyError(f"unknown local authority district code(s): {missing}")
    order = pl.DataFrame({"place_code": places, "_order": list(range(len(places)))})
    return (
        allrows.join(order, on="place_code", how="inner", maintain_order="left")
        .sort("_order", "lsoa_code")
        .drop("_order")
    )


def place_population_2015() -> pl.DataFrame:
    """Mid-2015 total population per local authority district: place_code, place, pop_total_2015."""
    return (
        read_all_lsoas()
        .group_by("place_code", "place")
        .agg(pl.col("pop_total_2015").sum())
        .sort("place_code")
    )


def target_population_2024(place_code: str, pop_2015: int) -> int:
    """Mid-2024 population used for a place: the published figure, else mid-2015 grown by ~5%."""
    if place_code in MID_2024_POPULATION:
        return MID_2024_POPULATION[place_code]
    return int(round(pop_2015 * DEFAULT_GROWTH_2015_TO_2024))


def place_populations_2024() -> dict[str, int]:
    """The mid-2024 population used for each local authority district (``target_population_2024``)."""
    pops = place_population_2015()
    return {code: target_population_2024(code, p2015)
            for code, p2015 in zip(pops["place_code"].to_list(), pops["pop_total_2015"].to_list(), strict=True)}


def select_places_for_scale(scale: float) -> list[str]:
    """Places to generate for ``scale``: Dudley and Walsall, plus more LADs when ``scale > 1``.

    Further LADs are taken in a fixed order (Sandwell, Wolverhampton, Birmingham, Coventry,
    Solihull, then every other LAD by code). A LAD is added while the running mid-2024 total is
    below ~97% of ``scale`` x (Dudley + Walsall), skipping any LAD that would overshoot the target
    by more than the current shortfall. Scale 2 gives the four Black Country places.
    """
    places = list(DEFAULT_PLACES)
    if scale <= 1:
        return places
    pop_of = place_populations_2024()
    base = pop_of[DUDLEY] + pop_of[WALSALL]
    target = scale * base
    total = float(base)
    others = [c for c in sorted(pop_of) if c not in places and c not in PREFERRED_EXTRA_PLACES]
    for code in [*PREFERRED_EXTRA_PLACES, *others]:
        if total >= 0.97 * target:
            break
        shortfall = target - total
        if total + pop_of[code] - target > shortfall:
            continue
        places.append(code)
        total += pop_of[code]
    return places


def _msoa_number(lsoa_name: pl.Expr) -> pl.Expr:
    """MSOA number from an LSOA name such as "Dudley 001A" -> 1."""
    return lsoa_name.str.extract(r"(\d{3})[A-Z]?\s*$", 1).cast(pl.Int64)


def assign_neighbourhoods(lsoas: pl.DataFrame, n: int = NEIGHBOURHOODS_PER_PLACE) -> pl.DataFrame:
    """Add a ``neighbourhood`` column: ``n`` contiguous blocks of MSOA number per place.

    Blocks are cut on MSOA boundaries so each holds about the same number of LSOAs. Dudley and
    Walsall get real-sounding names (:data:`NEIGHBOURHOOD_NAMES`); other places get
    "<place> neighbourhood 1" ... "<place> neighbourhood n".
    """
    df = lsoas.with_columns(_msoa_number(pl.col("lsoa_name")).alias("_msoa"))
    if df["_msoa"].null_count():
        bad = df.filter(pl.col("_msoa").is_null())["lsoa_name"].head(3).to_list()
        raise ValueError(f"cannot read an MSOA number from LSOA names such as {bad}")
    per_msoa = (
        df.group_by("place_code", "place", "_msoa")
        .agg(pl.len().alias("_n"))
        .sort("place_code", "_msoa")
        .with_columns(
            (pl.col("_n").cum_sum().over("place_code") - pl.col("_n")).alias("_before"),
            pl.col("_n").sum().over("place_code").alias("_total"),
        )
        # Block of the MSOA's midpoint in the place's cumulative LSOA count.
        .with_columns(
            ((pl.col("_before") + pl.col("_n") / 2) * n / pl.col("_total"))
            .floor()
            .cast(pl.Int64)
            .clip(0, n - 1)
            .alias("_block")
        )
    )
    codes = per_msoa["place_code"].to_list()
    names = per_msoa["place"].to_list()
    blocks = per_msoa["_block"].to_list()
    labels = []
    for code, place, block in zip(codes, names, blocks, strict=True):
        fixed = NEIGHBOURHOOD_NAMES.get(code)
        labels.append(fixed[block] if fixed and len(fixed) == n else f"{place} neighbourhood {block + 1}")
    per_msoa = per_msoa.with_columns(pl.Series("neighbourhood", labels, dtype=pl.String))
    return df.join(
        per_msoa.select("place_code", "_msoa", "neighbourhood"),
        on=["place_code", "_msoa"],
        how="left",
        maintain_order="left",
    ).drop("_msoa")


def geography_lookup(places: Sequence[str] = DEFAULT_PLACES) -> pl.DataFrame:
    """The ``geography`` source table for ``places`` (columns as definitions/sources/geography.yaml)."""
    return assign_neighbourhoods(read_lsoas(places)).select(
        "lsoa_code",
        "lsoa_name",
        "place_code",
        "place",
        "neighbourhood",
        "imd_rank",
        "imd_decile",
        "imd_quintile",
    )


__all__ = [
    "DEFAULT_PLACES",
    "DUDLEY",
    "MID_2024_POPULATION",
    "SANDWELL",
    "WALSALL",
    "WOLVERHAMPTON",
    "assign_neighbourhoods",
    "geography_lookup",
    "place_population_2015",
    "place_populations_2024",
    "read_all_lsoas",
    "read_lsoas",
    "select_places_for_scale",
    "target_population_2024",
]
