"""Definitions → a plan: what to compute from each source, as small frozen steps.

The plan says *how* (which source scan, which filters, which grains and breakdowns, which method);
the definitions say *what*. ``explain(plan)`` prints it without running anything, so an analyst can
check what a refresh will do.
"""

from __future__ import annotations

from dataclasses import dataclass

from metrics.definitions import ESP2013_LOWER_BOUNDS, Catalogue, MetricDefinition, SourceDefinition
from metrics.sqlfilter import compile_filter

__all__ = ["MetricStep", "SourcePlan", "Plan", "build_plan", "explain", "age_band_labels"]


@dataclass(frozen=True)
class MetricStep:
    metric_id: str
    version: int
    value_type: str
    multiplier: float
    denominator_filter: str | None
    numerator_filter: str | None
    count_distinct: str | None
    measure: str | None
    measure_aggregate: str | None
    population_source: str | None
    population_filter: str | None
    date_column: str | None
    snapshot_column: str | None
    grains: tuple[str, ...]
    breakdowns: tuple[str, ...]
    age_bands: tuple[int, ...]

    @property
    def distinct(self) -> bool:
        return self.count_distinct is not None

    @property
    def age_band_column(self) -> str:
        return "age_band__" + "_".join(str(b) for b in self.age_bands)


@dataclass(frozen=True)
class SourcePlan:
    source_id: str
    kind: str
    steps: tuple[MetricStep, ...]
    columns: tuple[str, ...] = ()  # the source columns the steps read: all that loading keeps


@dataclass(frozen=True)
class Plan:
    sources: tuple[SourcePlan, ...]

    def metric_ids(self) -> list[str]:
        return [s.metric_id for p in self.sources for s in p.steps]


def _step(metric: MetricDefinition, default_bands: list[int]) -> MetricStep:
    grains = ("snapshot",) if metric.period.snapshot else tuple(metric.period.grains)
    population = metric.denominator.population if metric.denominator else None
    bands = ESP2013_LOWER_BOUNDS if metric.value_type == "dsr" else (metric.age_bands or default_bands)
    return MetricStep(
        metric_id=metric.id,
        version=metric.version,
        value_type=metric.value_type,
        multiplier=metric.multiplier,
        # With a population denominator, the denominator's filter selects population rows.
        denominator_filter=metric.denominator.filter if metric.denominator and not population else None,
        numerator_filter=metric.numerator.filter if metric.numerator else None,
        count_distinct=metric.numerator.count_distinct if metric.numerator else None,
        measure=metric.measure.column if metric.measure else None,
        measure_aggregate=metric.measure.aggregate if metric.measure else None,
        population_source=population,
        population_filter=metric.denominator.filter if population else None,
        date_column=metric.period.date,
        snapshot_column=metric.period.snapshot,
        grains=grains,
        breakdowns=tuple(metric.breakdowns),
        age_bands=tuple(bands),
    )


def build_plan(catalogue: Catalogue, metric_ids: list[str] | None = None) -> Plan:
    """One ``SourcePlan`` per source that any selected (non-retired) metric reads."""
    default_bands = catalogue.dimensions.age_bands.get("default", [0, 18, 45, 65, 75, 85])
    selected = [m for m in catalogue.metrics.values()
                if (metric_ids is None or m.id in metric_ids) and m.status != "retired"]
    plans = []
    for source_id in sorted({m.source for m in selected}):
        steps = tuple(_step(m, default_bands) for m in sorted(selected, key=lambda m: m.id) if m.source == source_id)
        source = catalogue.sources[source_id]
        plans.append(SourcePlan(source_id, source.kind, steps, _columns_read(steps, source)))
    return Plan(tuple(plans))


def _columns_read(steps: tuple[MetricStep, ...], source: SourceDefinition) -> tuple[str, ...]:
    """Every source column the steps need: filters, measures, periods and breakdown dimensions."""
    declared = source.all_columns
    names: set[str] = {c for c in ("age", "sex", "ethnicity") if c in source.columns}
    if source.geography:
        names.add(source.geography)
    for step in steps:
        names |= {c for c in (step.measure, step.count_distinct, step.date_column, step.snapshot_column) if c}
        for sql in (step.denominator_filter, step.numerator_filter):
            if sql:
                names |= set(compile_filter(sql, [*declared, "period_start", "period_end"]).meta.root_names())
    return tuple(c for c in declared if c in names)


def age_band_labels(bands: tuple[int, ...] | list[int]) -> list[str]:
    """``[18, 45, 65]`` → ``["18-44", "45-64", "65+"]``."""
    bands = list(bands)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(bands, bands[1:], strict=False)]
    return [*labels, f"{bands[-1]}+"]


def explain(plan: Plan) -> str:
    """The plan as text: one block per source scan, one line per metric step."""
    lines = []
    for source in plan.sources:
        lines.append(f"scan {source.source_id} ({source.kind}) once, validate every column, "
                     f"keep {', '.join(source.columns)}")
        for s in source.steps:
            how = {"proportion": "Wilson", "rate": "Byar/exact Poisson", "dsr": "Dobson, ESP 2013",
                   "mean": "Student's t", "count": "sum"}
            what = (f"count distinct {s.count_distinct}" if s.distinct
                    else f"{s.measure_aggregate} of {s.measure}" if s.measure else "count rows")
            lines.append(f"  {s.metric_id} v{s.version}: {s.value_type} ({how[s.value_type]}), {what}")
            if s.denominator_filter:
                lines.append(f"    in scope: {' '.join(s.denominator_filter.split())}")
            if s.numerator_filter:
                lines.append(f"    counted:  {' '.join(s.numerator_filter.split())}")
            if s.population_source:
                where = f" where {' '.join(s.population_filter.split())}" if s.population_filter else ""
                lines.append(f"    per population from {s.population_source}{where} (x{s.multiplier:g})")
            period = f"snapshot {s.snapshot_column}" if s.snapshot_column else f"{s.date_column} by {', '.join(s.grains)}"
            lines.append(f"    periods: {period}; breakdowns: {', '.join(s.breakdowns)}; "
                         f"age bands: {', '.join(age_band_labels(s.age_bands))}")
    return "\n".join(lines)
