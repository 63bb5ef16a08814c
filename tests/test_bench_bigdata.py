"""The benchmark's big-scale extracts (bench/bigdata.py): places split into parts that each fit the
generator, and parts merged file by file with identifiers that can't collide across parts."""

from __future__ import annotations

import datetime as dt

import polars as pl

from bench.bigdata import _merge_part, place_groups
from metrics import geography_data as geo


def test_place_groups_keep_every_place_in_order_within_the_part_size():
    places = geo.select_places_for_scale(30)
    groups = place_groups(30, part_scale=6)
    assert [p for group in groups for p in group] == places
    population = geo.place_populations_2024()
    limit = 6 * (population[geo.DUDLEY] + population[geo.WALSALL])
    for group in groups:  # a group goes over the limit only when a single place is bigger than it
        assert sum(population[p] for p in group) <= limit or len(group) == 1
    assert place_groups(1) == [[geo.DUDLEY, geo.WALSALL]]


def test_parts_merge_file_by_file_with_identifiers_prefixed_by_part(tmp_path):
    merged = tmp_path / "data" / "community_contacts"
    for number in (1, 2):
        part = tmp_path / f"part-{number}" / "community_contacts"
        part.mkdir(parents=True)
        for month in ("2024-04", "2024-05"):
            pl.DataFrame({"contact_id": ["C01", "C02"], "person_id": ["P01", "P01"], "submission_id": [1, 2],
                          "contact_date": [dt.date(2024, int(month[-2:]), 1)] * 2}
                         ).write_parquet(part / f"contacts_{month}.parquet")
        (part / "readme.txt").write_text(f"part {number}")
        _merge_part(part, merged, number, first=number == 1)
    assert sorted(p.name for p in merged.iterdir()) == ["contacts_2024-04.parquet", "contacts_2024-05.parquet",
                                                        "readme.txt"]
    april = pl.read_parquet(merged / "contacts_2024-04.parquet")
    assert april["contact_id"].to_list() == ["1C01", "1C02", "2C01", "2C02"]
    assert april["person_id"].n_unique() == 2  # the same id in two parts is two people
    assert april["submission_id"].to_list() == [1, 2, 1, 2]  # integers are not identifiers
    assert (merged / "readme.txt").read_text() == "part 1"
