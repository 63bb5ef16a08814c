"""Source extracts → validated Polars frames, with bad rows quarantined and never lost.

A source declaration (``definitions/sources/*.yaml``) compiles to a pandera (Polars) schema: types,
nullability, allowed values, ranges, patterns, "not in the future", known LSOA codes and the
declared cross-column rules. Loading a source:

1. reads every CSV / Parquet file in its folder (structural problems — missing folder, empty or
   unreadable file, wrong encoding, missing column, incompatible type — stop this source with a
   ``SourceError`` naming file, column and expectation);
2. parses text columns to their declared types (values that don't parse are quarantined);
3. validates with pandera and quarantines every failing row with the rules it broke;
4. keeps the latest submission of each dedup key and quarantines duplicate keys.

Every row read ends up either in ``frame`` or in ``quarantine`` (or counted as superseded by a
resubmission), so ``rows_read == rows_valid + rows_quarantined + rows_superseded``.
"""

from __future__ import annotations

import codecs
import datetime as dt
import functools
import hashlib
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandera.backends.polars.builtin_checks  # noqa: F401  (registers the checks' Polars versions)
import pandera.polars as pa
from pandera.api.polars.types import PolarsData
import polars as pl
import pyarrow.parquet as pq

from metrics.definitions import ColumnSpec, SourceDefinition
from metrics.errors import SourceError
from metrics.sqlfilter import compile_filter

__all__ = ["LoadedSource", "PreviousLoad", "appended_files", "load_source", "load_source_in_parts", "partition_key",
           "estimated_rows", "build_schema", "fingerprint_files", "source_files", "QUARANTINE_SCHEMA"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "float": pl.Float64(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "boolean": pl.Boolean(),
}
EXPECTED = {
    "string": "text",
    "integer": "a whole number",
    "float": "a number",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a date and time (YYYY-MM-DD HH:MM:SS)",
    "boolean": "true or false",
}
QUARANTINE_SCHEMA = {
    "source_id": pl.String,
    "file": pl.String,
    "row_number": pl.Int64,
    "rule": pl.String,
    "column": pl.String,
    "value": pl.String,
    "message": pl.String,
    "row_json": pl.String,
}
_FILE, _ROW = "_file", "_row"
_PART = "_part"  # a row's part when a source is split (``_spill``)
_POSITION = "_position"  # a row's position among the rows kept from the files read
_VALIDATION_BATCH_ROWS = 1_000_000


def part_number(by: list[str], parts: int) -> pl.Expr:
    """The part (from 0 to ``parts`` - 1) each row of a file as read belongs to when a source is
    split (``load_source_in_parts``): a hash of its ``by`` column's text, or with ``by`` empty, its
    row number in the file."""
    hashed = pl.col(by[0]).cast(pl.String).hash(seed=7) if by else pl.col(_ROW)
    return (hashed % parts).cast(pl.UInt32)


@dataclass
class LoadedSource:
    source: SourceDefinition
    frame: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[dict]
    rows_read: int = 0
    rows_superseded: int = 0
    warnings: list[str] = field(default_factory=list)
    files_read: int = 0  # fewer than ``files`` when an earlier load supplied the rest (``PreviousLoad``)
    changed_rows: pl.DataFrame | None = None  # with a PreviousLoad: rows added or removed since it
    # With a PreviousLoad whose quarantine records stay where they are (in the store): how many there
    # are and their rules. ``quarantine`` then holds only the records of the files read now.
    earlier_quarantine: int = 0
    earlier_quarantine_by_rule: dict[str, int] = field(default_factory=dict)
    # With a PreviousLoad none of whose rows were replaced: how many leading rows of ``frame`` are
    # exactly its frame (the rest came from the new files). None otherwise.
    extends: int | None = None
    # Loaded in parts (``load_source_in_parts``): each part's rows went to its consumer, so ``frame``
    # is empty; this many rows were kept in all, in this many parts.
    rows_kept: int | None = None
    parts: int | None = None

    @property
    def rows_valid(self) -> int:
        return self.frame.height if self.rows_kept is None else self.rows_kept

    @functools.cached_property
    def frame_bytes(self) -> int:
        """``frame``'s estimated size, worked out once: Polars counts every string's bytes each time
        it is asked (34 ms for 3.4M contacts), and a refresh asks several times per source."""
        return self.frame.estimated_size()

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.height + self.earlier_quarantine

    def quarantined_by_rule(self) -> dict[str, int]:
        """Quarantine records per rule (a row that broke several rules counts under their '; '-joined names)."""
        counts = dict(self.earlier_quarantine_by_rule)
        for rule, n in (self.quarantine.group_by("rule").len().rows() if self.quarantine.height else []):
            counts[rule] = counts.get(rule, 0) + n
        return dict(sorted(counts.items()))


# --- files ---------------------------------------------------------------------------------------


def source_files(source: SourceDefinition, data_dir: Path) -> list[Path]:
    folder = Path(data_dir) / source.folder
    if not folder.is_dir():
        raise SourceError(source.id, f"extract folder not found: expected a folder '{source.folder}' in {data_dir}",
                          file=folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".parquet"))
    if not files:
        raise SourceError(source.id, "no extract files found (expected *.csv or *.parquet)", file=folder)
    return files


def fingerprint_files(files: list[Path], known: list[dict] | None = None) -> list[dict]:
    """Content hash and size of each file: what a run read, so it can be reproduced and compared.

    ``known``: fingerprints taken earlier (e.g. by the last run). A file whose name, size and
    modification time (to the nanosecond) all match one keeps its hash without being read again,
    as rsync and make trust them; any change to either means hashing the file afresh."""
    seen = {f["file"]: f for f in known or [] if "mtime_ns" in f}
    prints = []
    for path in files:
        status = path.stat()
        prior = seen.get(path.name)
        if prior and prior["bytes"] == status.st_size and prior["mtime_ns"] == status.st_mtime_ns:
            prints.append(dict(prior))
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        prints.append({"file": path.name, "bytes": status.st_size, "sha256": digest.hexdigest(),
                       "mtime_ns": status.st_mtime_ns})
    return prints


def _utf8_problem(path: Path) -> str | None:
    """The first byte that isn't UTF-8, read in blocks (never the whole file at once)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return (f"file is not UTF-8 encoded (byte 0x{block[exc.start]:02x} at offset {offset + exc.start}); "
                        "save it as UTF-8 (for example from Excel: CSV UTF-8)")
            offset += len(block)
    return None


_SNIFF_BYTES = 1 << 20


def check_file(source: SourceDefinition, path: Path) -> None:
    """Cheap checks on a file's first bytes before anything reads or hashes all of it, so a wrong
    or enormous file fails fast with a clear message (a sparse or binary file is all NUL bytes)."""
    size = path.stat().st_size
    if size == 0:
        raise SourceError(source.id, "file is empty (0 bytes): expected a header row and data", file=path)
    parquet = path.suffix.lower() == ".parquet"
    with path.open("rb") as handle:  # (a Parquet file's magic number and a glance at what it is instead)
        head = handle.read(4096 if parquet else _SNIFF_BYTES)
    if parquet:
        if head[:4] != b"PAR1":
            kind = "it looks like CSV text" if b"," in head[:4096] and b"\0" not in head[:4096] else "wrong format"
            raise SourceError(source.id, f"not a Parquet file ({kind}): rename it .csv or export it as Parquet",
                              file=path)
        return
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SourceError(source.id, f"file is not UTF-8 encoded (byte 0x{head[0]:02x} at offset 0: a UTF-16 "
                                     "byte-order mark); save it as UTF-8 (for example from Excel: CSV UTF-8)",
                          file=path)
    if head.startswith(b"\x1f\x8b"):
        return  # gzip-compressed CSV: the reader decompresses it
    nul = head.find(b"\0")
    if nul >= 0:
        raise SourceError(source.id, f"file contains NUL bytes at offset {nul} ({size:,} bytes in all): it is "
                                     "binary or a damaged/sparse file, not CSV text", file=path)


def _read_file(source: SourceDefinition, path: Path, *, rows: tuple[int, int] | None = None) -> pl.DataFrame:
    """A file's declared columns, with each row's file (``_FILE``) and row number (``_ROW``);
    ``rows``: (offset, length) of a Parquet file's rows only (numbered as in the whole file)."""
    if path.stat().st_size == 0:
        raise SourceError(source.id, "file is empty (0 bytes): expected a header row and data", file=path)
    try:
        if path.suffix.lower() == ".parquet" and rows is not None:
            frame = pl.scan_parquet(path).slice(*rows).collect()
        elif path.suffix.lower() == ".parquet":
            frame = pl.read_parquet(path)
        else:
            # Read every column as text: types are parsed per declared column, so one bad value
            # quarantines one row instead of failing the whole file.
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8", raise_if_empty=True)
    except SourceError:
        raise
    except Exception as exc:
        problem = _utf8_problem(path) if path.suffix.lower() == ".csv" else None
        first_line = str(exc).splitlines()[0]
        if "more fields than defined" in first_line:
            problem = ("some rows have more fields than the header: the file may be truncated or cut mid-row, "
                       "or a value contains an unquoted comma")
        message = problem or f"could not read the file: {first_line}"
        raise SourceError(source.id, message, file=path) from None
    frame = frame.rename({c: _column_name(c) for c in frame.columns})
    declared = list(source.columns)
    missing = [c for c in declared if c not in frame.columns]
    if missing:
        if len(frame.columns) == 1 and path.suffix.lower() == ".csv" and any(d in frame.columns[0] for d in ";\t|"):
            raise SourceError(source.id, f"the file does not use commas between columns (header: "
                                         f"{frame.columns[0][:80]!r}); expected a comma-separated file", file=path)
        raise SourceError(source.id, f"missing column(s) {', '.join(missing)}; expected columns: "
                                     f"{', '.join(declared)}", file=path, column=missing[0])
    first = rows[0] + 1 if rows is not None else 1
    return frame.select(declared).with_columns(
        pl.lit(path.name, pl.Categorical).alias(_FILE), pl.int_range(first, first + pl.len(), dtype=pl.Int64).alias(_ROW)
    )


def _read_spilled(source: SourceDefinition, path: Path, spilled: list[Path]) -> pl.DataFrame:
    """One part's rows of a file, as ``_read_file`` gives them, from where ``_spill`` wrote them."""
    return pl.read_parquet(spilled).select(*source.columns, pl.lit(path.name, pl.Categorical).alias(_FILE),
                                           pl.col(_ROW).cast(pl.Int64))


def _column_name(header: str) -> str:
    """A column's name as declared: without a byte-order mark or surrounding spaces from the header."""
    return header.lstrip("\ufeff").strip()


def _parquet_rows(path: Path) -> int | None:
    """A Parquet file's row count from its footer, or None if it can't be read."""
    try:
        return pq.read_metadata(path).num_rows
    except Exception:
        return None


def _read_groups(files: list[tuple[Path, dict]]) -> list[list[tuple[Path, dict, int | None]]]:
    """Consecutive Parquet files in groups of about ``_VALIDATION_BATCH_ROWS`` rows, read together
    (Polars reads the files of one call in parallel: monthly files of one row group each are read
    twice as fast); any other file on its own. Each file comes with its row count from its footer
    (None if not Parquet or unreadable)."""
    groups: list[list[tuple[Path, dict, int | None]]] = []
    rows = 0
    for path, fingerprint in files:
        count = _parquet_rows(path) if path.suffix.lower() == ".parquet" else None
        if count is None or not groups or groups[-1][0][2] is None or rows >= _VALIDATION_BATCH_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append((path, fingerprint, count))  # (nothing joins a file without a count)
        rows += count or 0
    return groups


def _read_parquet_group(source: SourceDefinition, paths: list[Path], counts: list[int]) -> pl.DataFrame | None:
    """Several Parquet files (of ``counts`` rows) in one frame, as ``_read_file`` would give them
    one by one and concatenated; None if they can't be read together (different columns or types,
    a problem in one): then each file is read on its own, so that a problem is reported for its file."""
    declared = list(source.columns)
    try:
        schemas = [pl.read_parquet_schema(path) for path in paths]
        if any(schema != schemas[0] for schema in schemas) or any(c not in schemas[0] for c in declared):
            return None
        frame = pl.read_parquet(paths, columns=declared).select(declared)
    except Exception:
        return None
    if frame.height != sum(counts):
        return None
    which = np.repeat(np.arange(len(paths)), counts)
    starts = np.repeat(np.cumsum([0, *counts[:-1]]), counts)
    # Rows name their file by a categorical code (as ``_read_file``), made per file, not per row.
    added = [pl.Series(_FILE, [p.name for p in paths], dtype=pl.Categorical).gather(which),
             pl.Series(_ROW, np.arange(1, frame.height + 1) - starts, dtype=pl.Int64)]
    # The added columns are cut into the same chunks as the read ones: with chunks that don't line
    # up, every later operation on the frame first copies it to align them.
    lengths = [len(chunk) for chunk in frame.get_columns()[0].get_chunks()]
    if any([len(chunk) for chunk in column.get_chunks()] != lengths for column in frame.get_columns()):
        frame, lengths = frame.rechunk(), [frame.height]
    bounds = np.cumsum([0, *lengths[:-1]])
    added = [pl.concat([column.slice(int(start), length) for start, length in zip(bounds, lengths, strict=True)],
                       rechunk=False) for column in added]
    return frame.with_columns(added)


# --- parsing -------------------------------------------------------------------------------------


def _parse_expr(name: str, spec: ColumnSpec, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    target = POLARS_TYPES[spec.type]
    if dtype == target:
        return column
    if dtype == pl.String:
        text = column.str.strip_chars()
        text = pl.when(text == "").then(None).otherwise(text)
        if spec.type == "date":
            return text.str.to_date(spec.format or "%Y-%m-%d", strict=False)
        if spec.type == "datetime":
            return text.str.to_datetime(spec.format, strict=False, time_unit="us")
        if spec.type == "boolean":
            lowered = text.str.to_lowercase()
            return (pl.when(lowered.is_in(["true", "t", "yes", "y", "1"])).then(True)
                    .when(lowered.is_in(["false", "f", "no", "n", "0"])).then(False).otherwise(None))
        return text.cast(target, strict=False)
    if spec.type in ("integer", "float") and dtype.is_numeric():
        return column.cast(target, strict=False)
    if spec.type == "datetime" and dtype == pl.Date:
        return column.cast(target)
    if spec.type == "date" and isinstance(dtype, pl.Datetime):
        return column.dt.date()
    if spec.type == "string" and (dtype.is_numeric() or dtype == pl.Boolean):
        return column.cast(pl.String)
    raise TypeError(f"{dtype}")


def _parse(source: SourceDefinition, frame: pl.DataFrame, path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse declared columns; return (parsed frame, quarantine records for values that didn't parse)."""
    schema = frame.schema  # (worked out on each access: once here, not per column)
    exprs = []
    for name, spec in source.columns.items():
        if schema[name] == POLARS_TYPES[spec.type]:
            continue  # already the declared type (Parquet): nothing to parse
        try:
            exprs.append(_parse_expr(name, spec, schema[name]).alias(name))
        except TypeError:
            raise SourceError(source.id, f"has type {schema[name]}, expected {EXPECTED[spec.type]}",
                              file=path, column=name) from None
    parsed = frame.with_columns(exprs) if exprs else frame
    failures = []
    for name, spec in source.columns.items():
        if schema[name] == POLARS_TYPES[spec.type]:
            continue
        raw = frame[name]
        raw_text = raw.cast(pl.String).str.strip_chars()
        failed = raw_text.is_not_null() & (raw_text != "") & parsed[name].is_null()
        if failed.any():
            failures.append(
                frame.filter(failed).select(
                    pl.col(_FILE).cast(pl.String).alias("file"), pl.col(_ROW).alias("row_number"),
                    pl.lit(f"type_{spec.type}").alias("rule"), pl.lit(name).alias("column"),
                    raw_text.filter(failed).alias("value"),
                    pl.lit(f"expected {EXPECTED[spec.type]}").alias("message"),
                )
            )
    bad = pl.concat(failures) if failures else None
    return parsed, bad


# --- validation ----------------------------------------------------------------------------------


def build_schema(source: SourceDefinition, *, as_of: dt.date, known_lsoas: list[str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema a source declaration compiles to. Check errors read "<rule>: <message>"."""
    columns = {}
    for name, spec in source.columns.items():
        checks = []
        if spec.allowed is not None:
            checks.append(pa.Check.isin(spec.allowed, error=f"allowed_values: expected one of {spec.allowed}"))
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min, error=f"minimum: expected at least {spec.min}"))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max, error=f"maximum: expected at most {spec.max}"))
        if spec.pattern:
            checks.append(pa.Check.str_matches(spec.pattern, error=f"pattern: expected to match {spec.pattern}"))
        if spec.not_future:
            limit = as_of if spec.type == "date" else dt.datetime.combine(as_of, dt.time.max)
            checks.append(pa.Check.le(limit, error=f"future_date: expected on or before the refresh date {as_of}"))
        if known_lsoas is not None and name == source.geography:
            checks.append(pa.Check.isin(known_lsoas, error="unknown_lsoa: expected an LSOA in the geography lookup"))
        columns[name] = pa.Column(POLARS_TYPES[spec.type], nullable=spec.nullable, checks=checks)
    frame_checks = []
    for rule in source.rules:
        expr = compile_filter(rule.check, source.all_columns, context=f"rule '{rule.name}'")
        # SQL CHECK semantics: a rule that evaluates to NULL (missing inputs) passes.
        frame_checks.append(pa.Check(
            lambda data, expr=expr: data.lazyframe.select(expr.fill_null(True)),
            name=rule.name, error=f"{rule.name}: {rule.description or rule.check}",
        ))
    return pa.DataFrameSchema(columns, checks=frame_checks, name=source.id)


def _suspects(schema: pa.DataFrameSchema, frame: pl.DataFrame, failing: set | None = None,
              implied: set[int] | None = None) -> pl.Series | None:
    """The positions of the rows that may fail ``schema``: every row pandera would report, and
    perhaps a few more. None when that can't be worked out cheaply (then every row is validated).
    ``failing`` gets what some row may fail: the name of each column whose checks (or missing
    values) flagged a row, and ``("*", i)`` for the schema's i-th frame-wide check (``_narrowed``).
    ``implied``: ``_implied_in(schema, frame.schema)``, when worked out already (once per load).

    pandera runs and collects each check on its own; here the same check functions are evaluated
    together in one Polars pass, with pandera's null handling (a null check result passes when the
    check ignores nulls; a missing value fails a non-nullable column — NaN too, to be safe). Every
    check is row by row, so pandera on these rows alone reports exactly what it would on all of them."""
    lf = frame.lazy()
    if implied is None:
        implied = _implied_in(schema, frame.schema)
    outcomes: list[pl.LazyFrame] = []
    labels: list = []  # what each outcome checks: a column's name, or ("*", i)

    def evaluated(check: pa.Check, key: str) -> pl.LazyFrame | None:
        """The check's pass/fail per row as pandera's Polars backend computes it; None if it can't
        be had that way (a per-element or grouped check, or pandera's internals have moved on)."""
        try:
            if check.element_wise or check.groupby is not None:
                return None
            result = check._check_fn(PolarsData(lf, key), **check._check_kwargs)
        except (AttributeError, KeyError, TypeError):
            return None
        if not isinstance(result, pl.LazyFrame):
            return None
        ok = pl.all_horizontal(pl.all())
        return result.select((ok | ok.is_null()) if check.ignore_na else ok.fill_null(False))

    for name, column in schema.columns.items():
        if name not in frame.columns:
            return None
        if not column.nullable:
            missing = pl.col(name).is_null()
            if frame.schema[name].is_float():
                missing = missing | pl.col(name).is_nan()
            outcomes.append(lf.select(~missing))
            labels.append(name)
        for check in column.checks:
            if id(check) in implied:
                continue
            outcome = evaluated(check, name)
            if outcome is None:
                return None
            outcomes.append(outcome)
            labels.append(name)
    for i, check in enumerate(schema.checks):
        outcome = evaluated(check, "*")
        if outcome is None:
            return None
        outcomes.append(outcome)
        labels.append(("*", i))
    if not outcomes:
        return pl.Series("index", [], dtype=pl.UInt32)
    # (Outcomes are bits: all of them for millions of rows are a few megabytes.)
    flags = pl.concat([o.select(pl.first().alias(f"_{i}")) for i, o in enumerate(outcomes)],
                      how="horizontal").collect()
    if failing is not None:
        failing.update(label for label, passed in zip(labels, flags.select(pl.all().all()).row(0), strict=True)
                       if not passed)
    return flags.select((~pl.all_horizontal(pl.all())).arg_true().alias("index")).to_series().cast(pl.UInt32)


def _narrowed(schema: pa.DataFrameSchema, failing: set) -> pa.DataFrameSchema:
    """``schema`` with only the checks some row may fail (``_suspects``' ``failing``): every check
    of a column that flagged a row, and the frame-wide checks that did; other columns keep their
    type only. pandera's cost is per check, rows or none, so the suspects of a clean source (or
    of a few bad columns) are validated for a fraction of it, with the same failures reported."""
    columns = {name: column if name in failing else pa.Column(column.dtype, nullable=True, checks=[])
               for name, column in schema.columns.items()}
    checks = [check for i, check in enumerate(schema.checks) if ("*", i) in failing]
    return pa.DataFrameSchema(columns, checks=checks, name=schema.name)


def _implied_in(schema: pa.DataFrameSchema, types: Mapping[str, pl.DataType]) -> set[int]:
    """The ids of every column check ``_implied_checks`` finds, for columns of these types."""
    return {id(check) for name, column in schema.columns.items() if name in types
            for check in _implied_checks(column.checks, types[name])}


def _implied_checks(checks: list[pa.Check], dtype: pl.DataType) -> list[pa.Check]:
    """The checks a row passes whenever it passes one of the column's ``isin`` checks: those every
    allowed value passes (an LSOA code in the geography lookup matches the LSOA pattern). A row
    failing them fails the ``isin`` too, so it is a suspect anyway, and pandera still reports every
    check it fails. Regular expressions over millions of codes are most of the suspects' pass."""
    lists = [c for c in checks if c.name == "isin" and c.ignore_na and not c.element_wise and c.groupby is None]
    implied = []
    for check in checks:
        if check.name == "isin" or check.element_wise or check.groupby is not None or not check.ignore_na:
            continue
        for allowed in lists:
            values = pl.LazyFrame({"value": pl.Series(list(allowed.statistics["allowed_values"]), strict=False)})
            try:
                values = values.cast({"value": dtype})
                result = check._check_fn(PolarsData(values, "value"), **check._check_kwargs)
                passes = isinstance(result, pl.LazyFrame) and result.select(
                    pl.all_horizontal(pl.all()).fill_null(True).all()).collect().item()
            except (AttributeError, KeyError, TypeError, pl.exceptions.PolarsError):
                passes = False
            if passes:
                implied.append(check)
                break
    return implied


def _failures(schema: pa.DataFrameSchema, data: pl.DataFrame) -> pl.DataFrame | None:
    """Run pandera on ``data`` (declared columns only); one record per (row, check) that failed, with
    the row's position in ``data``, or None when all pass. Raises ``SourceError`` for a structural
    failure (a column or type that isn't as declared)."""
    try:
        schema.validate(data, lazy=True)
        return None
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    if cases["index"].null_count():
        structural = cases.filter(pl.col("index").is_null()).row(0, named=True)
        raise SourceError(schema.name, f"{structural['check']}: {structural['failure_case']}",
                          column=structural["column"])
    text = pl.col("check").cast(pl.String)
    rule = pl.when(text == "not_nullable").then(pl.lit("missing_value")).otherwise(text.str.split(": ").list.first())
    message = (pl.when(text == "not_nullable").then(pl.lit("expected a value (the column is not nullable)"))
               .otherwise(text.str.split(": ").list.slice(1).list.join(": ")))
    frame_level = pl.col("schema_context") == "DataFrameSchema"
    return cases.select(
        pl.col("index").cast(pl.Int64), rule.alias("rule"),
        pl.when(frame_level).then(None).otherwise(pl.col("column").cast(pl.String)).alias("column"),
        pl.when(frame_level).then(None).otherwise(pl.col("failure_case").cast(pl.String)).alias("value"),
        message.alias("message"),
    )


def _row_json(frame: pl.DataFrame) -> pl.Expr:
    columns = [c for c in frame.columns if not c.startswith("_")]
    return pl.struct([pl.col(c).cast(pl.String) for c in columns]).struct.json_encode()


def _derive(source: SourceDefinition, frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name, spec in source.derived.items():
        start, end = spec.days_between
        days = (pl.col(end).cast(pl.Date) - pl.col(start).cast(pl.Date)).dt.total_days()
        if spec.floor is not None:
            days = days.clip(lower_bound=spec.floor)
        exprs.append(days.cast(pl.Int64).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def _possible_duplicates(frame: pl.DataFrame, key: list[str], failed: pl.Series | None = None) -> pl.Series | None:
    """Rows whose key hash occurs more than once (a superset of true duplicates), or None. Rows at
    the positions ``failed`` (that failed validation) take no part.

    Hashing the key to one integer and looking for repeats is an order of magnitude faster than
    comparing multi-column string keys, and true duplicates are rare; the exact comparison then
    runs on the candidates only.
    """
    combined = pl.lit(0, pl.UInt64)
    for seed, column in enumerate(key, start=1):  # per-column hashes: cheaper than hashing a struct
        combined = combined ^ pl.col(column).hash(seed=seed)
    hashes = frame.select(combined.alias("_hash")).to_series()
    taking_part = None if failed is None or failed.is_empty() else _all_but(frame.height, failed)
    # Repeats found by sorting the hashes and comparing neighbours: faster than a hash set here.
    ordered = (hashes if taking_part is None else hashes.filter(taking_part)).sort()
    repeats = ordered.filter(ordered == ordered.shift(1)).unique()
    if repeats.is_empty():
        return None
    candidates = hashes.is_in(repeats.implode())
    return candidates if taking_part is None else candidates & taking_part


def _all_but(height: int, positions: pl.Series) -> pl.Series:
    """A mask keeping every row except those at ``positions``."""
    keep = np.ones(height, dtype=bool)
    keep[positions.to_numpy()] = False
    return pl.Series(keep)


def _drop_rows(parts: list[pl.DataFrame], positions: pl.Series) -> list[pl.DataFrame]:
    """``parts`` (consecutive pieces of one frame) without the rows at ``positions`` of the whole,
    filtered piece by piece and each piece let go as it is done, so that the whole frame never
    exists twice in memory."""
    if positions.is_empty():
        return parts
    kept, offset = [], 0
    while parts:
        part = parts.pop(0)
        mine = positions.filter((positions >= offset) & (positions < offset + part.height)) - offset
        kept.append(part.filter(_all_but(part.height, mine)) if mine.len() else part)
        offset += part.height
        del part
    return kept


def _superseded(frame: pl.DataFrame, key: list[str], latest_by: str, failed: pl.Series | None = None) -> pl.Series:
    """Resubmissions replace earlier rows: the positions (ascending) of every row that is not its
    key's latest submission (among equal submissions, the row read later wins). The rows at the
    positions ``failed`` (quarantined) neither replace nor are replaced."""
    candidates = _possible_duplicates(frame, key, failed)
    if candidates is None:
        return pl.Series("_index", [], dtype=pl.UInt32)
    resubmitted = frame.select(list(dict.fromkeys([*key, latest_by]))).with_row_index("_index").filter(candidates)
    winners = (resubmitted.sort([latest_by, "_index"])
               .unique(subset=key, keep="last")
               .select("_index"))
    return resubmitted.join(winners, on="_index", how="anti")["_index"].sort()


def _quarantine_failures(source: SourceDefinition, frame: pl.DataFrame,
                         failures: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
    """(the positions of the rows that failed, a quarantine record for each)."""
    per_row = failures.group_by("index", maintain_order=True).agg(
        pl.col("rule").unique(maintain_order=True).str.join("; "),
        pl.col("column").drop_nulls().unique(maintain_order=True).str.join("; "),
        pl.col("value").first(),
        pl.col("message").unique(maintain_order=True).str.join("; "),
    )
    # A cross-column rule names the columns it reads.
    rule_columns = {r.name: ", ".join(dict.fromkeys(compile_filter(r.check, source.all_columns).meta.root_names()))
                    for r in source.rules}
    per_row = per_row.with_columns(pl.when(pl.col("column") == "")
                                   .then(pl.col("rule").replace_strict(rule_columns, default=None))
                                   .otherwise(pl.col("column")).alias("column"))
    # Gather only the failed rows (a join against the whole frame would copy every column of it).
    bad_rows = frame[per_row["index"]].select(
        pl.col(_FILE).cast(pl.String).alias("file"), pl.col(_ROW).alias("row_number"), _row_json(frame).alias("row_json"))
    quarantined = pl.concat([bad_rows, per_row.select("rule", "column", "value", "message")], how="horizontal")
    return per_row["index"], quarantined.select("file", "row_number", "rule", "column", "value", "message", "row_json")


@dataclass
class PreviousLoad:
    """What an earlier load of a source produced, so that a later one can read only new files.

    ``frame`` is that load's validated, de-duplicated frame (the same columns), ``quarantine`` its
    quarantine records and ``files`` the fingerprints (with row counts) of the files it read.

    ``quarantine`` may instead be a count of records per rule when the caller keeps the records
    elsewhere (a refresh shares them with the earlier run inside the store): a new load never changes
    an earlier file's quarantine records, so they need not be read and written back."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame | dict[str, int]
    files: list[dict]
    rows_superseded: int


def appended_files(source: SourceDefinition, previous: list[dict], current: list[dict]) -> list[str] | None:
    """The names of files added after ``previous`` when the change is a pure append, else None.

    A load can then start from the previous result and read only the new files, with exactly the
    result of reading everything: every earlier file is unchanged and every new file sorts after
    them (so rows keep their order, which decides ties between resubmissions and duplicates), and
    the source de-duplicates by at most one rule (resubmissions or key, not both, whose interplay
    depends on the whole extract)."""
    if source.dedup and source.key:
        return None
    before = {f["file"]: (f["bytes"], f["sha256"]) for f in previous}
    now = {f["file"]: (f["bytes"], f["sha256"]) for f in current}
    if any(now.get(name) != fingerprint for name, fingerprint in before.items()):
        return None
    new = [f["file"] for f in current if f["file"] not in before]
    if not new or (before and min(new) <= max(before)):
        return None
    return new


def load_source(source: SourceDefinition, data_dir: str | Path, *, as_of: dt.date | None = None,
                known_lsoas: list[str] | None = None, columns: Collection[str] | None = None,
                previous: PreviousLoad | None = None, known_files: list[dict] | None = None) -> LoadedSource:
    """Read, parse, validate and de-duplicate one source. Raises ``SourceError`` for structural problems.

    Files are validated one at a time, and only ``columns`` (default: all declared and derived
    columns) are kept from each, so memory follows what the metrics need rather than the extract.

    ``previous``: an earlier load of the same source with the same definition, columns, refresh date
    and geography. When the files have only been appended to since (``appended_files``), only the new
    files are read and validated, and the result is the one a full load would give. ``known_files``:
    fingerprints just taken (``fingerprint_files``), so unchanged files aren't hashed twice.
    """
    as_of = as_of or dt.date.today()
    files = source_files(source, Path(data_dir))
    for path in files:
        check_file(source, path)
    hashing = None
    if previous is None:
        # Nothing to compare the files with: their hashes are only recorded, so they are taken on
        # another thread while the files are read (hashlib lets go of the GIL). Until then each
        # file's entry collects its row count.
        pool = ThreadPoolExecutor(1, thread_name_prefix=f"hash-{source.id}")
        hashing = pool.submit(fingerprint_files, files, known_files)
        pool.shutdown(wait=False)  # (its thread ends once the hashes are taken)
        prints = [{"file": path.name} for path in files]
        new_files = None
    else:
        prints = fingerprint_files(files, known_files)
        new_files = appended_files(source, previous.files, prints)
    if new_files is not None:
        prior = {f["file"]: f for f in previous.files}
        prints = [prior.get(f["file"], f) for f in prints]
    else:
        previous = None
    try:
        loaded = _read_and_validate(source, files, prints, previous, new_files, as_of=as_of,
                                    known_lsoas=known_lsoas, columns=columns)
    except BaseException:
        if hashing is not None:  # (as before hashing moved to a thread: a failed load has hashed its files)
            wait([hashing])
        raise
    if hashing is not None:
        loaded.files = [{**hashed, **counted} for hashed, counted in zip(hashing.result(), prints, strict=True)]
    return loaded


def _read_and_validate(source: SourceDefinition, files: list[Path], prints: list[dict],
                       previous: PreviousLoad | None, new_files: list[str] | None, *, as_of: dt.date,
                       known_lsoas: list[str] | None, columns: Collection[str] | None,
                       spilled: Mapping[Path, list[Path]] | None = None) -> LoadedSource:
    """``load_source`` once its files are listed and checked: ``prints`` are their fingerprints (or,
    while they are being taken, entries in which each file's row count is recorded as it is read).
    ``spilled``: one part of the rows only (``load_source_in_parts``), read from where ``_spill``
    wrote each file's rows of it; ``prints`` then count its rows."""
    schema = build_schema(source, as_of=as_of, known_lsoas=known_lsoas)
    keep = None
    if columns is not None:
        needed = set(columns) | set(source.key or []) | {_FILE, _ROW}
        if source.dedup:
            needed |= {*source.dedup.key, source.dedup.keep_latest_by}
        keep = [c for c in [*source.all_columns, _FILE, _ROW] if c in needed]
    valid_parts, quarantine_parts, batch = [], [], []
    rows_read = files_read = 0
    # pandera runs once, at the end, on the few rows that may fail (``_suspects``, found batch by
    # batch in one Polars pass each): its fixed cost per call is paid once, not per batch. Rows that
    # fail are dropped together with superseded ones (``_drop_rows``), so the kept rows are copied
    # once. Positions count the rows kept from the files read, in order.
    suspect_parts: list[pl.DataFrame] = []
    failed_positions: list[pl.Series] = []
    failing: set = set()  # the checks some suspect may fail (``_suspects``): all pandera runs
    implied: set[int] | None = None  # the checks a lookup makes redundant in ``_suspects``
    declared_only: pl.DataFrame | None = None  # an empty frame of the declared columns (types checked once)
    position = 0

    def validate_batch() -> None:
        # Batches of files: small enough to bound memory, large enough that a Polars pass over
        # them isn't dominated by per-call overhead for many small monthly files.
        nonlocal declared_only, position, implied
        parsed = pl.concat(batch, how="vertical") if len(batch) > 1 else batch[0]
        batch.clear()
        data = parsed.drop(_FILE, _ROW)
        if declared_only is None:
            declared_only = data.clear()
        if implied is None:  # (checking a lookup's every value: once, not per batch)
            implied = _implied_in(schema, data.schema)
        suspects = _suspects(schema, data, failing, implied=implied)
        if suspects is None:  # which rows may fail can't be told cheaply: pandera checks every row
            failures = _failures(schema, data)
            if failures is not None:
                failed, quarantined = _quarantine_failures(source, parsed, failures)
                quarantine_parts.append(quarantined)
                failed_positions.append(failed.cast(pl.Int64) + position)
        elif suspects.len():
            suspect_parts.append(parsed[suspects].with_columns((suspects.cast(pl.Int64) + position).alias(_POSITION)))
        del data
        parsed = _derive(source, parsed)
        parsed = parsed.select(keep) if keep is not None else parsed
        # Kept rows name their file by a 4-byte categorical code (made as the files are read), not
        # a 16-byte string view, and number rows in 4 bytes: memory that grows with the extract.
        parsed = parsed.with_columns(pl.col(_ROW).cast(pl.UInt32))
        valid_parts.append(parsed)
        position += parsed.height

    to_read = []
    for path, fingerprint in zip(files, prints, strict=True):
        if previous is not None and path.name not in new_files:
            rows_read += fingerprint["rows"]
        else:
            to_read.append((path, fingerprint))

    def take(raw: pl.DataFrame, path: Path) -> None:
        """Parse one file's (or one group's) rows into the current batch; validate full batches."""
        nonlocal rows_read
        rows_read += raw.height
        parsed, bad = _parse(source, raw, path)
        if bad is not None:
            quarantine_parts.append(bad.join(parsed.select(pl.col(_FILE).cast(pl.String), _ROW,
                                                           _row_json(raw).alias("row_json")),
                                             left_on=["file", "row_number"], right_on=[_FILE, _ROW], how="left"))
            # Rows whose values didn't parse are quarantined already; don't also report them as missing.
            parsed = parsed.join(bad.select(pl.col("file").cast(pl.Categorical), "row_number").unique(),
                                 left_on=[_FILE, _ROW],
                                 right_on=["file", "row_number"], how="anti")
        batch.append(parsed)
        if sum(part.height for part in batch) >= _VALIDATION_BATCH_ROWS:
            validate_batch()

    if spilled is not None:  # (one part of a split source: each file's rows of it, from where they were spilled)
        for path, fingerprint in to_read:
            raw = _read_spilled(source, path, spilled[path])
            files_read += 1
            fingerprint["rows"] = raw.height
            take(raw, path)
        to_read = []
    for group in _read_groups(to_read):
        paths = [path for path, _, _ in group]
        raw = _read_parquet_group(source, paths, [count for _, _, count in group]) if len(group) > 1 else None
        files_read += len(group)
        if raw is not None:
            for path, fingerprint, count in group:
                fingerprint["rows"] = count
            take(raw, paths[0])  # (the files have one schema: a type error is every file's)
            continue
        # One file, or files that can't be read together: each read and parsed on its own, so that
        # a problem is reported for its file and files may differ in how their columns are typed.
        for path, fingerprint, _ in group:
            raw = _read_file(source, path)
            fingerprint["rows"] = raw.height
            take(raw, path)
    if batch:
        validate_batch()
    if declared_only is not None and (suspect_parts or not failed_positions):
        suspects = (pl.concat(suspect_parts, how="vertical") if suspect_parts
                    else declared_only.with_columns(pl.lit(None, pl.Categorical).alias(_FILE),
                                                    pl.lit(None, pl.Int64).alias(_ROW),
                                                    pl.lit(None, pl.Int64).alias(_POSITION)))
        suspect_parts.clear()
        failures = _failures(_narrowed(schema, failing), suspects.drop(_FILE, _ROW, _POSITION))
        if failures is not None:
            failed, quarantined = _quarantine_failures(source, suspects, failures)
            quarantine_parts.append(quarantined)
            failed_positions.append(suspects[_POSITION][failed])
    earlier_by_rule: dict[str, int] = {}
    earlier_rows = 0
    if previous is not None:
        earlier_rows = previous.frame.height
        valid_parts.insert(0, previous.frame.select(valid_parts[0].columns).cast(valid_parts[0].schema))
        if isinstance(previous.quarantine, dict):
            earlier_by_rule = previous.quarantine
        else:
            quarantine_parts.insert(0, previous.quarantine)
    # Positions in the whole frame (the earlier load's rows first) of the rows that failed.
    failed = (pl.concat(failed_positions).cast(pl.UInt32) + earlier_rows if failed_positions
              else pl.Series(_POSITION, [], dtype=pl.UInt32)).sort()
    superseded = previous.rows_superseded if previous is not None else 0
    replaced = None  # earlier rows a new file's resubmissions replaced
    losers = pl.Series(_POSITION, [], dtype=pl.UInt32)
    if source.dedup:
        losers = _superseded(pl.concat(valid_parts, how="vertical"), source.dedup.key, source.dedup.keep_latest_by,
                             failed=failed)
        superseded += losers.len()
        if previous is not None:
            replaced = previous.frame[losers.filter(losers < earlier_rows)]
    valid_parts = _drop_rows(valid_parts, pl.concat([failed.cast(pl.UInt32), losers.cast(pl.UInt32)]).sort())
    frame = pl.concat(valid_parts, how="vertical") if len(valid_parts) > 1 else valid_parts[0]
    valid_parts.clear()  # the concatenated frame holds the rows now
    if source.key:
        extra = _possible_duplicates(frame, source.key)
        if extra is not None:
            # Exact check on the few candidate rows: every row after the first with the same key.
            candidates = frame.with_row_index("_index").filter(extra)
            repeated = candidates.filter(~pl.struct(source.key).is_first_distinct())
            if repeated.height:
                quarantine_parts.append(repeated.select(
                    pl.col(_FILE).cast(pl.String).alias("file"), pl.col(_ROW).cast(pl.Int64).alias("row_number"),
                    pl.lit("duplicate_key").alias("rule"), pl.lit(", ".join(source.key)).alias("column"),
                    pl.concat_str([pl.col(c).cast(pl.String) for c in source.key], separator="|").alias("value"),
                    pl.lit(f"expected one row per {', '.join(source.key)}; an earlier row has the same key")
                    .alias("message"),
                    _row_json(repeated).alias("row_json"),
                ))
                frame = frame.filter(_all_but(frame.height, repeated["_index"]))

    quarantine = (pl.concat([q.select(list(QUARANTINE_SCHEMA)[1:]) for q in quarantine_parts], how="vertical")
                  if quarantine_parts else pl.DataFrame(schema={k: v for k, v in QUARANTINE_SCHEMA.items()
                                                                if k != "source_id"}))
    quarantine = quarantine.with_columns(pl.lit(source.id).alias("source_id")).select(list(QUARANTINE_SCHEMA))
    quarantine = quarantine.cast(QUARANTINE_SCHEMA).sort("file", "row_number")
    changed = None
    if previous is not None:
        # What differs from the previous load: the new files' rows kept, and the rows they replaced
        # (a new file's duplicate keys are dropped, so earlier rows are never dropped that way).
        added = frame.filter(pl.col(_FILE).is_in(new_files))
        changed = pl.concat([added, replaced], how="vertical") if replaced is not None else added
    return LoadedSource(source=source, frame=frame, quarantine=quarantine, files=prints,
                        rows_read=rows_read, rows_superseded=superseded, files_read=files_read, changed_rows=changed,
                        earlier_quarantine=sum(earlier_by_rule.values()), earlier_quarantine_by_rule=earlier_by_rule,
                        extends=(previous.frame.height if previous is not None and (replaced is None or not replaced.height)
                                 else None))



# --- sources too big to hold: loaded in parts ----------------------------------------------------


def partition_key(source: SourceDefinition, people: Collection[str]) -> list[str] | None:
    """The column to split a source's rows by so that each part can be loaded and computed on its
    own with the numbers of the whole: every row of a key (resubmissions, duplicate keys) and every
    row of a person counted once (``people``: the columns distinct counts count) in one part.

    ``[]`` when any split will do (no key, nothing counted distinct); None when no column serves
    (then the source is loaded whole). Only a text column is used: its parsed value is its text,
    so rows the load treats as the same key are split alike whatever the file's format."""
    keys = [list(key) for key in (source.dedup.key if source.dedup else None, source.key) if key]
    people = set(people)
    if not keys and not people:
        return []
    if len(people) > 1:
        return None
    for column in (people or keys[0]):
        spec = source.columns.get(column)
        if spec is not None and spec.type == "string" and all(column in key for key in keys):
            return [column]
    return None


_CSV_BYTES_PER_ROW = 100  # for sizing a source before reading it: extract rows run to 60-150 bytes


def estimated_rows(source: SourceDefinition, data_dir: str | Path) -> int:
    """Rows in a source's files, without reading them: Parquet footers; a CSV file by its size."""
    rows = 0
    for path in source_files(source, Path(data_dir)):
        counted = _parquet_rows(path) if path.suffix.lower() == ".parquet" else None
        rows += counted if counted is not None else path.stat().st_size // _CSV_BYTES_PER_ROW
    return rows


_SPILL_SLICE_ROWS = 4_000_000  # rows of one Parquet file split at a time (a national extract may be one file)


def _file_slices(source: SourceDefinition, path: Path) -> Iterator[pl.DataFrame]:
    """A file's rows as ``_read_file`` gives them: a Parquet file in slices of at most
    ``_SPILL_SLICE_ROWS`` rows, any other file whole."""
    rows = _parquet_rows(path) if path.suffix.lower() == ".parquet" else None
    if rows is None or rows <= _SPILL_SLICE_ROWS:
        yield _read_file(source, path)
        return
    for offset in range(0, rows, _SPILL_SLICE_ROWS):
        yield _read_file(source, path, rows=(offset, _SPILL_SLICE_ROWS))


def _spill(source: SourceDefinition, files: list[Path], by: list[str], parts: int,
           folder: Path) -> list[dict[Path, list[Path]]]:
    """Every file's rows split into ``parts`` (``part_number``) in one read, each part's rows of
    each file (slice) written to ``folder`` as Parquet, as read (the declared columns, unparsed, and
    ``_ROW``): for each part, its files by the file they came from (``_read_and_validate``'s
    ``spilled``)."""
    number = part_number(by, parts).alias(_PART)

    def split(file_number: int, path: Path) -> list[list[Path]]:
        written: list[list[Path]] = [[] for _ in range(parts)]
        for slice_number, rows in enumerate(_file_slices(source, path)):
            rows = rows.drop(_FILE)
            empty = rows.clear()
            pieces = rows.with_columns(number).partition_by(_PART, as_dict=True, include_key=False)
            del rows
            for index in range(parts):
                target = folder / f"{index}-{file_number}-{slice_number}.parquet"
                # Uncompressed: written and read back once; lz4 took 10% longer to write, 2.5x to read
                pieces.pop((index,), empty).write_parquet(target, compression="uncompressed", statistics=False)
                written[index].append(target)
        return written

    # Two files at a time: one is read while the other is split and written (each alone leaves a
    # core idle); memory holds two files' (or slices') rows.
    with ThreadPoolExecutor(2, thread_name_prefix=f"spill-{source.id}") as pool:
        done = list(pool.map(split, range(len(files)), files))
    return [{path: written[index] for path, written in zip(files, done, strict=True)} for index in range(parts)]


def load_source_in_parts(source: SourceDefinition, data_dir: str | Path, *, by: list[str], parts: int,
                         on_part: Callable[[list[pl.DataFrame]], None], as_of: dt.date | None = None,
                         known_lsoas: list[str] | None = None, columns: Collection[str] | None = None,
                         known_files: list[dict] | None = None, spill_dir: str | Path | None = None) -> LoadedSource:
    """``load_source`` for a source too big to hold at once: streamed through in ``parts``.

    Each part is the rows whose ``by`` column (``partition_key``) hashes to it. The files are read
    once (one file, or a slice of a big Parquet file, at a time) and split into their parts' rows,
    written to a temporary folder in ``spill_dir`` (default: the system's temporary folder) and
    deleted at the end (``_spill``). Part by part, those rows are read back (numbered as in their
    files), validated and de-duplicated on their own, handed to ``on_part`` (which reduces them:
    ``metrics.compute.source_partials``) and let go, so memory follows the largest part
    (``on_part`` gets a list holding the part's frame alone, and pops it: then the rows are freed
    as soon as it has reduced them, before it adds the result to what it has so far). As every key
    and every person falls in one part, the rows kept, quarantined (with their files and row
    numbers) and superseded are exactly ``load_source``'s. The result has all of them but an empty
    ``frame`` (``rows_kept`` counts it)."""
    as_of = as_of or dt.date.today()
    files = source_files(source, Path(data_dir))
    for path in files:
        check_file(source, path)
    pool = ThreadPoolExecutor(1, thread_name_prefix=f"hash-{source.id}")  # (hashlib lets go of the GIL)
    hashing = pool.submit(fingerprint_files, files, known_files)
    pool.shutdown(wait=False)
    rows_of_file = [0] * len(files)
    rows_read = kept = superseded = 0
    quarantine: list[pl.DataFrame] = []
    warnings: list[str] = []
    if spill_dir is not None:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f"spill-{source.id}-", dir=spill_dir) as folder:
            spilled = _spill(source, files, by, parts, Path(folder))
            for index in range(parts):
                counted = [{"file": path.name} for path in files]
                loaded = _read_and_validate(source, files, counted, None, None, as_of=as_of, known_lsoas=known_lsoas,
                                            columns=columns, spilled=spilled[index])
                rows_of_file = [total + entry.get("rows", 0) for total, entry in zip(rows_of_file, counted, strict=True)]
                rows_read += loaded.rows_read
                kept += loaded.frame.height
                superseded += loaded.rows_superseded
                quarantine.append(loaded.quarantine)
                warnings += [w for w in loaded.warnings if w not in warnings]
                empty, handed = loaded.frame.clear(), [loaded.frame]
                del loaded  # (``handed`` is the only hold on the part's rows: ``on_part`` takes them from it)
                if handed[0].height or (index == parts - 1 and not kept):  # (an empty source: once, empty)
                    on_part(handed)
                handed.clear()
                for spill in (p for paths in spilled[index].values() for p in paths):
                    spill.unlink()  # (read: the disk it held is free for the next parts)
    finally:
        wait([hashing])
    prints = [{**hashed, "rows": rows} for hashed, rows in zip(hashing.result(), rows_of_file, strict=True)]
    return LoadedSource(source=source, frame=empty,
                        quarantine=pl.concat(quarantine, how="vertical").sort("file", "row_number"),
                        files=prints, rows_read=rows_read, rows_superseded=superseded, warnings=warnings,
                        files_read=len(files), rows_kept=kept, parts=parts)
