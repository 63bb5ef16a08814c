"""Tests for metrics.disclosure: hand-built tables for each rule, and property tests in which an
integer-programming attacker tries to recover withheld counts (see the threat model in the
module docstring).

The attacker is deliberately strong: it knows every *published* count exactly (values are
published unrounded, so a rounded count can usually be undone — see
``test_rounding_is_not_protection``), the place total when it is published, that every breakdown
of a place sums to that total, and (for G1) the reason each cell was withheld. It combines all
breakdowns of the place at once (sex against age band against neighbourhood). A withheld count
counts as recovered if its feasible range is at most five values wide (known to ±2).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from metrics.disclosure import suppress, suppression_summary

KEYS = dict(metric_id="m1", period_type="financial_year", period_start="2024-04-01")


def table(rows: list[tuple], place: str = "Dudley", **extra) -> pl.DataFrame:
    """rows: (breakdown, group, numerator[, denominator])."""
    out = []
    for r in rows:
        d = dict(KEYS, place=place, breakdown=r[0], group=r[1], numerator=r[2])
        d["denominator"] = r[3] if len(r) > 3 else None
        out.append(d)
    df = pl.DataFrame(out, schema_overrides={"numerator": pl.Int64, "denominator": pl.Int64})
    df = df.with_columns(value=pl.col("numerator") * 1.5, lower_95=pl.col("numerator") * 1.0,
                         upper_95=pl.col("numerator") * 2.0)  # fmt: skip
    return df.with_columns(**{k: pl.lit(v) for k, v in extra.items()})


def numerators(out: pl.DataFrame) -> dict[tuple[str, str], int | None]:
    return {(r["breakdown"], r["group"]): r["numerator"] for r in out.iter_rows(named=True)}


# ================================================================================ hand-built


def test_primary_suppression_and_rounding():
    df = table([("overall", "Dudley", 160, 1000), ("nbhd", "A", 0, 100), ("nbhd", "B", 1, 100),
                ("nbhd", "C", 7, 200), ("nbhd", "D", 8, 300), ("nbhd", "E", 144, 300)])  # fmt: skip
    out = suppress(df)
    got = numerators(out)
    assert got[("nbhd", "A")] == 0  # zero is published
    assert got[("nbhd", "B")] is None and got[("nbhd", "C")] is None  # 1 and 7 withheld
    assert got[("overall", "Dudley")] == 160 and got[("nbhd", "E")] == 145  # rounded to 5
    assert out["denominator"].to_list() == [1000, 100, 100, 200, 300, 300]  # denominators all ≥ 8
    assert out.schema["numerator"] == pl.Int64
    b = out.row(2, named=True)
    assert b["value"] is None and b["lower_95"] is None and b["upper_95"] is None and b["suppressed"]
    assert b["suppression_note"] == "numerator: count below 8 suppressed"
    e = out.row(5, named=True)
    assert e["value"] == 144 * 1.5 and not e["suppressed"] and e["suppression_note"] is None  # value unrounded


def test_rounding_to_nearest_five():
    df = table([("overall", "P", v) for v in [0, 8, 12, 13, 17, 18, 100, 1002]])
    df = df.with_columns(place=pl.Series([f"p{i}" for i in range(df.height)]))
    assert suppress(df, count_columns=["numerator"])["numerator"].to_list() == [0, 10, 10, 15, 15, 20, 100, 1000]
    assert suppress(df, count_columns=["numerator"], round_to=None)["numerator"].to_list() == [
        0, 8, 12, 13, 17, 18, 100, 1002]  # fmt: skip
    floats = df.with_columns(pl.col("numerator").cast(pl.Float64))
    assert suppress(floats, count_columns=["numerator"])["numerator"].to_list()[:3] == [0.0, 10.0, 10.0]


def test_one_small_group_takes_a_second_group_with_it():
    # Female 3 could be recovered as 123 − 120: Male is withheld too
    out = suppress(table([("overall", "Dudley", 123), ("sex", "Female", 3), ("sex", "Male", 120)]))
    assert numerators(out) == {("overall", "Dudley"): 125, ("sex", "Female"): None, ("sex", "Male"): None}
    assert out["suppression_note"][2] == (
        "numerator: secondary suppression: withheld so a small count can't be derived from the total"
    )
    assert out["value"][2] is None


def test_the_secondary_group_must_leave_enough_margin():
    # a primary 3 with the 9 withheld beside it: the pair sums to 12 and a withheld non-small
    # count is ≥ 8, so the 3 would be known to be 1..4 (3 ± 1.5). The smallest group leaving the
    # 3 anywhere in 1..7 is the 20 (it sums with the 3 to 23: 20 is ≥ 8, so the 3 is ≤ 15, i.e.
    # anything from 1 to 7).
    out = suppress(table([("overall", "P", 132), ("age", "0-17", 3), ("age", "18-64", 9),
                          ("age", "65-84", 20), ("age", "85+", 100)]))  # fmt: skip
    assert numerators(out) == {("overall", "P"): 130, ("age", "0-17"): None, ("age", "18-64"): 10,
                               ("age", "65-84"): None, ("age", "85+"): 100}  # fmt: skip
    # with only small margins available, as many as needed are taken, smallest first
    out = suppress(table([("overall", "P", 39), ("age", "a", 3), ("age", "b", 9), ("age", "c", 9),
                          ("age", "d", 9), ("age", "e", 9)]))  # fmt: skip
    assert numerators(out) == {("overall", "P"): 40, ("age", "a"): None, ("age", "b"): None,
                               ("age", "c"): None, ("age", "d"): None, ("age", "e"): 10}  # fmt: skip
    # ties between equal counts go to the first group label
    out = suppress(table([("overall", "P", 53), ("sex", "Male", 25), ("sex", "Female", 25), ("sex", "Other", 3)]))
    assert numerators(out)[("sex", "Female")] is None and numerators(out)[("sex", "Male")] == 25


def test_several_small_groups():
    # 1 and 7 withheld: each is somewhere in 1..7 whatever the other is — nothing more needed
    out = suppress(table([("overall", "P", 108), ("nbhd", "A", 1), ("nbhd", "B", 7), ("nbhd", "C", 100)]))
    assert numerators(out) == {("overall", "P"): 110, ("nbhd", "A"): None, ("nbhd", "B"): None, ("nbhd", "C"): 100}
    # 1 and 1: their sum (2) gives both away, so the 100 goes too
    out = suppress(table([("overall", "P", 102), ("nbhd", "A", 1), ("nbhd", "B", 1), ("nbhd", "C", 100)]))
    assert numerators(out)[("nbhd", "C")] is None
    # 7 and 7: the sum 14 gives both away too
    out = suppress(table([("overall", "P", 114), ("nbhd", "A", 7), ("nbhd", "B", 7), ("nbhd", "C", 100)]))
    assert numerators(out)[("nbhd", "C")] is None


def test_a_small_total():
    # the total itself is small: it is withheld, so nothing can be subtracted from it; the zero is
    # published and no secondary suppression is needed
    out = suppress(table([("overall", "P", 5), ("sex", "Female", 5), ("sex", "Male", 0),
                          ("age", "0-64", 2), ("age", "65+", 3)]))  # fmt: skip
    assert numerators(out) == {("overall", "P"): None, ("sex", "Female"): None, ("sex", "Male"): 0,
                               ("age", "0-64"): None, ("age", "65+"): None}  # fmt: skip
    assert out["suppression_note"][0] == "numerator: count below 8 suppressed"


def test_a_total_that_cannot_protect_its_groups_is_withheld():
    # 9 split 2, 2, 2, 2, 1: with all five withheld their sum (9) still pins each to 1..5, so the
    # total is withheld; the sex breakdown (9, 0) would rebuild the total, so its 9 is withheld
    # too; the age breakdown (4, 5) already withholds everything
    out = suppress(table([("overall", "P", 9), ("nbhd", "A", 2), ("nbhd", "B", 2), ("nbhd", "C", 2),
                          ("nbhd", "D", 2), ("nbhd", "E", 1), ("sex", "Female", 9), ("sex", "Male", 0),
                          ("age", "0-64", 4), ("age", "65+", 5)]))  # fmt: skip
    got = numerators(out)
    assert got[("overall", "P")] is None and got[("sex", "Female")] is None and got[("sex", "Male")] == 0
    notes = dict(zip(out["group"], out["suppression_note"]))
    assert "total withheld" in notes["P"] and "can't be rebuilt" in notes["Female"]
    # a total of 8 split 1 and 7 is fine: each could be anything from 1 to 7
    out = suppress(table([("overall", "P", 8), ("sex", "Female", 1), ("sex", "Male", 7)]))
    assert numerators(out)[("overall", "P")] == 10


def test_tables_are_separate():
    # one call over several places, metrics and periods gives the same as one call per table
    rng = np.random.default_rng(3)
    frames = []
    for place in ("Dudley", "Walsall"):
        for metric in ("m1", "m2"):
            for start in ("2023-04-01", "2024-04-01"):
                groups = rng.choice([0, 2, 5, 9, 15, 40, 200], 5)
                frames.append(table([("overall", place, int(groups.sum()))]
                                    + [("nbhd", f"N{i}", int(g)) for i, g in enumerate(groups)], place=place)
                              .with_columns(metric_id=pl.lit(metric), period_start=pl.lit(start)))  # fmt: skip
    together = suppress(pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=1))
    for f in frames:
        alone = suppress(f)
        key = f.select("place", "metric_id", "period_start").row(0)
        mine = together.filter(pl.struct("place", "metric_id", "period_start") == pl.struct(
            place=pl.lit(key[0]), metric_id=pl.lit(key[1]), period_start=pl.lit(key[2])))
        assert numerators(mine) == numerators(alone)


def test_numerator_and_denominator_are_protected_separately():
    out = suppress(table([("overall", "P", 60, 500), ("sex", "F", 4, 250), ("sex", "M", 56, 250)]))
    # both numerators withheld (primary + secondary); both denominators published; values withheld
    assert out["numerator"].to_list() == [60, None, None]
    assert out["denominator"].to_list() == [500, 250, 250]
    assert out["value"].to_list()[1:] == [None, None]
    out = suppress(table([("overall", "P", 0, 20), ("sex", "F", 0, 5), ("sex", "M", 0, 15)]))
    assert out["denominator"].to_list() == [20, None, None] and out["numerator"].to_list() == [0, 0, 0]


def test_dsr_with_fewer_than_ten_events():
    df = table([("overall", "P", 9), ("overall", "Q", 10), ("overall", "R", 3)])
    df = df.with_columns(place=pl.Series(["P", "Q", "R"]))
    out = suppress(df, count_columns=["numerator"], dsr_min_events=10)
    assert out["numerator"].to_list() == [10, 10, None]
    assert out["value"].to_list() == [None, 15.0, None]
    assert out["suppressed"].to_list() == [True, False, True]
    assert out["suppression_note"][0] == "DSR not published: fewer than 10 events"
    only_q = suppress(df, count_columns=["numerator"], dsr_min_events=10, dsr_rows=pl.col("place") == "Q")
    assert only_q["value"].to_list() == [13.5, 15.0, None]


def test_lazy_in_lazy_out_and_errors():
    df = table([("overall", "P", 123), ("sex", "F", 3), ("sex", "M", 120)])
    lazy = suppress(df.lazy())
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect().columns == [*df.columns, "suppressed", "suppression_note"]
    with pytest.raises(ValueError, match="not in the frame"):
        suppress(df, count_columns=["cases"])
    with pytest.raises(ValueError, match="breakdown"):
        suppress(df, group_by=["metric_id", "place"])


def test_summary():
    out = suppress(table([("overall", "P", 123), ("sex", "F", 3), ("sex", "M", 120)]), count_columns=["numerator"])
    assert suppression_summary(out) == (
        "Small numbers: counts of 1 to 7 suppressed in 1 row; 1 further row withheld so suppressed counts "
        "cannot be derived from totals; other counts rounded to the nearest 5; values and intervals are "
        "calculated on unrounded counts."
    )


def test_rounding_is_not_protection():
    # why the attacker below knows published counts exactly: a proportion published unrounded with
    # its counts rounded to 5 usually has only one (numerator, denominator) pair within ±2 of them
    num, den = 21, 23
    value = num / den * 100
    out = suppress(table([("overall", "P", num, den)]).with_columns(value=pl.lit(value)))
    n_r, d_r = out["numerator"][0], out["denominator"][0]
    assert (n_r, d_r) == (20, 25)
    candidates = [(n, d) for n in range(n_r - 2, n_r + 3) for d in range(d_r - 2, d_r + 3)
                  if abs(n / d * 100 - out["value"][0]) < 1e-9]  # fmt: skip
    assert candidates == [(21, 23)]


def many_tables(seed: int = 7) -> pl.DataFrame:
    """Four metrics, two places, twelve months, three breakdowns of each total: small and zero
    groups beside large ones, small denominators, and one small total that rule 3 withholds
    alongside a breakdown that would rebuild it. Every rule and note occurs; rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric in ("m1", "m2", "m3"):
        for place in ("Dudley", "Walsall"):
            for month in range(1, 13):
                sizes = rng.choice([0, 1, 2, 5, 9, 30, 200], size=12, p=[0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1])
                joint = rng.integers(0, sizes[:, None] + 1, size=(12, 1))[:, 0].reshape(2, 3, 2)
                groups = [("overall", place, joint.sum())]
                groups += [("sex", g, v) for g, v in zip(("F", "M"), joint.sum(axis=(1, 2)))]
                groups += [("age_band", g, v) for g, v in zip(("0-17", "18-64", "65+"), joint.sum(axis=(0, 2)))]
                groups += [("neighbourhood", g, v) for g, v in zip(("N1", "N2"), joint.sum(axis=(0, 1)))]
                for breakdown, group, x in groups:
                    rows.append(dict(metric_id=metric, place=place, period_type="month", period_start=f"2024-{month:02d}-01",
                                     breakdown=breakdown, group=group, numerator=int(x), denominator=int(x) + int(rng.integers(0, 12))))
    for breakdown, group, x in [("overall", "Dudley", 9), ("neighbourhood", "N1", 2), ("neighbourhood", "N2", 2),
                                ("neighbourhood", "N3", 2), ("neighbourhood", "N4", 2), ("neighbourhood", "N5", 1),
                                ("sex", "F", 9), ("sex", "M", 0)]:
        rows.append(dict(metric_id="m4", place="Dudley", period_type="month", period_start="2024-01-01",
                         breakdown=breakdown, group=group, numerator=x, denominator=x + 20))
    df = pl.DataFrame(rows)
    return df.with_columns(value=pl.col("numerator") / pl.col("denominator") * 100).sample(fraction=1.0, shuffle=True, seed=seed)


def test_output_is_pinned_on_many_tables():
    # The exact output (every count, value, flag and note) on a mixed frame, as the rules first
    # produced it: a rewrite for speed must not change one cell. Change the digest only with the rules.
    out = suppress(many_tables(), dsr_min_events=10, dsr_rows=pl.col("metric_id") == "m3")
    notes = set(out["suppression_note"].drop_nulls().str.split("; ").explode().str.replace(r"^\w+: ", ""))
    assert {"count below 8 suppressed", "DSR not published: fewer than 10 events",
            "secondary suppression: withheld so a small count can't be derived from the total",
            "secondary suppression: total withheld so small counts in its breakdowns can't be narrowed down",
            "secondary suppression: withheld so the withheld total can't be rebuilt from this breakdown"} <= notes
    assert out.height == 584 and out["suppressed"].sum() == 196
    assert hashlib.sha256(out.write_csv().encode()).hexdigest() == (
        "b87817de2082e66c05cab224d2d6b3a50e88d1af59389d218dfa516eb74257a0")


# ================================================================================ properties

K = 8
BIG = 10**6
SEXES, AGES, NBHDS = ("F", "M"), ("0-17", "18-64", "65+"), ("N1", "N2", "N3")

cell = st.one_of(st.just(0), st.integers(1, 7), st.integers(8, 40), st.integers(41, 400))


@st.composite
def place_tables(draw) -> pl.DataFrame:
    """Three breakdowns (sex, age band, neighbourhood) of one place total, as the margins of a
    joint sex × age × neighbourhood table of counts, so every breakdown sums to the total."""
    joint = np.array(draw(st.lists(cell, min_size=18, max_size=18))).reshape(2, 3, 3)
    mode = draw(st.sampled_from(["dense", "sparse", "small"]))
    if mode == "sparse":  # a few non-zero cells: small margins beside large ones
        keep = np.array(draw(st.lists(st.booleans(), min_size=18, max_size=18))).reshape(2, 3, 3)
        joint = np.where(keep & (np.arange(18).reshape(2, 3, 3) % draw(st.integers(2, 5)) == 0), joint, 0)
    elif mode == "small":  # small totals
        joint = np.where(joint > 7, joint % 3, joint)
    rows = [("overall", "P", int(joint.sum()))]
    rows += [("sex", g, int(v)) for g, v in zip(SEXES, joint.sum(axis=(1, 2)))]
    rows += [("age", g, int(v)) for g, v in zip(AGES, joint.sum(axis=(0, 2)))]
    rows += [("nbhd", g, int(v)) for g, v in zip(NBHDS, joint.sum(axis=(0, 1)))]
    return table(rows)


def attack(true: pl.DataFrame, out: pl.DataFrame, *, note_aware: bool) -> dict[tuple[str, str], tuple[int, int]]:
    """Feasible range of each withheld count, by integer programming over every breakdown."""
    rows = list(zip(true.iter_rows(named=True), out.iter_rows(named=True)))
    withheld = [(t, o) for t, o in rows if o["numerator"] is None]
    if not withheld:
        return {}
    index = {(t["breakdown"], t["group"]): i for i, (t, o) in enumerate(withheld)}
    lb, ub = np.ones(len(withheld)), np.full(len(withheld), float(BIG))
    if note_aware:
        for i, (t, o) in enumerate(withheld):
            if "count below" in o["suppression_note"]:
                ub[i] = K - 1
            else:
                lb[i] = K
    total = [o for t, o in rows if t["breakdown"] == "overall"][0]
    a_rows, rhs = [], []
    for bd in sorted({t["breakdown"] for t, o in rows} - {"overall"}):
        a = np.zeros(len(withheld))
        published = 0
        for t, o in rows:
            if t["breakdown"] == bd:
                if o["numerator"] is None:
                    a[index[(bd, t["group"])]] = 1
                else:
                    published += t["numerator"]  # the attacker knows published counts exactly
        if total["numerator"] is None:
            a[index[("overall", "P")]] -= 1
            rhs.append(-published)
        else:
            rhs.append(true.filter(pl.col("breakdown") == "overall")["numerator"][0] - published)
        a_rows.append(a)
    constraint = LinearConstraint(np.array(a_rows), rhs, rhs)
    ranges = {}
    for key, i in index.items():
        ends = []
        for sign in (1, -1):
            c = np.zeros(len(withheld))
            c[i] = sign
            res = milp(c, integrality=np.ones(len(withheld)), bounds=Bounds(lb, ub), constraints=constraint)
            assert res.success, res.message  # the truth is always feasible
            ends.append(round(res.x[i]))
        ranges[key] = (ends[0], ends[1])
    return ranges


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(place_tables())
def test_no_published_count_is_small(df):
    out = suppress(df)
    true = dict(zip(zip(df["breakdown"], df["group"]), df["numerator"]))
    for (bd, g), n in numerators(out).items():
        if n is not None:
            assert n == 0 or n >= K
            assert true[(bd, g)] == 0 or true[(bd, g)] >= K
        if true[(bd, g)] is not None and 1 <= true[(bd, g)] < K:
            assert n is None


@SETTINGS
@given(place_tables())
def test_g1_note_aware_attacker_cannot_pin_a_small_count_when_the_total_is_published(df):
    out = suppress(df, count_columns=["numerator"])
    if out.filter(pl.col("breakdown") == "overall")["numerator"][0] is None:
        return  # G1 is about published totals; see the module docstring for small totals
    notes = dict(zip(zip(out["breakdown"], out["group"]), out["suppression_note"]))
    for key, (lo, hi) in attack(df, out, note_aware=True).items():
        if "count below" in notes[key]:
            assert hi - lo >= 5, f"{key} pinned to {lo}..{hi}"


@SETTINGS
@given(place_tables())
def test_g2_attacker_without_notes_cannot_pin_any_withheld_count(df):
    out = suppress(df, count_columns=["numerator"])
    for key, (lo, hi) in attack(df, out, note_aware=False).items():
        assert hi - lo >= 5, f"{key} pinned to {lo}..{hi}"


def test_known_limitation_small_totals_and_notes():
    # documented, not guaranteed: a total below the threshold shared by five groups. Everything
    # non-zero is withheld, but the published zero and the notes (the total and each group are
    # "below 8") tell a note-aware attacker that five groups of at least 1 share at most 7: each
    # is 1..3. Without the notes nothing is learnt.
    df = table([("overall", "P", 5)] + [("age", f"a{i}", 1) for i in range(5)] + [("age", "a5", 0)])
    out = suppress(df, count_columns=["numerator"])
    assert out["numerator"].to_list() == [None] * 6 + [0]
    assert attack(df, out, note_aware=True)[("age", "a0")] == (1, 3)
    assert attack(df, out, note_aware=False)[("age", "a0")] == (1, BIG - 4)


def test_known_limitation_order_aware_attacker():
    # documented, not guaranteed: the secondary (20) is chosen as the smallest group with enough
    # margin, and the next one (21) is published. An attacker who knows that order rule knows the
    # secondary is at most 21, so the 3 is at least 23 − 21 = 2: 2..7 instead of 1..7 (still not ±2).
    out = suppress(table([("overall", "P", 44), ("age", "a", 3), ("age", "b", 20), ("age", "c", 21)]))
    assert numerators(out) == {("overall", "P"): 45, ("age", "a"): None, ("age", "b"): None, ("age", "c"): 20}


def test_docstring_examples():
    import doctest

    from metrics import disclosure

    result = doctest.testmod(disclosure, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 3
