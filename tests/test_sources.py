"""Loading extracts: quarantine with the rule that failed, structural errors that name file and
column, resubmissions, and the accounting identity read = valid + quarantined + superseded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from conftest import AS_OF, DEFINITIONS
from metrics.definitions import load_catalogue
from metrics.errors import SourceError
from metrics.sources import fingerprint_files, load_source


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(DEFINITIONS)


def _load(catalogue, root: Path, source_id: str):
    geography = load_source(catalogue.sources["geography"], root, as_of=AS_OF)
    return load_source(catalogue.sources[source_id], root, as_of=AS_OF,
                       known_lsoas=geography.frame["lsoa_code"].to_list())


def test_bad_rows_are_quarantined_with_their_rule_and_nothing_is_lost(catalogue, handbuilt_dir):
    spells = _load(catalogue, handbuilt_dir, "inpatient_spells")
    assert spells.rows_read == 18
    assert spells.rows_read == spells.rows_valid + spells.rows_quarantined + spells.rows_superseded
    q = {r["row_number"]: r for r in spells.quarantine.iter_rows(named=True)}
    assert q[10]["rule"] == "discharge_not_before_admission"
    assert q[10]["column"] == "discharge_date, admission_date"
    assert q[11]["rule"] == "unknown_lsoa" and q[11]["value"] == "E01099999"
    assert q[12]["rule"] == "future_date" and q[12]["message"] == "expected on or before the refresh date 2026-01-01"
    assert q[13]["rule"] == "type_integer" and q[13]["column"] == "age" and q[13]["value"] == "abc"
    assert all(r["file"] == "spells_2024-04.csv" for r in q.values())
    # The whole row is kept, as read, so nothing is lost.
    assert '"spell_id":"bad1"' in q[10]["row_json"]


def test_resubmission_keeps_the_latest(catalogue, handbuilt_dir):
    spells = _load(catalogue, handbuilt_dir, "inpatient_spells")
    s2 = spells.frame.filter(pl.col("spell_id") == "s2")
    assert s2.height == 1 and s2["discharge_date"][0] == dt.date(2024, 4, 10) and s2["submission_id"][0] == 2
    assert spells.rows_superseded == 1
    assert s2["delay_days"][0] == 4  # derived: discharge − DRD, floored at 0


def test_fingerprints_name_every_file(catalogue, handbuilt_dir):
    contacts = _load(catalogue, handbuilt_dir, "community_contacts")
    assert [f["file"] for f in contacts.files] == ["contacts_2024-04.csv", "contacts_2024-05.csv", "contacts_2024-06.csv"]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 and f["rows"] > 0 for f in contacts.files)
    # Hashed while the files are read: the same fingerprints as hashing them first, with row counts.
    folder = handbuilt_dir / catalogue.sources["community_contacts"].folder
    hashed = fingerprint_files(sorted(folder.glob("*.csv")))
    assert [{k: v for k, v in f.items() if k != "rows"} for f in contacts.files] == hashed
    assert [f["rows"] for f in contacts.files] == [pl.read_csv(folder / f["file"]).height for f in hashed]


def test_parquet_and_csv_load_identically(catalogue, handbuilt_dir):
    csv = _load(catalogue, handbuilt_dir, "inpatient_spells")
    folder = handbuilt_dir / "inpatient_spells"
    for path in sorted(folder.glob("*.csv")):
        frame = pl.read_csv(path, infer_schema_length=0)
        frame.write_parquet(path.with_suffix(".parquet"))
        path.unlink()
    parquet = _load(catalogue, handbuilt_dir, "inpatient_spells")
    assert parquet.frame.drop("_file").equals(csv.frame.drop("_file"))
    assert parquet.rows_quarantined == csv.rows_quarantined


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.write_text(""), "file is empty (0 bytes)"),
    (lambda p: pl.read_csv(p, infer_schema=False).drop("discharge_ready_date").write_csv(p),
     "missing column(s) discharge_ready_date"),
    (lambda p: p.write_text(p.read_text().replace("discharge_ready_date,", "")), "some rows have more fields than the header"),
    (lambda p: p.write_text(p.read_text().replace(",", ";")), "does not use commas between columns"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b"RNA", b"R\xe9A")), "file is not UTF-8 encoded (byte 0xe9"),
])
def test_structural_problems_stop_the_source_with_a_clear_message(catalogue, handbuilt_dir, change, message):
    path = handbuilt_dir / "inpatient_spells" / "spells_2024-04.csv"
    change(path)
    with pytest.raises(SourceError) as info:
        _load(catalogue, handbuilt_dir, "inpatient_spells")
    assert message in str(info.value)
    assert "spells_2024-04.csv" in str(info.value) and "inpatient_spells" in str(info.value)


def test_missing_folder_is_structural(catalogue, tmp_path):
    with pytest.raises(SourceError, match="extract folder not found: expected a folder 'geography'"):
        load_source(catalogue.sources["geography"], tmp_path)


def test_bom_is_tolerated(catalogue, handbuilt_dir):
    path = handbuilt_dir / "inpatient_spells" / "spells_2024-04.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _load(catalogue, handbuilt_dir, "inpatient_spells").rows_read == 18


def test_wrong_parquet_type_is_structural(catalogue, handbuilt_dir):
    path = handbuilt_dir / "inpatient_spells" / "spells_2024-06.csv"
    frame = pl.read_csv(path, infer_schema_length=0).with_columns(pl.lit(1.5).alias("discharge_date"))
    frame.write_parquet(path.with_suffix(".parquet"))
    path.unlink()
    with pytest.raises(SourceError, match=r"column 'discharge_date': has type Float64, expected a date \(YYYY-MM-DD\)"):
        _load(catalogue, handbuilt_dir, "inpatient_spells")


def test_fingerprints_are_reused_only_while_size_and_modification_time_are_unchanged(tmp_path):
    import os

    from metrics.sources import fingerprint_files

    path = tmp_path / "contacts_2024-04.csv"
    path.write_text("a,b\n1,2\n")
    first = fingerprint_files([path])
    assert fingerprint_files([path], first) == first  # nothing read again
    stat = path.stat()
    path.write_text("a,b\n3,4\n")  # same size, new content...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old modification time
    assert fingerprint_files([path], first)[0]["sha256"] == first[0]["sha256"]  # trusted, as rsync does
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    again = fingerprint_files([path], first)
    assert again[0]["sha256"] != first[0]["sha256"] and again == fingerprint_files([path])


def _as_parquet(folder: Path) -> None:
    """Each CSV in ``folder`` rewritten as Parquet (text columns, as read), the CSV removed."""
    for path in sorted(folder.glob("*.csv")):
        pl.read_csv(path, infer_schema=False).write_parquet(path.with_suffix(".parquet"))
        path.unlink()


@pytest.mark.parametrize("source_id", ["inpatient_spells", "community_contacts"])
def test_parquet_files_read_together_give_what_each_file_gives(catalogue, handbuilt_dir, tmp_path, source_id):
    """Consecutive Parquet files are read in one call; the rows, their file names and row numbers,
    the quarantine records (values that don't parse among them) and the counts must be those of
    reading each file on its own (here: the same extracts as CSV)."""
    import shutil

    as_csv = _load(catalogue, handbuilt_dir, source_id)
    parquet_dir = tmp_path / "parquet"
    shutil.copytree(handbuilt_dir, parquet_dir)
    _as_parquet(parquet_dir / source_id)
    as_parquet = _load(catalogue, parquet_dir, source_id)
    rename = {f"{p.stem}.csv": f"{p.stem}.parquet" for p in (handbuilt_dir / source_id).glob("*.csv")}
    assert as_parquet.files_read == as_csv.files_read == 3
    assert (as_parquet.rows_read, as_parquet.rows_valid, as_parquet.rows_quarantined, as_parquet.rows_superseded) == (
        as_csv.rows_read, as_csv.rows_valid, as_csv.rows_quarantined, as_csv.rows_superseded)
    assert [f["rows"] for f in as_parquet.files] == [f["rows"] for f in as_csv.files]
    expected = as_csv.frame.with_columns(pl.col("_file").cast(pl.String).replace(rename))
    assert as_parquet.frame.with_columns(pl.col("_file").cast(pl.String)).equals(expected)
    expected_q = as_csv.quarantine.with_columns(pl.col("file").replace(rename))
    assert as_parquet.quarantine.drop("row_json").equals(expected_q.drop("row_json"))
    if source_id == "inpatient_spells":  # a value that didn't parse, reported for its own file and row
        bad_age = as_parquet.quarantine.filter(pl.col("rule") == "type_integer").row(0, named=True)
        assert (bad_age["file"], bad_age["row_number"], bad_age["value"]) == ("spells_2024-04.parquet", 13, "abc")


def test_a_parquet_file_unlike_the_others_is_read_on_its_own(catalogue, handbuilt_dir):
    """When one of several Parquet files types a column differently, the files can't be read
    together: each is read and parsed on its own. A type that parses (ages as floats) gives the
    same rows as before; one that can't (a date column of floats) is an error naming that file."""
    folder = handbuilt_dir / "inpatient_spells"
    _as_parquet(folder)
    expected = _load(catalogue, handbuilt_dir, "inpatient_spells")
    middle = folder / "spells_2024-05.parquet"
    as_text = pl.read_parquet(middle)
    as_text.with_columns(pl.col("age").cast(pl.Float64)).write_parquet(middle)
    mixed = _load(catalogue, handbuilt_dir, "inpatient_spells")
    assert mixed.frame.equals(expected.frame)
    assert mixed.quarantine.equals(expected.quarantine)
    as_text.with_columns(pl.lit(1.5).alias("discharge_date")).write_parquet(middle)
    with pytest.raises(SourceError) as caught:
        _load(catalogue, handbuilt_dir, "inpatient_spells")
    message = str(caught.value)
    assert "spells_2024-05.parquet" in message and "discharge_date" in message and "Float64" in message


def test_checks_every_lookup_value_passes_are_not_run_again_to_find_suspects():
    """An LSOA in the geography lookup matches the LSOA pattern, so the pattern needn't be run on
    millions of codes to find the rows that may fail; a lookup with a code the pattern rejects
    keeps it. pandera still reports every check a suspect fails."""
    import pandera.polars as pa

    from metrics.sources import _failures, _implied_checks, _suspects

    pattern = pa.Check.str_matches(r"^E01\d{6}$", error="pattern: expected to match")
    known = pa.Check.isin(["E01000001", "E01000002"], error="unknown_lsoa: expected an LSOA in the lookup")
    assert _implied_checks([pattern, known], pl.String) == [pattern]
    odd = pa.Check.isin(["E01000001", "W01000002"], error="unknown_lsoa: expected an LSOA in the lookup")
    assert _implied_checks([pattern, odd], pl.String) == []
    ages = pa.Check.isin([2, 3, 7], error="allowed_values")
    at_least_two, at_most_five = pa.Check.ge(2), pa.Check.le(5)
    assert _implied_checks([at_least_two, at_most_five, ages], pl.Int64) == [at_least_two]

    schema = pa.DataFrameSchema({"lsoa": pa.Column(pl.String, nullable=True, checks=[pattern, known])})
    frame = pl.DataFrame({"lsoa": ["E01000001", "E01999999", "nonsense", None, "E01000002"]})
    assert _suspects(schema, frame).to_list() == [1, 2]
    failures = _failures(schema, frame[[1, 2]]).sort("index", "rule")
    assert failures.select("index", "rule").rows() == [(0, "unknown_lsoa"), (1, "pattern"), (1, "unknown_lsoa")]


def test_pandera_runs_only_the_checks_some_suspect_may_fail():
    """pandera's cost is per check, so the suspects are validated against the checks that flagged
    some row (all of a flagged column's, none of a clean one's): the same failures, fewer checks."""
    import pandera.polars as pa
    from polars.testing import assert_frame_equal

    from metrics.sources import _failures, _narrowed, _suspects

    schema = pa.DataFrameSchema({
        "age": pa.Column(pl.Int64, nullable=False, checks=[pa.Check.ge(0, error="minimum: at least 0"),
                                                           pa.Check.le(120, error="maximum: at most 120")]),
        "sex": pa.Column(pl.String, checks=[pa.Check.isin(["F", "M"], error="allowed_values: F or M")]),
        "ward": pa.Column(pl.String, checks=[pa.Check.str_matches("^W", error="pattern: starts W")]),
    }, checks=[pa.Check(lambda data: data.lazyframe.select(pl.col("age") < 200), error="rule: age under 200")])
    frame = pl.DataFrame({"age": [30, -1, 150, 40], "sex": ["F", "M", "X", "F"], "ward": ["W1", "W2", "W3", "W4"]})
    failing: set = set()
    suspects = _suspects(schema, frame, failing)
    assert suspects.to_list() == [1, 2] and failing == {"age", "sex"}
    narrowed = _narrowed(schema, failing)
    assert [len(c.checks) for c in narrowed.columns.values()] == [2, 1, 0] and narrowed.checks == []
    assert_frame_equal(_failures(narrowed, frame[suspects]), _failures(schema, frame[suspects]))
    # A clean source's suspects (none) are still checked for their columns' types.
    assert _failures(_narrowed(schema, set()), frame.clear()) is None
    with pytest.raises(SourceError, match="age"):
        _failures(_narrowed(schema, set()), frame.clear().with_columns(pl.col("age").cast(pl.String)))
