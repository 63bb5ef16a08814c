"""Checks across definitions: one small function per rule, all listed in ``RULES``.

Each rule takes the catalogue and returns a list of issues (it never raises), so ``outcomes
validate`` can report every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable

from metrics.definitions import PERIOD_COLUMNS, Catalogue, MetricDefinition
from metrics.errors import FilterError, Issue
from metrics.sqlfilter import compile_filter

__all__ = ["RULES", "check_catalogue"]

# Which source column each breakdown needs (geography breakdowns need the source's LSOA column).
BREAKDOWN_COLUMNS = {"age_band": "age", "sex": "sex", "ethnicity": "ethnicity"}
GEOGRAPHY_BREAKDOWNS = ("place", "neighbourhood", "imd_quintile")


def _error(metric: MetricDefinition, field: str, message: str) -> Issue:
    return Issue("error", metric.file, f"metric '{metric.id}': {message}", field=field)


def metric_source_exists(cat: Catalogue) -> list[Issue]:
    return [
        _error(m, "source", f"source '{m.source}' is not declared; declared sources: {', '.join(sorted(cat.sources))}")
        for m in cat.metrics.values()
        if m.source not in cat.sources
    ]


def filters_name_declared_columns(cat: Catalogue) -> list[Issue]:
    issues = []
    for m in cat.metrics.values():
        source = cat.sources.get(m.source)
        if source is None:
            continue
        # Period columns mean something only for snapshots (one date per row's period).
        columns = [*source.all_columns, *(PERIOD_COLUMNS if m.period.snapshot else ())]
        population = cat.sources.get(m.denominator.population) if m.denominator and m.denominator.population else None
        # A population denominator's filter is over the population source's columns.
        denominator_columns = population.all_columns if population else columns
        for field, sql, allowed in (("numerator.filter", m.numerator and m.numerator.filter, columns),
                                    ("denominator.filter", m.denominator and m.denominator.filter,
                                     denominator_columns)):
            if sql:
                try:
                    compile_filter(sql, allowed, context=field)
                except FilterError as exc:
                    issues.append(_error(m, field, str(exc)))
    for s in cat.sources.values():
        for index, rule in enumerate(s.rules):
            try:
                compile_filter(rule.check, s.all_columns, context=f"rule '{rule.name}'")
            except FilterError as exc:
                issues.append(Issue("error", s.file, f"source '{s.id}': {exc}", field=f"rules.{index}.check"))
    return issues


def columns_exist_with_right_type(cat: Catalogue) -> list[Issue]:
    issues = []
    for m in cat.metrics.values():
        source = cat.sources.get(m.source)
        if source is None:
            continue
        types = {**{c: s.type for c, s in source.columns.items()}, **{c: "integer" for c in source.derived}}
        checks = []
        if m.measure:
            checks.append(("measure.column", m.measure.column, ("integer", "float")))
        if m.numerator and m.numerator.count_distinct:
            checks.append(("numerator.count_distinct", m.numerator.count_distinct, None))
        if m.period.date:
            checks.append(("period.date", m.period.date, ("date", "datetime")))
        if m.period.snapshot:
            checks.append(("period.snapshot", m.period.snapshot, ("date",)))
        for field, column, allowed in checks:
            if column not in types:
                issues.append(_error(m, field, f"column '{column}' is not declared by source '{source.id}'"))
            elif allowed and types[column] not in allowed:
                issues.append(_error(m, field, f"column '{column}' is {types[column]}, expected {' or '.join(allowed)}"))
    return issues


def breakdowns_available(cat: Catalogue) -> list[Issue]:
    issues = []
    for m in cat.metrics.values():
        source = cat.sources.get(m.source)
        if source is None:
            continue
        population = cat.sources.get(m.denominator.population) if m.denominator and m.denominator.population else None
        for breakdown in m.breakdowns:
            if breakdown in GEOGRAPHY_BREAKDOWNS:
                if not source.geography:
                    issues.append(_error(m, "breakdowns", f"breakdown '{breakdown}' needs source '{source.id}' to "
                                                          "declare its LSOA column as 'geography'"))
                continue
            column = BREAKDOWN_COLUMNS[breakdown]
            if column not in source.columns:
                issues.append(_error(m, "breakdowns", f"breakdown '{breakdown}' needs column '{column}' in source "
                                                      f"'{source.id}'"))
            if population is not None and column not in population.columns:
                issues.append(_error(m, "breakdowns", f"breakdown '{breakdown}' is not possible for a population rate: "
                                                      f"population source '{population.id}' has no '{column}' column"))
        if "place" not in m.breakdowns:
            issues.append(_error(m, "breakdowns", "breakdowns must include 'place' (every value is within a place)"))
    return issues


def population_denominators_are_populations(cat: Catalogue) -> list[Issue]:
    issues = []
    for m in cat.metrics.values():
        if m.denominator and m.denominator.population:
            pop = cat.sources.get(m.denominator.population)
            if pop is None or pop.kind != "population":
                issues.append(_error(m, "denominator.population",
                                     f"'{m.denominator.population}' is not a declared source of kind 'population'"))
    return issues


def one_geography_lookup(cat: Catalogue) -> list[Issue]:
    lookups = [s for s in cat.sources.values() if s.kind == "lookup"]
    needs = any(s.geography for s in cat.sources.values())
    if needs and len(lookups) != 1:
        return [Issue("error", cat.root, f"expected exactly one source of kind 'lookup' (the geography lookup), "
                                         f"found {len(lookups)}")]
    if lookups:
        missing = {"lsoa_code", "place", "neighbourhood", "imd_quintile"} - set(lookups[0].columns)
        if missing:
            return [Issue("error", lookups[0].file, f"geography lookup lacks columns {', '.join(sorted(missing))}")]
    return []


def snapshot_metrics_on_snapshot_sources(cat: Catalogue) -> list[Issue]:
    issues = []
    for m in cat.metrics.values():
        source = cat.sources.get(m.source)
        if source and m.period.snapshot and source.kind != "snapshot":
            issues.append(_error(m, "period.snapshot", f"source '{source.id}' is not of kind 'snapshot'"))
    return issues


RULES: tuple[Callable[[Catalogue], list[Issue]], ...] = (
    metric_source_exists,
    filters_name_declared_columns,
    columns_exist_with_right_type,
    breakdowns_available,
    population_denominators_are_populations,
    one_geography_lookup,
    snapshot_metrics_on_snapshot_sources,
)


def check_catalogue(cat: Catalogue) -> list[Issue]:
    return [issue for rule in RULES for issue in rule(cat)]
