"""Demo extracts too big for the generator to hold in memory (scale 30 and beyond), built from parts.

The demo generator (``metrics.demo``) draws every resident's activity at once, so it needs several
times the extracts' size in memory: beyond scale ~10 that is more than a 24 GB machine has. Here
the places a scale picks (``select_places_for_scale``) are split into groups of at most
``PART_SCALE`` × Dudley + Walsall, each group is generated on its own (its own seed; foundation
sources only), and the parts are merged file by file: one geography, one population file per
year, one file per month or snapshot, as a region's extract would come. Identifiers get the part's
number in front (``1P…``, ``2P…``), so people, spells and contacts of different parts never share
an id. Only one part's rows and one merged file are in memory at a time.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from metrics import geography_data as geo
from metrics.demo import generate_demo_data

PART_SCALE = 6.0  # the largest part generated in one go (the generator peaks near 1.5 GB per unit: 9 GB)
FOUNDATION = ["geography", "population", "inpatient_spells", "community_contacts", "breast_screening", "benchmarks"]


def place_groups(scale: float, part_scale: float = PART_SCALE) -> list[list[str]]:
    """The places ``scale`` picks, in order, in groups of at most ``part_scale`` × Dudley + Walsall."""
    places = geo.select_places_for_scale(scale)
    population = geo.place_populations_2024()
    limit = part_scale * (population[geo.DUDLEY] + population[geo.WALSALL])
    groups: list[list[str]] = [[]]
    total = 0
    for code in places:
        if groups[-1] and total + population[code] > limit:
            groups.append([])
            total = 0
        groups[-1].append(code)
        total += population[code]
    return groups


def generate_in_parts(out: Path, scale: float, seed: int, work: Path,
                      say: Callable[[str], None] = print) -> dict:
    """Demo extracts (Parquet) for ``scale`` in ``out``, generated part by part under ``work``."""
    groups = place_groups(scale)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"scale": scale, "seed": seed, "parts": []}
    for number, places in enumerate(groups, start=1):
        part_dir = work / f"part-{number}"
        shutil.rmtree(part_dir, ignore_errors=True)
        say(f"part {number}/{len(groups)}: {len(places)} place(s)")
        part = generate_demo_data(part_dir, scale=1.0, seed=seed + number, fmt="parquet", places=places,
                                  catalogue_sources=False)
        summary["parts"].append({"places": places, "rows": part["rows"]})
        for source in FOUNDATION:
            _merge_part(part_dir / source, out / source, number, first=number == 1)
        shutil.rmtree(part_dir)
    summary["rows"] = {s: sum(p["rows"].get(s, 0) for p in summary["parts"]) for s in FOUNDATION}
    return summary


def _merge_part(part: Path, merged: Path, number: int, *, first: bool) -> None:
    """Append a part's files to the merged files of the same name (the benchmarks file: kept once)."""
    merged.mkdir(parents=True, exist_ok=True)
    for path in sorted(part.iterdir()):
        target = merged / path.name
        if path.suffix != ".parquet":
            if first:
                shutil.copy(path, target)
            continue
        frame = pl.read_parquet(path)
        ids = [c for c, t in frame.schema.items() if c.endswith("_id") and t == pl.String]
        frame = frame.with_columns(pl.concat_str(pl.lit(str(number)), pl.col(c)).alias(c) for c in ids)
        if target.exists():
            frame = pl.concat([pl.read_parquet(target), frame], how="vertical")
        partial = target.with_suffix(".partial")
        frame.write_parquet(partial, compression="zstd", statistics=True)
        partial.replace(target)
