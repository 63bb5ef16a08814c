"""The small pieces every frame-in/frame-out function shares (stats, spc, disclosure).

A function accepts a DataFrame or a LazyFrame, works lazily, and returns the type it was given;
column arguments may be names or expressions. Pure: knows nothing of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import polars as pl

__all__ = ["FrameT", "IntoExpr", "as_expr", "by_list", "to_lazy", "like_input"]

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
IntoExpr = str | pl.Expr


def as_expr(x: IntoExpr) -> pl.Expr:
    """Turn a column name or an expression into an expression."""
    if isinstance(x, pl.Expr):
        return x
    if isinstance(x, str):
        return pl.col(x)
    raise TypeError(f"expected a column name or a polars expression, got {type(x).__name__}")


def by_list(by: IntoExpr | Sequence[IntoExpr] | None) -> list[pl.Expr]:
    """Grouping columns as a list of expressions (``None`` → no grouping)."""
    if by is None:
        return []
    if isinstance(by, (str, pl.Expr)):
        return [as_expr(by)]
    return [as_expr(b) for b in by]


def to_lazy(df: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    if isinstance(df, pl.DataFrame):
        return df.lazy()
    if isinstance(df, pl.LazyFrame):
        return df
    raise TypeError(f"expected a polars DataFrame or LazyFrame, got {type(df).__name__}")


def like_input(df: FrameT, lf: pl.LazyFrame) -> FrameT:
    """Collect ``lf`` if the caller gave a DataFrame; hand back the LazyFrame otherwise.

    A DataFrame is collected as eager Polars would, with the in-memory engine: on the small frames
    these functions mostly see (a few thousand values) the streaming engine's start-up costs more
    than the work (judging a refresh's values took 0.53 s with it, 0.43 s without)."""
    return lf.collect(engine="in-memory") if isinstance(df, pl.DataFrame) else lf  # type: ignore[return-value]
