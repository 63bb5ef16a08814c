"""Definitions are data: YAML files → frozen, validated models.

``load_definitions(folder)`` reads ``sources/*.yaml``, ``metrics/*.yaml`` and ``dimensions.yaml``
with a safe loader (no Python tags), validates each document against the models below and returns
``(Catalogue, issues)``. It carries on past a bad file and reports every problem at once, each
naming the file, the line and the field. Nothing here computes anything: the planner consumes these.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metrics.errors import DefinitionError, Issue

__all__ = [
    "ColumnSpec",
    "SourceDefinition",
    "MetricDefinition",
    "Dimensions",
    "Catalogue",
    "load_definitions",
    "load_catalogue",
    "GRAINS",
    "BREAKDOWNS",
]

GRAINS = ("month", "financial_quarter", "financial_year", "calendar_year", "academic_year")
# Plus rolling windows of any whole number of months ending each month: rolling_12_months, rolling_36_months.
GRAIN_PATTERN = r"^(month|financial_quarter|financial_year|calendar_year|academic_year|rolling_([1-9]\d*)_months)$"
ESP2013_LOWER_BOUNDS = list(range(0, 95, 5))
BREAKDOWNS = ("place", "neighbourhood", "imd_quintile", "age_band", "sex", "ethnicity")
# Columns every definition may use in filters besides its source's own: the period being computed.
PERIOD_COLUMNS = ("period_start", "period_end")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- sources -------------------------------------------------------------------------------------


class ColumnSpec(_Frozen):
    type: Literal["string", "integer", "float", "date", "datetime", "boolean"]
    nullable: bool = False
    allowed: list[Any] | None = None
    min: Any = None
    max: Any = None
    pattern: str | None = None
    not_future: bool = False
    format: str | None = Field(None, description="strftime format for dates in CSV files (default ISO)")
    description: str | None = None

    @field_validator("pattern")
    @classmethod
    def _regex_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return pattern


class RuleSpec(_Frozen):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    check: str
    description: str | None = None


class DedupSpec(_Frozen):
    key: list[str]
    keep_latest_by: str


class DerivedSpec(_Frozen):
    days_between: tuple[str, str]
    floor: int | None = None


class SourceDefinition(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    kind: Literal["lookup", "population", "activity", "snapshot"]
    title: str
    description: str | None = None
    folder: str
    key: list[str] | None = None
    identifiers: list[str] = []
    geography: str | None = None
    dedup: DedupSpec | None = None
    columns: dict[str, ColumnSpec]
    rules: list[RuleSpec] = []
    derived: dict[str, DerivedSpec] = {}
    complete_periods: Literal["covered", "as_collected"] = Field(
        "covered", description="covered: publish only periods wholly inside the months the extract covers; "
        "as_collected: an annual collection (e.g. school-year data gathered October to June) completes each "
        "period it has data for")
    # Filled in by the loader, not written by analysts.
    file: str = ""
    content_hash: str = ""

    @model_validator(mode="after")
    def _columns_exist(self) -> SourceDefinition:
        named = set(self.columns)
        refs: list[tuple[str, str]] = [("key", c) for c in self.key or []]
        refs += [("identifiers", c) for c in self.identifiers]
        if self.geography:
            refs.append(("geography", self.geography))
        if self.dedup:
            refs += [("dedup.key", c) for c in self.dedup.key] + [("dedup.keep_latest_by", self.dedup.keep_latest_by)]
        for name, spec in self.derived.items():
            refs += [(f"derived.{name}.days_between", c) for c in spec.days_between]
        for field, column in refs:
            if column not in named:
                raise ValueError(f"{field} names column '{column}', which is not declared under columns")
        return self

    @property
    def all_columns(self) -> list[str]:
        return [*self.columns, *self.derived]


# --- metrics -------------------------------------------------------------------------------------


def _not_blank(text: str | None) -> str | None:
    if text is not None and not text.strip():
        raise ValueError("filter is empty: give a SQL expression such as \"age >= 18\", or leave the field out")
    return text


class CountSpec(_Frozen):
    filter: str | None = None
    count_distinct: str | None = None
    description: str | None = None

    _filter_not_blank = field_validator("filter")(_not_blank)


class DenominatorSpec(_Frozen):
    filter: str | None = None
    population: str | None = Field(None, description="id of a population source whose counts are the denominator")
    description: str | None = None

    _filter_not_blank = field_validator("filter")(_not_blank)


class MeasureSpec(_Frozen):
    column: str
    aggregate: Literal["mean", "sum"]
    description: str | None = None


class PeriodSpec(_Frozen):
    date: str | None = None
    snapshot: str | None = None
    grains: list[Annotated[str, Field(pattern=GRAIN_PATTERN)]] = ["month"]

    @model_validator(mode="after")
    def _one_of(self) -> PeriodSpec:
        if (self.date is None) == (self.snapshot is None):
            raise ValueError("give exactly one of 'date' (activity date column) or 'snapshot' (snapshot date column)")
        return self


class TargetSpec(_Frozen):
    value: float
    source: str
    description: str | None = None


class DisclosureSpec(_Frozen):
    suppress_below: int = 8
    round_to: int = 5


class MetricDefinition(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    version: Annotated[int, Field(ge=1)]
    status: Literal["draft", "approved", "retired"]
    valid_from: dt.date
    valid_to: dt.date | None = None
    title: str
    outcome: str
    definition: str
    rationale: str
    owner: str
    source: str
    value_type: Literal["proportion", "rate", "dsr", "mean", "count"]
    unit: str
    multiplier: float = 1
    numerator: CountSpec | None = None
    denominator: DenominatorSpec | None = None
    measure: MeasureSpec | None = None
    period: PeriodSpec
    breakdowns: list[Literal[BREAKDOWNS]] = ["place"]  # type: ignore[valid-type]
    age_bands: list[int] | None = None
    polarity: Literal["higher_is_better", "lower_is_better", "neutral"]
    target: TargetSpec | None = None
    disclosure: DisclosureSpec = DisclosureSpec()
    standard: Literal["esp2013"] | None = Field(None, description="standard population for a dsr")
    ci_method: str | None = None
    fingertips_id: int | None = None
    frequency: str | None = None
    group: str | None = Field(None, description="outcome group for the catalogue index")
    caveats: str | None = None
    priority: bool = False
    judgement: dict[str, Any] | None = None
    # Filled in by the loader.
    file: str = ""
    content_hash: str = ""

    @field_validator("age_bands")
    @classmethod
    def _ascending(cls, bands: list[int] | None) -> list[int] | None:
        if bands is not None and (not bands or bands != sorted(set(bands)) or bands[0] < 0):
            raise ValueError("age_bands must be ascending, distinct lower bounds of each band, e.g. [0, 18, 65]")
        return bands

    @model_validator(mode="after")
    def _shape_fits_value_type(self) -> MetricDefinition:
        needs = {
            "proportion": "numerator.filter and denominator.filter",
            "rate": "numerator and denominator.population",
            "dsr": "numerator and denominator.population",
            "mean": "measure with aggregate: mean",
            "count": "numerator or measure with aggregate: sum",
        }[self.value_type]
        ok = {
            "proportion": self.numerator is not None and self.denominator is not None
            and self.denominator.population is None,
            "rate": self.numerator is not None and self.denominator is not None
            and self.denominator.population is not None,
            "dsr": self.numerator is not None and self.denominator is not None
            and self.denominator.population is not None and self.numerator.count_distinct is None,
            "mean": self.measure is not None and self.measure.aggregate == "mean" and self.numerator is None,
            "count": (self.numerator is not None or self.measure is not None)
            and (self.measure is None or self.measure.aggregate == "sum"),
        }[self.value_type]
        if not ok:
            raise ValueError(f"value_type '{self.value_type}' needs {needs}")
        if self.value_type == "dsr":
            if self.age_bands is not None:
                raise ValueError("a dsr uses the 19 five-year bands of its standard population: remove age_bands")
            if "age_band" in self.breakdowns:
                raise ValueError("a dsr is standardised for age: 'age_band' is not a breakdown for it")
        if self.valid_to and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        if self.numerator and self.numerator.count_distinct and self.value_type not in ("rate", "count", "proportion"):
            raise ValueError("count_distinct applies to counts, proportions and rates only")
        return self

    @property
    def method(self) -> str:
        """The confidence interval method, for people (DESIGN §6)."""
        return self.ci_method or {
            "proportion": "Wilson score",
            "rate": "Byar (exact Poisson below 10 events)",
            "dsr": "Dobson, European Standard Population 2013 (not calculated below 10 events)",
            "mean": "Student's t",
            "count": "none (a count)",
        }[self.value_type]


# --- dimensions ----------------------------------------------------------------------------------


class EthnicitySpec(_Frozen):
    groups: dict[str, list[str]]
    otherwise: str = "Not stated or unknown"


class Dimensions(_Frozen):
    age_bands: dict[str, list[int]] = {"default": [0, 18, 45, 65, 75, 85]}
    ethnicity: EthnicitySpec = EthnicitySpec(groups={})
    sex: dict[str, dict[str, str]] = {"labels": {"F": "Female", "M": "Male"}}
    file: str = ""
    content_hash: str = ""


class Catalogue(_Frozen):
    """Everything the engine needs to know about what to compute."""

    sources: dict[str, SourceDefinition]
    metrics: dict[str, MetricDefinition]
    dimensions: Dimensions
    root: str = ""

    def metrics_on(self, source_id: str) -> list[MetricDefinition]:
        return [m for m in self.metrics.values() if m.source == source_id]


# --- loading -------------------------------------------------------------------------------------


def _line_map(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map each key path in a YAML document to the line it starts on (1-based)."""
    lines: dict[tuple, int] = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines[child] = key.start_mark.line + 1
            lines.update({k: v for k, v in _line_map(value, child).items() if k != child})
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_map(item, (*path, index)))
    return lines


# libyaml's safe loader when PyYAML has it (twenty times faster), else the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str):
    """(the node tree, for line numbers; the data built from it) in one safe parse."""
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _read_yaml(path: Path, issues: list[Issue]) -> tuple[dict | None, dict[tuple, int], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        issues.append(Issue("error", str(path), f"not UTF-8 text ({exc.reason})", code="encoding"))
        return None, {}, ""
    try:
        node, data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in str(exc):
            problem = "YAML tags that create Python objects are not allowed in definitions"
        issues.append(Issue("error", str(path), f"not valid YAML: {problem}", line=mark.line + 1 if mark else None,
                            code="yaml"))
        return None, {}, ""
    if not isinstance(data, dict):
        issues.append(Issue("error", str(path), "expected a mapping of fields (key: value) at the top level",
                            code="yaml"))
        return None, {}, ""
    return data, _line_map(node) if node is not None else {}, text


def _hash(data: dict) -> str:
    """Content hash of a definition's meaning: key order and formatting don't change it."""
    canonical = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _validate(model: type[BaseModel], path: Path, data: dict, lines: dict[tuple, int], issues: list[Issue]):
    try:
        return model.model_validate({**data, "file": str(path), "content_hash": _hash(data)})
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            # Tagged-union and literal errors append type names; trim to the real key path.
            key_path = tuple(p for p in loc if isinstance(p, int) or p in _flatten_keys(data, loc))
            line = None
            for cut in range(len(key_path), -1, -1):
                if key_path[:cut] in lines:
                    line = lines[key_path[:cut]]
                    break
            field = ".".join(str(p) for p in key_path) or None
            message = error["msg"]
            if error["type"] == "missing":
                message = "required field is missing"
            elif error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling against the documented fields)"
            elif error["type"] == "literal_error":
                message = f"{message}, got {error.get('input')!r}"
            issues.append(Issue("error", str(path), message.removeprefix("Value error, "), line=line, field=field))
        return None


def _flatten_keys(data: Any, loc: tuple) -> set:
    keys: set = set()
    node = data
    for part in loc:
        keys.add(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
    return keys


def load_definitions(root: str | Path) -> tuple[Catalogue, list[Issue]]:
    """Load every definition under ``root``; return what loaded and every problem found."""
    root = Path(root)
    issues: list[Issue] = []
    sources: dict[str, SourceDefinition] = {}
    metrics: dict[str, MetricDefinition] = {}
    dimensions = Dimensions()
    if not root.is_dir():
        issues.append(Issue("error", str(root), "definitions folder not found"))
        return Catalogue(sources={}, metrics={}, dimensions=dimensions, root=str(root)), issues

    dim_path = root / "dimensions.yaml"
    if dim_path.exists():
        data, lines, _ = _read_yaml(dim_path, issues)
        if data is not None:
            dimensions = _validate(Dimensions, dim_path, data, lines, issues) or dimensions

    seen_files: dict[str, str] = {}
    for kind, model, target in (("sources", SourceDefinition, sources), ("metrics", MetricDefinition, metrics)):
        for path in sorted((root / kind).glob("*.y*ml")):
            data, lines, _ = _read_yaml(path, issues)
            if data is None:
                continue
            item = _validate(model, path, data, lines, issues)
            if item is None:
                continue
            if item.id in target:
                issues.append(Issue("error", str(path), f"duplicate id '{item.id}' (also in {seen_files[item.id]})",
                                    line=lines.get(("id",)), field="id"))
                continue
            seen_files[item.id] = str(path)
            target[item.id] = item

    catalogue = Catalogue(sources=sources, metrics=metrics, dimensions=dimensions, root=str(root))
    from metrics.rules import check_catalogue  # cross-definition rules live in one place

    issues.extend(check_catalogue(catalogue))
    return catalogue, issues


def load_catalogue(root: str | Path) -> Catalogue:
    """Load definitions or raise ``DefinitionError`` listing every error (warnings are allowed)."""
    catalogue, issues = load_definitions(root)
    errors = [i for i in issues if i.level == "error"]
    if errors:
        raise DefinitionError(errors)
    return catalogue
