"""Tests for metrics.spc.xmr against the NHSRplotthedots 0.2.2 rules (DESIGN.md §7).

(a) ``ref_*`` below is a deliberately plain, loop-based transliteration of the R functions
    ``ptd_spc_standard``, ``ptd_seven_point_one_side_mean``, ``ptd_part_of_seven_trend``,
    ``ptd_seven_point_trend``, ``ptd_two_in_three``, ``ptd_part_of_two_in_three``,
    ``ptd_special_cause_type``, ``ptd_point_type`` and ``ptd_calculate_assurance_type``, one series
    at a time. It shares no code with ``metrics.spc``; ``xmr`` must agree with it on several
    hundred random series (point types, rules, limits to 1e-9, icons).
(b) Worked examples with hand-reasoned expected results.
(c) 2,000 series × 36 points in one call.

Where the R code meets a missing value it yields NA, which ``dplyr::case_when`` treats as FALSE
(and ``ptd_seven_point_trend`` would stop with an error): the reference writes that as "a window
holding a missing value never fires". The project's deliberate departures from R (DESIGN §7 and
the module docstring): a segment whose screened moving ranges are all zero has no limits and only
common cause (R would draw limits on the mean); a rebase date between two periods starts the new
segment at the next point (R only rebases on a date that is a period); assurance is null when the
last segment has no limits (R says "inconsistent").
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from metrics.spc import xmr

TOL = 1e-9
R_LIMIT = 2.66
R_LIMITCLOSE = 2 * (R_LIMIT / 3)


# ============================================================================ (a) the reference


def r_mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def r_sign(x):
    if x is None:
        return None
    return (x > 0) - (x < 0)


def ref_standard(y, *, screen_outliers=True, min_points=2):
    """ptd_spc_standard for one segment: mean, limits and the per-point flags."""
    n = len(y)
    mean = r_mean(y)
    mr = [None] + [
        abs(y[i] - y[i - 1]) if y[i] is not None and y[i - 1] is not None else None for i in range(1, n)
    ]
    amr = r_mean(mr)
    if screen_outliers and amr is not None:
        mr = [m if m is not None and m < 3.267 * amr else None for m in mr]
    amr = r_mean(mr)
    n_values = sum(v is not None for v in y)
    has_limits = amr is not None and amr > 0 and n_values >= min_points  # DESIGN §7
    if has_limits:
        lpl, upl = mean - R_LIMIT * amr, mean + R_LIMIT * amr
        nlpl, nupl = mean - R_LIMITCLOSE * amr, mean + R_LIMITCLOSE * amr
    else:
        lpl = upl = nlpl = nupl = None
    rows = []
    for i, v in enumerate(y):
        if v is None or not has_limits:
            outside, rtm, close, beyond2 = None, r_sign(None if v is None else v - mean), None, None
        else:
            outside = v > upl or v < lpl
            rtm = r_sign(v - mean)
            beyond2 = v < nlpl or v > nupl
            close = (not outside) and beyond2
        rows.append(
            dict(y=v, mean=mean, lpl=lpl, upl=upl, nlpl=nlpl, nupl=nupl, mr_raw=None, outside=outside,
                 rtm=rtm, close=close, beyond2=beyond2)  # fmt: skip
        )
    for i in range(1, n):
        if y[i] is not None and y[i - 1] is not None:
            rows[i]["mr_raw"] = abs(y[i] - y[i - 1])
    return rows, has_limits


def ref_seven_point_one_side_mean(v):
    vp = [0] * 6 + list(v)
    out = []
    for i in range(6, len(vp)):
        window = vp[i - 6 : i + 1]
        if any(w is None for w in window):
            out.append(0)  # NA in R
        else:
            out.append(1 if all(w == vp[i] for w in window) and vp[i] != 0 else 0)
    return out


def ref_part_of_seven_trend(v):
    vp = list(v) + [0] * 6
    return [1 if any(abs(vp[i + k]) == 1 for k in range(7)) else 0 for i in range(len(v))]


def ref_seven_point_trend(y):
    if len(y) < 7:
        return [0] * len(y)
    out = [0] * 6
    for i in range(6, len(y)):
        window = [y[i - k] for k in range(7)]  # y[i], y[i-1], ..., y[i-6]
        if any(w is None for w in window):
            out.append(0)  # R: NA (an error in `if`)
            continue
        d = [r_sign(window[k] - window[k + 1]) for k in range(6)]
        out.append(1 if all(s == 1 for s in d) else -1 if all(s == -1 for s in d) else 0)
    return out


def ref_two_in_three(v, rtm):
    vp = [0, 0] + list(v) + [0, 0]
    rp = [0, 0] + list(rtm) + [0, 0]
    out = []
    for i in range(len(v)):
        fired = False
        for a in range(3):  # the windows ending at i, i + 1 and i + 2
            wv, wr = vp[i + a : i + a + 3], rp[i + a : i + a + 3]
            if any(w is None for w in wv + wr):
                continue  # NA
            if sum(wv) >= 2 and abs(sum(wr)) == 3:
                fired = True
        out.append(1 if fired else 0)
    return out


def ref_special_cause_type(y, rtm, zone, outside):
    """Returns (rule, high) per point; rule None is common cause."""
    n = len(y)
    part_trend = ref_part_of_seven_trend(ref_seven_point_trend(y))
    two3 = ref_two_in_three(zone, rtm)
    part_two3 = [1 if two3[i] == 1 and zone[i] == 1 else 0 for i in range(n)]
    part_shift = ref_part_of_seven_trend(ref_seven_point_one_side_mean(rtm))

    sdy = [r_sign(y[i + 1] - y[i]) if y[i + 1] is not None and y[i] is not None else None for i in range(n - 1)]
    direction = []
    for i in range(n):
        next_in_trend = part_trend[i + 1] if i + 1 < n else 0
        if next_in_trend and part_trend[i]:
            direction.append(sdy[i] if i < n - 1 else sdy[-1])
        else:
            direction.append(0 if i == 0 else sdy[i - 1])

    out = []
    for i in range(n):
        if outside[i]:
            out.append(("outside_limits", rtm[i] == 1))
        elif part_trend[i]:
            out.append(("trend", direction[i] == 1))
        elif part_two3[i]:
            out.append(("two_in_three", rtm[i] > 0))
        elif part_shift[i]:
            out.append(("shift", rtm[i] > 0))
        else:
            out.append((None, None))
    return out


def ref_point_type(rule, high, improvement):
    if rule is None:
        return "common_cause"
    if improvement == "neutral":
        return "special_cause_neutral_high" if high else "special_cause_neutral_low"
    good = high if improvement == "increase" else not high
    return "special_cause_improvement" if good else "special_cause_concern"


def ref_variation_icon(point_type, improvement):
    return {
        "common_cause": "common_cause",
        "special_cause_neutral_high": "neutral_high",
        "special_cause_neutral_low": "neutral_low",
        "special_cause_improvement": "improvement_high" if improvement == "increase" else "improvement_low",
        "special_cause_concern": "concern_low" if improvement == "increase" else "concern_high",
    }[point_type]


def ref_assurance(target, lpl, upl, improvement):
    if target is None or improvement == "neutral" or upl is None:
        return None
    increasing = improvement == "increase"
    if target > upl:
        return "consistent_fail" if increasing else "consistent_pass"
    if target < lpl:
        return "consistent_pass" if increasing else "consistent_fail"
    return "inconsistent"


def ref_series(periods, y, *, target=None, rebase=(), improvement="increase", screen_outliers=True,
               counts_beyond=False, min_points=2, trial_below=13):  # fmt: skip
    """All the outputs of xmr for one series (points given in period order)."""
    n = len(y)
    raw = [sum(1 for d in rebase if d <= p) for p in periods]
    segment, seen = [], {}
    for r in raw:
        seen.setdefault(r, len(seen) + 1)
        segment.append(seen[r])
    rows = []
    for s in sorted(set(segment)):
        idx = [i for i in range(n) if segment[i] == s]
        ys = [y[i] for i in idx]
        std, has_limits = ref_standard(ys, screen_outliers=screen_outliers, min_points=min_points)
        if has_limits:
            zone = [1 if (r["beyond2"] if counts_beyond else r["close"]) else (None if r["y"] is None else 0)
                    for r in std]  # fmt: skip
            outside = [bool(r["outside"]) for r in std]
            types = ref_special_cause_type(ys, [r["rtm"] for r in std], zone, outside)
        else:
            types = [(None, None)] * len(ys)
        for r, (rule, high) in zip(std, types):
            if r["y"] is None:
                rule = None
            r.update(segment=s, rule=rule, point_type=ref_point_type(rule, high, improvement),
                     n_values=sum(v is not None for v in ys))  # fmt: skip
            rows.append(r)
    last = rows[-1]
    for r in rows:
        r["variation_icon"] = ref_variation_icon(last["point_type"], improvement)
        r["assurance_icon"] = ref_assurance(target, last["lpl"], last["upl"], improvement)
        r["trial_limits"] = last["n_values"] < trial_below
    return rows


# ------------------------------------------------------------------------------- random series

START = dt.date(2020, 1, 1)


def month(i: int) -> dt.date:
    return dt.date(START.year + (START.month - 1 + i) // 12, (START.month - 1 + i) % 12 + 1, 1)


def random_series(rng: np.random.Generator) -> tuple[list[float | None], list[dt.date], float | None]:
    n = int(rng.choice([1, 2, 3, 5, 7, 8, 12, 13, 20, 24, 36, 40]))
    kind = rng.choice(["noise", "shift", "drift", "outliers", "ties", "constant", "zigzag", "runs"])
    t = np.arange(n)
    if kind == "noise":
        y = rng.normal(50, 5, n).round()
    elif kind == "shift":
        y = rng.normal(50, 3, n).round() + np.where(t >= rng.integers(0, max(n, 1)), rng.integers(4, 12), 0)
    elif kind == "drift":
        y = (rng.normal(0, 2, n) + t * rng.choice([-1.5, 1.5, 3])).round()
    elif kind == "outliers":
        y = rng.normal(50, 3, n).round()
        y[rng.random(n) < 0.15] += rng.choice([-30, 30])
    elif kind == "ties":
        y = rng.integers(0, 4, n).astype(float)
    elif kind == "constant":
        y = np.full(n, 7.0)
        if n > 3 and rng.random() < 0.5:
            y[-1] = 40.0  # screened moving ranges all zero
    elif kind == "zigzag":
        y = np.cumsum(rng.choice([-1.0, 0.0, 1.0, 2.0], n)) + 20
    else:  # long monotone runs with occasional ties
        y = np.cumsum(rng.choice([1.0, 1.0, 1.0, 0.0, -2.0], n)) * rng.choice([-1, 1])
    if rng.random() < 0.5:
        y = y / 4  # quarter steps: still exact in binary, so means are computed exactly
    values: list[float | None] = [float(v) for v in y]
    if rng.random() < 0.25:
        for i in np.flatnonzero(rng.random(n) < 0.1):
            values[i] = None
    periods = [month(i) for i in range(n)]
    target = None if rng.random() < 0.3 else float(round(rng.normal(np.nanmean(y), 10)))
    return values, periods, target


def random_rebase(rng: np.random.Generator) -> list[dt.date]:
    out = []
    for _ in range(int(rng.integers(0, 3))):
        d = month(int(rng.integers(0, 40)))
        out.append(d if rng.random() < 0.7 else d + dt.timedelta(days=10))  # on a period or between
    return sorted(out)


def compare(frame: pl.DataFrame, expected: dict[int, list[dict]]) -> None:
    for (sid,), got in frame.sort("series", "period").group_by("series", maintain_order=True):
        exp = expected[sid]
        assert got.height == len(exp)
        for g, e in zip(got.iter_rows(named=True), exp):
            where = f"series {sid} at {g['period']}: y={g['y']}"
            assert g["segment"] == e["segment"], where
            assert g["special_cause_rule"] == e["rule"], where
            assert g["point_type"] == e["point_type"], where
            assert g["variation_icon"] == e["variation_icon"], where
            assert g["assurance_icon"] == e["assurance_icon"], where
            assert g["trial_limits"] == e["trial_limits"], where
            for col, key in [("mean", "mean"), ("lower_limit", "lpl"), ("upper_limit", "upl"),
                             ("near_lower", "nlpl"), ("near_upper", "nupl"), ("moving_range", "mr_raw")]:  # fmt: skip
                a, b = g[col], e[key]
                assert (a is None) == (b is None), f"{where} {col}: {a} vs {b}"
                if a is not None:
                    assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), f"{where} {col}: {a} vs {b}"


@pytest.mark.parametrize(
    "seed, improvement, screen, counts_beyond",
    [
        (1, "increase", True, False),
        (2, "decrease", True, False),
        (3, "neutral", True, False),
        (4, "increase", False, False),
        (5, "decrease", True, True),
        (6, "increase", False, True),
    ],
)
def test_matches_reference_on_random_series(seed, improvement, screen, counts_beyond):
    rng = np.random.default_rng(seed)
    rows, expected, rebase_by_series = [], {}, {}
    for sid in range(120):
        values, periods, target = random_series(rng)
        rebase = random_rebase(rng)
        rebase_by_series[sid] = rebase
        expected[sid] = ref_series(periods, values, target=target, rebase=rebase, improvement=improvement,
                                   screen_outliers=screen, counts_beyond=counts_beyond)  # fmt: skip
        rows += [dict(series=sid, period=p, y=v, target=target) for p, v in zip(periods, values)]
    df = pl.DataFrame(rows, schema={"series": pl.Int64, "period": pl.Date, "y": pl.Float64, "target": pl.Float64})
    df = df.sample(fraction=1.0, shuffle=True, seed=seed)  # input order must not matter
    rebase_col = pl.DataFrame(
        {"series": list(rebase_by_series), "rebase": list(rebase_by_series.values())},
        schema={"series": pl.Int64, "rebase": pl.List(pl.Date)},
    )
    df = df.join(rebase_col, on="series", how="left")
    out = xmr(df, "y", "period", by="series", improvement=improvement, target="target", rebase_at="rebase",
              screen_outliers=screen, two_in_three_counts_beyond_limits=counts_beyond)  # fmt: skip
    assert out.select("series", "period").equals(df.select("series", "period"))  # row for row, in order
    compare(out, expected)
    # the reference run must actually exercise every rule and type
    seen = set(out["special_cause_rule"].drop_nulls())
    assert seen == {"outside_limits", "trend", "two_in_three", "shift"}, seen


# ============================================================================ (b) worked examples


def run(y, *, period=None, **kw) -> pl.DataFrame:
    period = period or list(range(1, len(y) + 1))
    return xmr(pl.DataFrame({"t": period, "y": y}, schema={"t": pl.Int64, "y": pl.Float64}), "y", "t", **kw)


def rules(out: pl.DataFrame) -> list[str | None]:
    return out["special_cause_rule"].to_list()


def types(out: pl.DataFrame) -> list[str]:
    short = {"common_cause": ".", "special_cause_improvement": "I", "special_cause_concern": "C",
             "special_cause_neutral_high": "H", "special_cause_neutral_low": "L"}  # fmt: skip
    return "".join(short[t] for t in out["point_type"])


def test_clear_shift_of_seven():
    # mean = 163/14 = 11.643; moving ranges 2 (×7) and 1 (×6): mean 20/13 = 1.538, none screened;
    # upper limit 15.73, upper 2σ line 14.37: the last seven (12/13) are all above the mean, and
    # no point comes near a limit. No trend (the values zigzag).
    y = [10, 12, 10, 12, 10, 12, 10, 12, 13, 12, 13, 12, 13, 12]
    out = run(y)
    assert out["mean"][0] == pytest.approx(163 / 14)
    assert out["upper_limit"][0] == pytest.approx(163 / 14 + 2.66 * 20 / 13)
    assert rules(out) == [None] * 7 + ["shift"] * 7
    assert types(out) == "." * 7 + "I" * 7
    assert types(run(y, improvement="decrease")) == "." * 7 + "C" * 7
    # six above is not enough: drop the first of the seven below the mean
    assert rules(run(y[:7] + [11] + y[8:])) == [None] * 14


def test_point_on_the_mean_breaks_a_run():
    # mean exactly 10 (sum 140 over 14); the 10s sit on the mean and break both runs of seven
    y = [11, 12, 11, 10, 12, 11, 12, 9, 8, 9, 10, 8, 9, 8]
    out = run(y)
    assert out["mean"][0] == 10
    # upper 2σ line = 10 + 1.7733 × 17/13 = 12.32: no point is near a limit
    assert out["near_upper"][0] > 12 and out["near_lower"][0] < 8
    assert rules(out) == [None] * 14
    # with the 10s moved off the mean (to 11 and 9, the mean stays 10) both runs count; the
    # limits tighten (mean moving range 13/13 = 1, 2σ lines 11.77 / 8.23), so the 12s and 8s are
    # now in the 2σ zone: windows (12, 11, 12) and (8, 9, 8) are two-in-three, which outranks shift
    moved = y[:3] + [11] + y[4:10] + [9] + y[11:]
    out = run(moved)
    assert out["near_upper"][0] == pytest.approx(10 + 2 * 2.66 / 3)
    assert rules(out) == ["shift", "shift", "shift", "shift", "two_in_three", "shift", "two_in_three",
                          "shift", "shift", "shift", "shift", "two_in_three", "shift", "two_in_three"]  # fmt: skip
    assert types(out) == "I" * 7 + "C" * 7


# A calibration prefix with large moving ranges keeps the limits wide (mean moving range ≈ 6-7),
# so the short runs of unit steps in the trend examples stay well inside them.
WIDE = [0.0, 20.0, 0.0, 20.0, 0.0, 20.0]


def test_trend_of_seven_all_flagged_and_a_tie_breaks_it():
    rising = [5, 6, 7, 8, 9, 10, 11]
    out = run(WIDE + rising + [10])
    assert out["upper_limit"][0] > 25 and out["lower_limit"][0] < -5
    assert rules(out) == [None] * 6 + ["trend"] * 7 + [None]
    assert types(out) == "." * 6 + "I" * 7 + "."
    assert types(run(WIDE + rising + [10], improvement="decrease")) == "." * 6 + "C" * 7 + "."
    # a tie in the middle: 5, 6, 7, 8, 8, 9, 10, 11 has runs of 4 and 4 — no trend
    tied = [5, 6, 7, 8, 8, 9, 10, 11]
    assert rules(run(WIDE + tied + [10])) == [None] * 15
    # strictly falling seven (after a prefix ending low, so the step into it rises): all flagged, low
    out = run(WIDE[::-1] + rising[::-1] + [12])
    assert rules(out) == [None] * 6 + ["trend"] * 7 + [None]
    assert types(out) == "." * 6 + "C" * 7 + "."


def test_trend_direction_at_a_peak_and_a_trough():
    # Λ: seven rising to a peak, seven falling from it (the peak is in both trends). A trend
    # point's direction is the step to the next point when that point is in a trend too: the peak
    # steps down, so it reads as falling (concern when higher is better) although it is the highest.
    peak = [5, 6, 7, 8, 9, 10, 11, 10, 9, 8, 7, 6, 5]
    out = run(WIDE + peak)
    assert rules(out)[6:] == ["trend"] * 13
    assert types(out)[6:] == "IIIIII" + "C" + "CCCCCC"
    # V: seven falling to a trough, seven rising; the trough steps up, so it reads as rising
    trough = [11, 10, 9, 8, 7, 6, 5, 6, 7, 8, 9, 10, 11]
    out = run(WIDE[::-1] + trough)
    assert rules(out)[5:] == [None] + ["trend"] * 13
    assert types(out)[6:] == "CCCCCC" + "I" + "IIIIII"
    # the last point of a trend whose next point is not in a trend reads from the step before it
    out = run(WIDE[::-1] + [11, 10, 9, 8, 7, 6, 5, 9])
    assert types(out)[6:] == "C" * 7 + "."


def test_flat_step_between_two_trends_reads_as_falling():
    # rising 7, a flat step, rising 7 again: the last point of the first trend steps (flat) to a
    # point that is in a trend, and only a rising step counts as rising, so it reads as falling
    y = WIDE + [1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13]
    out = run(y)
    assert rules(out)[6:] == ["trend"] * 14
    assert types(out)[6:] == "IIIIII" + "C" + "IIIIIII"


def test_two_in_three_flags_only_the_points_in_the_zone():
    base = [9, 11, 9, 11, 9, 11, 10, 10]
    tail = [8, 10, 8, 10, 8]
    # mean 10.375, upper 2σ line 15.22, upper limit 17.65: the 15.5s are in the zone, the 11
    # between them is above the mean but not in the zone — only the two 15.5s are flagged
    out = run(base + [15.5, 11, 15.5] + tail)
    assert out["near_upper"][0] < 15.5 < out["upper_limit"][0] and out["mean"][0] < 11 < out["near_upper"][0]
    assert rules(out) == [None] * 8 + ["two_in_three", None, "two_in_three"] + [None] * 5
    assert types(out)[8:11] == "I.I"
    # all three must be on the same side of the mean: with a 10 in the middle (the mean is now
    # 10.3125 and the 2σ line 15.40, so the 15.5s are still in the zone) nothing fires
    out = run(base + [15.5, 10, 15.5] + tail)
    assert out["near_upper"][0] < 15.5 < out["upper_limit"][0] and 10 < out["mean"][0]
    assert rules(out) == [None] * 16
    # one zone point in a window is not enough: the 15 (2σ line 13.35, limit 15.19) stays common
    # cause; further on, the 6s (2σ line 6.02) make (6, 8, 6) a two-in-three below the mean
    out = run(base + [15, 12, 12] + [8, 6, 8, 6, 8])
    assert out["near_upper"][0] < 15 < out["upper_limit"][0] and out["near_lower"][0] > 6
    assert rules(out) == [None] * 12 + ["two_in_three", None, "two_in_three", None]
    assert types(out)[12:15] == "C.C"


def test_two_in_three_window_must_lie_inside_the_series():
    # two zone points at the start (2σ line 13.22, limit 14.58), then a point below the mean
    # (10.5): the only window holding both is (14, 14, 10), which is not all on one side; a
    # window reaching before the first point does not exist
    out = run([14, 14, 10, 9, 11, 9, 11, 9, 11, 10, 10, 10, 9, 11, 9, 11])
    assert out["near_upper"][0] < 14 < out["upper_limit"][0] and out["mean"][0] > 10
    assert rules(out) == [None] * 16
    # and the same at the end
    out = run([10, 9, 11, 9, 11, 9, 11, 9, 11, 9, 11, 10, 10, 8, 14, 14])
    assert out["near_upper"][0] < 14 < out["upper_limit"][0] and out["mean"][0] > 8
    assert rules(out) == [None] * 16


def test_two_in_three_counting_points_beyond_the_limits():
    # 15.5 is in the zone (2σ line 14.92, limit 16.59), 30 beyond the limit, 12 above the mean
    # (11.56): by NHSRplotthedots only one point of (15.5, 30, 12) is *in* the zone, so only the
    # outside point is special; MDC Excel counts the outside point towards the two
    y = [9, 11, 9, 11, 9, 11, 10, 10, 9, 11, 9, 11] + [15.5, 30, 12, 9, 10]
    out = run(y)
    assert out["near_upper"][0] < 15.5 < out["upper_limit"][0] < 30 and out["mean"][0] < 12
    assert rules(out)[12:] == [None, "outside_limits", None, None, None]
    out = run(y, two_in_three_counts_beyond_limits=True)
    assert rules(out)[12:] == ["two_in_three", "outside_limits", None, None, None]


def test_a_point_exactly_on_a_limit_is_not_outside():
    # mean exactly 100, mean moving range exactly 50 (no range reaches 3.267 × 50), so the upper
    # limit is 100 + 2.66 × 50 = 233 exactly — the value of the last point
    y = [137, 137, 43, 103, 48, 78, 73, 50, 98, 233]
    out = run(y)
    assert out["mean"][0] == 100 and out["upper_limit"][0] == 233.0
    assert rules(out) == [None] * 10
    mirrored = [200 - v for v in y]  # lower limit -33 exactly, on the last point
    out = run(mirrored)
    assert out["lower_limit"][0] == -33.0
    assert rules(out) == [None] * 10
    # assurance: a target exactly on a limit is within the limits
    assert run(y, target=233)["assurance_icon"][0] == "inconsistent"
    assert run(y, target=233.5)["assurance_icon"][0] == "consistent_fail"


def test_screening_changes_the_limits():
    # moving ranges 1 (×9) and 20: mean (9 + 20) / 10 = 2.9; 20 ≥ 3.267 × 2.9 = 9.47 is screened,
    # leaving a mean moving range of 1; unscreened it stays 2.9. The mean keeps every point
    # (136 / 11 = 12.36).
    y = [10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 31]
    mean = 136 / 11
    screened = run(y)
    plain = run(y, screen_outliers=False)
    assert screened["mean"][0] == plain["mean"][0] == pytest.approx(mean)
    assert screened["upper_limit"][0] == pytest.approx(mean + 2.66 * 1.0)
    assert plain["upper_limit"][0] == pytest.approx(mean + 2.66 * 2.9)
    assert screened["moving_range"].to_list()[-1] == 20  # the reported moving range is unscreened
    # screened: lower 2σ line 10.59, lower limit 9.70, so the 10s are in the zone (two-in-three,
    # which outranks the run of ten below the mean); unscreened the first ten are a plain shift
    assert rules(screened) == ["two_in_three", "shift"] * 5 + ["outside_limits"]
    assert rules(plain) == ["shift"] * 10 + ["outside_limits"]


def test_a_moving_range_exactly_at_the_screening_threshold_is_screened():
    # moving ranges 3267, 748 (×8) and 749: mean 10000 / 10 = 1000, and 3.267 × 1000 = 3267
    # exactly, so the first range is screened ("≥"), leaving a mean of 6733 / 9
    y = [0, 3267, 2519, 3267, 2519, 3267, 2519, 3267, 2519, 3267, 2518]
    out = run(y)
    mean = sum(y) / len(y)
    assert out["upper_limit"][0] == pytest.approx(mean + 2.66 * 6733 / 9)
    # one less (3266 < 3.267 × 999.9 = 3266.67) is kept
    out = run([1] + y[1:])
    assert out["upper_limit"][0] == pytest.approx((sum(y) + 1) / len(y) + 2.66 * 999.9)


def test_rebasing_starts_new_limits():
    before = [10, 12, 11, 10, 12, 11, 10, 12, 11, 10]
    after = [20, 22, 21, 20, 22, 21, 20, 22, 21, 20]
    months = [month(i) for i in range(20)]
    df = pl.DataFrame({"t": months, "y": [float(v) for v in before + after]})
    plain = xmr(df, "y", "t")
    assert plain["segment"].unique().to_list() == [1]
    assert plain["special_cause_rule"].null_count() < 20  # the level change is special cause
    rebased = xmr(df, "y", "t", rebase_at=month(10))
    assert rebased["segment"].to_list() == [1] * 10 + [2] * 10
    assert rebased["mean"].to_list() == [10.9] * 10 + [20.9] * 10
    assert rebased["special_cause_rule"].null_count() == 20
    assert rebased["trial_limits"].to_list() == [True] * 20  # 10 points in the last segment
    # a date between two periods starts the segment at the next period; boolean flags work too
    between = xmr(df, "y", "t", rebase_at=[month(9) + dt.timedelta(days=3)])
    assert between["segment"].to_list() == [1] * 10 + [2] * 10
    flags = xmr(df.with_columns(r=pl.col("t") == month(10)), "y", "t", rebase_at="r")
    assert flags["segment"].to_list() == [1] * 10 + [2] * 10
    # a rebase date on or before the first period does not split anything
    assert xmr(df, "y", "t", rebase_at=[month(0), month(-3)])["segment"].unique().to_list() == [1]


def test_assurance_for_increase_and_decrease():
    y = [10, 12, 11, 13, 12, 11, 12, 10, 11, 12, 13, 11, 12]
    out = run(y)
    lo, hi = out["lower_limit"][0], out["upper_limit"][0]
    assert 5 < lo < 9 and 15 < hi < 17
    cases = [  # target, increase, decrease
        (20, "consistent_fail", "consistent_pass"),
        (4, "consistent_pass", "consistent_fail"),
        (12, "inconsistent", "inconsistent"),
    ]
    for target, inc, dec in cases:
        assert run(y, target=target)["assurance_icon"].unique().to_list() == [inc]
        assert run(y, target=target, improvement="decrease")["assurance_icon"].unique().to_list() == [dec]
    assert run(y, target=12, improvement="neutral")["assurance_icon"][0] is None
    assert run(y)["assurance_icon"][0] is None


def test_targets_and_icons_per_series():
    y = [10, 12, 11, 13, 12, 11, 12, 10, 11, 12, 13, 11, 12]
    df = pl.DataFrame({
        "s": ["a"] * 13 + ["b"] * 13, "t": list(range(13)) * 2,
        "y": [float(v) for v in y] + [float(v) for v in y[:-1]] + [30.0],
        "goal": [20.0] * 13 + [4.0] * 13,
    })  # fmt: skip
    out = xmr(df, "y", "t", by="s", target="goal").group_by("s", maintain_order=True).first()
    assert out["assurance_icon"].to_list() == ["consistent_fail", "consistent_pass"]
    assert out["variation_icon"].to_list() == ["common_cause", "improvement_high"]
    out = xmr(df, "y", "t", by="s", improvement="decrease").group_by("s", maintain_order=True).first()
    assert out["variation_icon"].to_list() == ["common_cause", "concern_high"]


def test_neutral_polarity():
    y = [10, 12, 11, 13, 12, 11, 12, 10, 11, 12, 13, 11, 30]
    out = run(y, improvement="neutral")
    assert out["point_type"][-1] == "special_cause_neutral_high"
    assert out["variation_icon"][0] == "neutral_high"
    out = run([v if v != 30 else -10 for v in y], improvement="neutral")
    assert out["point_type"][-1] == "special_cause_neutral_low"
    assert out["variation_icon"][0] == "neutral_low"
    low = run([v if v != 30 else -10 for v in y])
    assert low["variation_icon"][0] == "concern_low"
    assert run([v if v != 30 else -10 for v in y], improvement="decrease")["variation_icon"][0] == "improvement_low"


def test_trial_limits_below_thirteen_points():
    y = [10, 12, 11, 13, 12, 11, 12, 10, 11, 12, 13, 11, 12]
    assert run(y[:12])["trial_limits"].unique().to_list() == [True]
    assert run(y)["trial_limits"].unique().to_list() == [False]
    # a missing value is not a point
    assert run(y[:12] + [None])["trial_limits"][0] is True


def test_missing_values_one_point_and_flat_series():
    out = run([5.0])
    assert out["mean"][0] == 5 and out["upper_limit"][0] is None and out["point_type"][0] == "common_cause"
    # screened moving ranges all zero: no limits, everything common cause (R would flag the 7s)
    out = run([7.0] * 11 + [40.0])
    assert out["upper_limit"].null_count() == 12 and set(out["point_type"]) == {"common_cause"}
    assert run([7.0] * 11 + [40.0], screen_outliers=False)["upper_limit"][0] is not None
    # a missing value is never special cause, and breaks a run
    y = [10, 12, 10, 12, 10, 12, 10, 12, 13, 12, None, 13, 12, 13, 12]
    out = run(y)
    assert out["special_cause_rule"][10] is None and out["point_type"][10] == "common_cause"
    assert rules(out) == [None] * 15
    # NaN is missing too
    assert run([10.0, 12.0, float("nan"), 11.0])["mean"][0] == 11


def test_lazy_in_lazy_out_and_expressions():
    y = [10.0, 12, 10, 12, 10, 12, 10, 12, 13, 12, 13, 12, 13, 12]
    df = pl.DataFrame({"t": list(range(14)), "y": y})
    lazy = xmr(df.lazy(), pl.col("y") * 2, "t", by=pl.lit("x"))
    assert isinstance(lazy, pl.LazyFrame)
    out = lazy.collect()
    assert out.columns[:2] == ["t", "y"] and "__spc_y" not in out.columns
    assert rules(out) == [None] * 7 + ["shift"] * 7
    with pytest.raises(ValueError):
        xmr(df, "y", "t", improvement="up")


# ============================================================================ (c) scale


def test_two_thousand_series_in_one_call():
    rng = np.random.default_rng(7)
    series, points = 2_000, 36
    df = pl.DataFrame({
        "metric": np.repeat(np.arange(series) % 20, points),
        "place": np.repeat(np.arange(series) // 20, points),
        "period": [month(i) for i in range(points)] * series,
        "y": (rng.normal(100, 10, series * points) + np.repeat(rng.normal(0, 5, series), points)).round(1),
    })  # fmt: skip
    out = xmr(df, "y", "period", by=["metric", "place"], target=110.0, rebase_at=month(24))
    assert out.height == series * points
    assert out.group_by("metric", "place").agg(pl.col("variation_icon").n_unique())["variation_icon"].max() == 1
    assert set(out["segment"].unique()) == {1, 2}
    assert out["trial_limits"].all()  # 12 points after the rebase


def test_docstring_examples():
    import doctest

    from metrics import spc

    result = doctest.testmod(spc, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 3
