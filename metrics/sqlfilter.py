"""SQL filter expressions from definitions, turned into Polars expressions safely.

Definitions state filters as SQL (``attendance_status IN (5, 6) AND age >= 18``) because analysts
read and write SQL. ``pl.sql_expr`` would happily accept sub-queries and table functions that read
files, so before parsing we tokenise the text and allow only literals, operators, a short list of
keywords and scalar functions, and the columns the source declares. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

from metrics.errors import FilterError

__all__ = ["compile_filter", "ALLOWED_KEYWORDS", "ALLOWED_FUNCTIONS"]

ALLOWED_KEYWORDS = frozenset(
    """AND OR NOT IN IS NULL TRUE FALSE BETWEEN LIKE ILIKE CASE WHEN THEN ELSE END DATE INTERVAL
    CAST AS INTEGER INT BIGINT FLOAT DOUBLE VARCHAR TEXT BOOLEAN""".split()
)
ALLOWED_FUNCTIONS = frozenset(
    """ABS COALESCE LOWER UPPER LENGTH TRIM SUBSTR SUBSTRING DATE_PART EXTRACT GREATEST LEAST
    ROUND FLOOR CEIL NULLIF""".split()
)
# Words that must never appear, even as a column name: they are how SQL reaches other tables or files.
FORBIDDEN = frozenset(
    """SELECT FROM JOIN UNION WITH INTO INSERT UPDATE DELETE DROP CREATE ALTER EXEC EXECUTE
    READ_CSV READ_PARQUET READ_JSON READ_IPC READ_NDJSON SCAN TABLE VALUES""".split()
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<quoted>"[^"]+")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|\|\||[=<>+\-*/%(),])
    """,
    re.VERBOSE,
)


def _tokens(sql: str) -> Iterable[tuple[str, str, int]]:
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if not match:
            raise FilterError(f"unexpected character {sql[pos]!r} at position {pos + 1} in filter {sql!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            yield kind, match.group(), pos
        pos = match.end()


def compile_filter(sql: str, columns: Iterable[str], *, context: str = "filter") -> pl.Expr:
    """Turn a SQL boolean (or scalar) expression over ``columns`` into a Polars expression.

    Raises ``FilterError`` naming the offending word when the text names anything other than the
    allowed columns, keywords and functions, uses sub-queries or statement separators, or does not parse.

    >>> import polars as pl
    >>> df = pl.DataFrame({"age": [10, 40]})
    >>> df.filter(compile_filter("age >= 18", ["age"])).height
    1
    """
    if not isinstance(sql, str) or not sql.strip():
        raise FilterError(f"{context} is empty: expected a SQL expression such as \"age >= 18\"")
    allowed_columns = set(columns)
    lower_columns = {c.lower(): c for c in allowed_columns}
    tokens = list(_tokens(sql))
    for index, (kind, text, pos) in enumerate(tokens):
        if kind == "quoted":
            name = text[1:-1]
            if name not in allowed_columns:
                raise FilterError(
                    f"{context} names unknown column {name!r}; allowed columns: {', '.join(sorted(allowed_columns))}"
                )
            continue
        if kind != "word":
            continue
        upper = text.upper()
        if upper in FORBIDDEN:
            raise FilterError(
                f"{context} may not use {text!r}: filters are expressions over the source's columns, "
                "not queries (no SELECT, FROM, sub-queries or file readers)"
            )
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if following == "(" and upper not in ALLOWED_KEYWORDS:
            if upper not in ALLOWED_FUNCTIONS:
                raise FilterError(
                    f"{context} calls function {text!r}, which is not allowed; "
                    f"allowed functions: {', '.join(sorted(ALLOWED_FUNCTIONS))}"
                )
            continue
        if upper in ALLOWED_KEYWORDS:
            continue
        if text in allowed_columns or text.lower() in lower_columns:
            continue
        # DATE_PART('year', x) style units arrive as strings, so any other bare word is a column.
        raise FilterError(
            f"{context} names unknown column {text!r}; allowed columns: {', '.join(sorted(allowed_columns))}"
        )
    if ";" in sql:
        raise FilterError(f"{context} may not contain ';'")
    try:
        expr = pl.sql_expr(sql)
    except Exception as exc:  # polars raises several exception types for bad SQL
        raise FilterError(f"{context} does not parse as SQL: {exc}".splitlines()[0]) from None
    unknown = set(expr.meta.root_names()) - allowed_columns
    if unknown:
        raise FilterError(
            f"{context} names unknown column(s) {', '.join(sorted(unknown))}; "
            f"allowed columns: {', '.join(sorted(allowed_columns))}"
        )
    return expr
