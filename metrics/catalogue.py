"""The self-documenting catalogue: one page per metric and an index, in Markdown or HTML.

``render_catalogue(catalogue, out_dir, fmt="md")`` writes ``index.<ext>`` and ``<metric_id>.<ext>``
for every metric: its metadata, the exact filters, the method and confidence interval method,
breakdowns, periods, target, disclosure policy, caveats and, when ``values`` are given, the latest
value for each place. The index lists the metrics by outcome group, outcome and priority, and the
sources they read.

Pages are built once as a list of small blocks (heading, paragraph, key-value list, code, table,
list) and rendered to either format, so both carry exactly the same content. HTML escapes every
piece of text (``html.escape``) and has no scripts; Markdown escapes table separators and
emphasis characters in text.

Nothing here computes a metric: values come from the store (for published counts, pass them
through ``metrics.publication.publication_view`` first, which applies the disclosure policy).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from metrics.definitions import Catalogue, MetricDefinition, SourceDefinition
from metrics.plan import age_band_labels

__all__ = ["render_catalogue", "missing_metadata", "REQUIRED_METADATA", "GROUP_ORDER"]

#: Fields every metric must fill in. ``fingertips_id`` must be written, even if as ``null``.
REQUIRED_METADATA = ("title", "outcome", "definition", "rationale", "unit", "polarity", "owner", "status",
                     "valid_from", "caveats", "fingertips_id", "frequency", "group")
#: Reading order of outcome groups in the index (others follow alphabetically).
GROUP_ORDER = ("Starting well", "Living well", "Ageing well", "Cancer and screening", "Care closer to home",
               "Urgent and emergency care", "Planned care", "Digital")
FORMATS = {"md": "md", "html": "html"}

POLARITY = {"higher_is_better": "Higher is better", "lower_is_better": "Lower is better",
            "neutral": "Neither higher nor lower is better (context)"}
VALUE_TYPE = {"proportion": "Proportion", "rate": "Crude rate", "dsr": "Directly standardised rate",
              "mean": "Mean", "count": "Count"}
BREAKDOWN = {"place": "Place", "neighbourhood": "Neighbourhood", "imd_quintile": "IMD 2019 quintile",
             "age_band": "Age band", "sex": "Sex", "ethnicity": "Ethnic group"}
STANDARD = {"esp2013": "European Standard Population 2013: five-year bands 0-4 to 85-89 and 90+, "
                       "over the bands the denominator's filter keeps"}
FINGERTIPS_URL = "https://fingertips.phe.org.uk/search/{id}"


# --- blocks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Cell = str | Link


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Fields:
    items: tuple[tuple[str, Cell], ...]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "sql"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[Cell, ...]


Block = Heading | Para | Fields | Code | Table | Bullets


# --- what a metric must say ----------------------------------------------------------------------


def missing_metadata(metric: MetricDefinition) -> list[str]:
    """Required metadata the definition leaves out or empty (``[]`` when complete).

    ``fingertips_id`` counts as given when the file writes it, even as ``null`` (no such indicator);
    numerator and denominator need descriptions where the metric has them.
    """
    missing = []
    for name in REQUIRED_METADATA:
        if name == "fingertips_id":
            if name not in metric.model_fields_set:
                missing.append(name)
            continue
        value = getattr(metric, name, None)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
    if metric.numerator is not None and not (metric.numerator.description or "").strip():
        missing.append("numerator.description")
    if metric.denominator is not None and not (metric.denominator.description or "").strip():
        missing.append("denominator.description")
    if metric.measure is not None and metric.value_type == "mean" and not (metric.measure.description or "").strip():
        missing.append("measure.description")
    return missing


# --- text helpers --------------------------------------------------------------------------------


def _squash(text: str | None) -> str:
    return " ".join((text or "").split())


def _grain_label(grain: str) -> str:
    match = re.fullmatch(r"rolling_(\d+)_months", grain)
    if match:
        months = int(match.group(1))
        return (f"rolling {months // 12} years (pooled, ending each month)" if months % 12 == 0 and months > 12
                else f"rolling {months} months (ending each month)")
    return {"month": "month", "financial_quarter": "financial quarter (Q1 = April-June)",
            "financial_year": "financial year (April-March)", "calendar_year": "calendar year",
            "academic_year": "academic year (September-August)", "snapshot": "snapshot"}.get(grain, grain)


def period_label(period_type: str, start: dt.date, end: dt.date) -> str:
    """A readable period: "Mar 2026", "2025/26 Q4", "2025/26", "2025", "2024/25 academic year",
    "36 months to Mar 2026", "at 31 Mar 2026"."""
    fy = start.year if start.month >= 4 else start.year - 1
    fy_label = f"{fy}/{(fy + 1) % 100:02d}"
    if period_type == "month":
        return start.strftime("%b %Y")
    if period_type == "financial_quarter":
        return f"{fy_label} Q{(start.month - 4) % 12 // 3 + 1}"
    if period_type == "financial_year":
        return fy_label
    if period_type == "calendar_year":
        return str(start.year)
    if period_type == "academic_year":
        return f"{start.year}/{(start.year + 1) % 100:02d} academic year"
    match = re.fullmatch(r"rolling_(\d+)_months", period_type)
    if match:
        return f"{match.group(1)} months to {end.strftime('%b %Y')}"
    if period_type == "snapshot":
        return f"at {end.day} {end.strftime('%b %Y')}"
    return f"{start.isoformat()} to {end.isoformat()}"


def _number(value: float | None, digits: int | None = None) -> str:
    """``digits`` decimals; by default one for values of 10 or more and two below (rates like 0.12)."""
    if value is None:
        return "-"
    if digits is None:
        digits = 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def _digits(metric: MetricDefinition) -> int | None:
    return 0 if metric.value_type == "count" else 1 if metric.unit == "%" else None


def _value_text(value: float | None, suppressed: bool, digits: int | None) -> str:
    if value is not None:
        return _number(value, digits)
    return "suppressed" if suppressed else "not calculated"


# --- the pages -----------------------------------------------------------------------------------


def _metric_blocks(metric: MetricDefinition, catalogue: Catalogue, values: pl.DataFrame | None,
                   run: dict | None, ext: str) -> list[Block]:
    source = catalogue.sources.get(metric.source)
    blocks: list[Block] = [Heading(1, metric.title), Para(_squash(metric.definition))]
    missing = missing_metadata(metric)
    if missing:
        blocks.append(Para(f"Metadata incomplete: {', '.join(missing)}."))
    about: list[tuple[str, Cell]] = [
        ("Metric id", metric.id),
        ("Outcome", metric.outcome),
        ("Group", metric.group or "-"),
        ("Priority", "yes" if metric.priority else "no"),
        ("Status", f"{metric.status}, version {metric.version}"),
        ("Valid", f"from {metric.valid_from.isoformat()}"
         + (f" to {metric.valid_to.isoformat()}" if metric.valid_to else "")),
        ("Owner", metric.owner),
        ("Frequency", metric.frequency or "-"),
        ("Fingertips indicator", Link(str(metric.fingertips_id), FINGERTIPS_URL.format(id=metric.fingertips_id))
         if metric.fingertips_id is not None else "none (a local or NHS England measure)"),
        ("Definition file", Path(metric.file).name if metric.file else "-"),
        ("Content hash", metric.content_hash or "-"),
    ]
    blocks += [Fields(tuple(about)), Heading(2, "Why it matters"), Para(_squash(metric.rationale))]

    blocks.append(Heading(2, "How it is calculated"))
    how: list[tuple[str, Cell]] = [("Value", f"{VALUE_TYPE[metric.value_type]}, {metric.unit}")]
    if metric.multiplier != 1:
        how.append(("Multiplier", f"{metric.multiplier:,g}"))
    if metric.standard:
        how.append(("Standard population", STANDARD.get(metric.standard, metric.standard)))
    how.append(("Confidence intervals", f"{metric.method}; 95% and 99.8% limits"))
    how.append(("Source", f"{source.title} ({source.id})" if source else metric.source))
    blocks.append(Fields(tuple(how)))
    if metric.denominator is not None:
        blocks.append(Heading(3, "Denominator"))
        blocks.append(Para(_squash(metric.denominator.description) or "-"))
        if metric.denominator.population:
            pop = catalogue.sources.get(metric.denominator.population)
            label = f"{pop.title} ({pop.id})" if pop else metric.denominator.population
            blocks.append(Para(f"Population from {label}"
                               + (", restricted by this filter on its columns:" if metric.denominator.filter else ".")))
        elif not metric.denominator.filter:
            blocks.append(Para("Every row of the source is in scope (no filter)."))
        if metric.denominator.filter:
            blocks.append(Code(_squash(metric.denominator.filter)))
    if metric.numerator is not None:
        blocks.append(Heading(3, "Numerator"))
        blocks.append(Para(_squash(metric.numerator.description) or "-"))
        if metric.numerator.count_distinct:
            blocks.append(Para(f"Counts distinct {metric.numerator.count_distinct} once per period."))
        if metric.numerator.filter:
            blocks.append(Code(_squash(metric.numerator.filter)))
    if metric.measure is not None:
        blocks.append(Heading(3, "Measure"))
        blocks.append(Para(f"The {metric.measure.aggregate} of {metric.measure.column}"
                           + (f": {_squash(metric.measure.description)}" if metric.measure.description else ".")))

    blocks.append(Heading(2, "Periods and breakdowns"))
    if metric.period.snapshot:
        periods = f"one value per snapshot date ({metric.period.snapshot})"
    else:
        periods = f"by {metric.period.date}: " + "; ".join(_grain_label(g) for g in metric.period.grains)
    bands = metric.age_bands or catalogue.dimensions.age_bands.get("default", [])
    breakdowns = ", ".join(BREAKDOWN.get(b, b) for b in metric.breakdowns)
    blocks.append(Fields((
        ("Periods", periods),
        ("Breakdowns", breakdowns),
        *((("Age bands", ", ".join(age_band_labels(bands))),) if "age_band" in metric.breakdowns and bands else ()),
    )))
    if "imd_quintile" in metric.breakdowns:
        blocks.append(Para("Inequalities: the judgement stage reports the slope index of inequality (SII) across "
                           "IMD 2019 quintiles and the gap between the most and least deprived quintiles for "
                           "every period."))

    blocks.append(Heading(2, "Judging and publishing"))
    judging: list[tuple[str, Cell]] = [("Polarity", POLARITY[metric.polarity])]
    if metric.target:
        judging.append(("Target", f"{metric.target.value:g}{'%' if metric.unit == '%' else ' ' + metric.unit} "
                                  f"({metric.target.source})"))
    else:
        judging.append(("Target", "none"))
    disclosure = (f"counts of 1 to {metric.disclosure.suppress_below - 1} suppressed (with secondary suppression); "
                  f"other counts rounded to the nearest {metric.disclosure.round_to}")
    if metric.value_type == "dsr":
        disclosure += "; rates not published below 10 events"
    judging.append(("Disclosure", disclosure))
    if metric.judgement:
        judging.append(("Judgement settings", "; ".join(f"{k}: {v}" for k, v in sorted(metric.judgement.items()))))
    blocks.append(Fields(tuple(judging)))

    blocks.append(Heading(2, "Caveats"))
    blocks.append(Para(_squash(metric.caveats) or "None recorded."))

    latest = _latest_values(metric, values)
    if latest is not None:
        blocks.append(Heading(2, "Latest values"))
        blocks.append(Para(_provenance(run)))
        blocks.append(latest)
    blocks.append(Bullets((Link("Back to the catalogue index", f"index.{ext}"),)))
    return blocks


def _provenance(run: dict | None) -> str:
    if not run:
        return "Latest period of each kind for each place, as published."
    bits = [f"refresh run {run['run_id']}" if run.get("run_id") is not None else None,
            f"as of {run['as_of']}" if run.get("as_of") else None,
            f"finished {run['finished_at']}" if run.get("finished_at") else None,
            f"code {run['code_version']}" if run.get("code_version") else None]
    return "From " + ", ".join(b for b in bits if b) + "."


def _place_totals(metric: MetricDefinition, values: pl.DataFrame | None) -> pl.DataFrame | None:
    """The metric's place totals, with ``_withheld`` set where small numbers must not be shown.

    A frame that has been through the publication view says so itself (``suppressed``); otherwise
    a place total whose numerator is 1 to ``suppress_below - 1`` is withheld here, value and limits
    included, since they would give the count back.
    """
    if values is None or values.is_empty() or "metric_id" not in values.columns:
        return None
    rows = values.filter(pl.col("metric_id") == metric.id)
    if "breakdown" in rows.columns:
        rows = rows.filter(pl.col("breakdown") == "overall")
    if "suppressed" in rows.columns:
        withheld = pl.col("suppressed").fill_null(False)
    elif "numerator" in rows.columns:
        withheld = pl.col("numerator").is_between(1, metric.disclosure.suppress_below - 1e-9).fill_null(False)
    else:
        withheld = pl.lit(False)
    rows = rows.with_columns(withheld.alias("_withheld"))
    hide = [c for c in ("value", "lower_95", "upper_95") if c in rows.columns]
    return rows.with_columns(pl.when(pl.col("_withheld")).then(None).otherwise(pl.col(c)).alias(c) for c in hide)


def _latest_values(metric: MetricDefinition, values: pl.DataFrame | None) -> Table | None:
    """The latest period of each period type for each place (the place total)."""
    rows = _place_totals(metric, values)
    if rows is None:
        return None
    if rows.is_empty():
        return Table(("Place", "Period", "Value"), (("-", "-", "no values published"),))
    rows = (rows.sort("period_end").group_by("place", "period_type", maintain_order=True).last()
            .sort("place", "period_type"))
    published = "suppressed" in rows.columns
    digits = _digits(metric)
    out = []
    for r in rows.iter_rows(named=True):
        value = _value_text(r.get("value"), r["_withheld"], digits)
        ci = (f"{_number(r.get('lower_95'), digits)} to {_number(r.get('upper_95'), digits)}"
              if r.get("lower_95") is not None else "-")
        row: list[Cell] = [str(r["place"]), period_label(r["period_type"], r["period_start"], r["period_end"]),
                           value, ci]
        if published:
            row += [_number(r.get("numerator"), 0), _number(r.get("denominator"), 0),
                    str(r.get("suppression_note") or "")]
        out.append(tuple(row))
    headers = ("Place", "Period", f"Value ({metric.unit})", "95% CI")
    if published:
        headers += ("Numerator", "Denominator", "Note")
    return Table(headers, tuple(out))


def _group_key(group: str | None) -> tuple[int, str]:
    if group in GROUP_ORDER:
        return GROUP_ORDER.index(group), group
    return len(GROUP_ORDER), group or "~"


def _index_blocks(catalogue: Catalogue, values: pl.DataFrame | None, run: dict | None, ext: str) -> list[Block]:
    metrics = sorted(catalogue.metrics.values(), key=lambda m: (_group_key(m.group), m.outcome, m.title))
    blocks: list[Block] = [
        Heading(1, "Outcomes framework catalogue"),
        Para(f"{len(metrics)} metrics from {len(catalogue.sources)} sources. Each page gives the definition, the "
             "exact filters, the method, periods, breakdowns, target, disclosure policy and caveats."
             + (" " + _provenance(run) if run else "")),
    ]
    priority = [m for m in metrics if m.priority]
    if priority:
        blocks += [Heading(2, "Priority metrics"),
                   Bullets(tuple(Link(f"{m.title} ({m.outcome})", f"{m.id}.{ext}") for m in priority))]

    blocks.append(Heading(2, "By outcome group"))
    current = object()
    for metric in metrics:
        if metric.group != current:
            current = metric.group
            group_metrics = [m for m in metrics if m.group == current]
            blocks.append(Heading(3, current or "Other"))
            rows = []
            for m in group_metrics:
                rows.append((m.outcome, Link(m.title, f"{m.id}.{ext}"), VALUE_TYPE[m.value_type],
                             POLARITY[m.polarity].split(" (")[0], m.frequency or "-",
                             "yes" if m.priority else "", _latest_summary(m, values)))
            blocks.append(Table(("Outcome", "Metric", "Type", "Polarity", "Frequency", "Priority", "Latest"),
                                tuple(rows)))

    blocks.append(Heading(2, "By outcome"))
    outcomes: dict[str, list[MetricDefinition]] = {}
    for m in sorted(metrics, key=lambda m: (m.outcome.lower(), m.title)):
        outcomes.setdefault(m.outcome, []).append(m)
    blocks.append(Table(("Outcome", "Metrics"), tuple(
        (outcome, "; ".join(m.title for m in ms)) for outcome, ms in outcomes.items())))

    blocks.append(Heading(2, "Inequalities"))
    with_imd = [m for m in metrics if "imd_quintile" in m.breakdowns]
    blocks.append(Para(
        f"{len(with_imd)} of {len(metrics)} metrics are broken down by IMD 2019 quintile. For each of them the "
        "judgement stage computes the slope index of inequality (SII, weighted regression on the cumulative "
        "population rank by deprivation, simulated confidence interval as PHEindicatormethods' phe_sii) and the "
        "gap between the most and least deprived quintiles: the \"health inequalities\" outcome needs no separate "
        "definition."))

    blocks.append(Heading(2, "Sources"))
    blocks.append(Table(("Source", "Kind", "Title", "Metrics"), tuple(
        (s.id, s.kind, s.title, _uses(s, metrics)) for s in sorted(catalogue.sources.values(), key=lambda s: s.id))))
    return blocks


def _uses(source: SourceDefinition, metrics: Sequence[MetricDefinition]) -> str:
    users = [m.id for m in metrics if m.source == source.id
             or (m.denominator is not None and m.denominator.population == source.id)]
    return ", ".join(users) or "-"


def _latest_summary(metric: MetricDefinition, values: pl.DataFrame | None) -> str:
    """"Dudley 71.1, Walsall 66.6 (at 31 Mar 2025)" for the most recent period of the first period type."""
    rows = _place_totals(metric, values)
    if rows is None or rows.is_empty():
        return "-"
    grains = ["snapshot"] if metric.period.snapshot else list(metric.period.grains)
    present = set(rows["period_type"].unique().to_list())
    kind = next((g for g in grains if g in present), rows["period_type"][0])
    rows = rows.filter(pl.col("period_type") == kind)
    last = rows["period_end"].max()
    rows = rows.filter(pl.col("period_end") == last).sort("place")
    first = rows.row(0, named=True)
    digits = _digits(metric)
    parts = [f"{r['place']} {_value_text(r['value'], r['_withheld'], digits)}"
             for r in rows.iter_rows(named=True)]
    return f"{', '.join(parts)} ({period_label(kind, first['period_start'], first['period_end'])})"


# --- rendering -----------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md_text(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f"[{_md_text(cell.text)}]({cell.href.replace(' ', '%20').replace(')', '%29')})"
    return _md_text(cell).replace("\n", " ")


def _to_markdown(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_md_text(block.text)}")
        elif isinstance(block, Para):
            out.append(_md_text(block.text))
        elif isinstance(block, Fields):
            out.append("\n".join(f"- **{_md_text(k)}:** {_md_cell(v)}" for k, v in block.items))
        elif isinstance(block, Code):
            fence = "```"
            while fence in block.text:
                fence += "`"
            out.append(f"{fence}{block.language}\n{block.text}\n{fence}")
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_text(h) for h in block.headers) + " |",
                     "|" + "|".join("---" for _ in block.headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {_md_cell(item)}" for item in block.items))
    return "\n\n".join(out) + "\n"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f'<a href="{_e(cell.href)}">{_e(cell.text)}</a>'
    return _e(cell)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5;
       color: #212b32; }
h1 { color: #005eb8; } h2 { border-bottom: 1px solid #d8dde0; padding-bottom: .2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d8dde0; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f4f5; }
pre { background: #f0f4f5; padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
"""


def _to_html(blocks: Sequence[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f"<p>{_e(block.text)}</p>")
        elif isinstance(block, Fields):
            items = "".join(f"<dt>{_e(k)}</dt><dd>{_html_cell(v)}</dd>" for k, v in block.items)
            body.append(f"<dl>{items}</dl>")
        elif isinstance(block, Code):
            body.append(f'<pre><code class="language-{_e(block.language)}">{_e(block.text)}</code></pre>')
        elif isinstance(block, Table):
            head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_cell(item)}</li>" for item in block.items) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_e(title)}</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _render(blocks: list[Block], title: str, fmt: str) -> str:
    return _to_html(blocks, title) if fmt == "html" else _to_markdown(blocks)


def render_catalogue(catalogue: Catalogue, out_dir: str | Path, fmt: str = "md", values: pl.DataFrame | None = None,
                     run: dict | None = None) -> list[Path]:
    """Write ``index.<fmt>`` and one ``<metric_id>.<fmt>`` page per metric under ``out_dir``.

    ``fmt`` is "md" or "html". ``values`` (optional) is a frame of published values in the store's
    long form (``metric_id, place, period_type, period_start, period_end, breakdown, value,
    lower_95, upper_95``, plus ``numerator, denominator, suppressed, suppression_note`` when it has
    been through the publication view, in which case counts are shown; otherwise place totals with
    a numerator below the metric's ``suppress_below`` are withheld here); ``run`` (optional) says
    which refresh run they came from (``run_id``, ``as_of``, ``finished_at``, ``code_version``).
    Returns the files written, index first.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be 'md' or 'html', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = FORMATS[fmt]
    written = []
    index = out / f"index.{ext}"
    index.write_text(_render(_index_blocks(catalogue, values, run, ext), "Outcomes framework catalogue", fmt),
                     encoding="utf-8")
    written.append(index)
    for metric in sorted(catalogue.metrics.values(), key=lambda m: m.id):
        page = out / f"{metric.id}.{ext}"
        page.write_text(_render(_metric_blocks(metric, catalogue, values, run, ext), metric.title, fmt),
                        encoding="utf-8")
        written.append(page)
    return written
