"""The declarative pipeline spec: pydantic models, YAML loading and errors that name file and field."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_assets.core import plugins

logger = logging.getLogger(__name__)
BUILTIN_SPECS_DIR = Path(__file__).parent / "examples"

AggFunction = Literal["count", "sum", "mean", "min", "max", "std", "n_unique", "last"]
DType = Literal["string", "int", "float", "bool", "datetime", "date"]
_NAME = r"^[a-z][a-z0-9_]*$"
# Text read as a declared `bool` column, whatever its case and surrounding spaces: a yes/no label is a binary label.
TEXT_BOOLEANS = {
    **dict.fromkeys(("true", "t", "yes", "y", "1", "1.0"), True),
    **dict.fromkeys(("false", "f", "no", "n", "0", "0.0"), False),
}
_DURATION = re.compile(r"^(\d+)(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SpecError(ValueError):
    """A spec that cannot be used, with every problem located by file and field path."""

    def __init__(self, path: Path | str, problems: Iterable[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid spec {self.path}:\n{lines}")


def parse_duration(text: str) -> timedelta:
    """'15m', '1h', '7d', '2w' -> timedelta (the same strings polars accepts as window sizes)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a positive duration like '15m', '1h', '7d' or '2w', got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


Duration = Annotated[str, Field(pattern=_DURATION.pattern, examples=["1h", "7d", "30d"])]


# Specs are data: the only code a spec names (feature functions, estimators) must live in these packages or in the
# spec's own `code_packages`. Importing a module runs it, so the check comes before any import.
TRUSTED_PACKAGES = ("sklearn", "mlops_assets.examples", "mlops_assets.demo")


class SpecSection(BaseModel):
    """A section of the spec: unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self) -> str:
        """A short stable hash of this declaration: the asset's code version, so a spec change shows as unsynced."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


# The longest text a request feature may carry when its column declares no `max_length` (a category, a country).
DEFAULT_MAX_LENGTH = 256


class ColumnSpec(SpecSection):
    """A declared column: its type and the value constraints that become its pandera checks."""

    dtype: DType = Field(description="the column's type: string, int, float, bool, datetime or date")
    nullable: bool = Field(
        default=True,
        description="whether a value may be missing (a missing value of a non-nullable column quarantines its row)",
    )
    min: float | None = Field(default=None, description="the smallest allowed value (numbers)")
    max: float | None = Field(default=None, description="the largest allowed value (numbers)")
    isin: list[str] | None = Field(default=None, description="allowed values (categorical columns)")
    max_length: int | None = Field(
        default=None,
        ge=1,
        description=f"string columns: the longest value, in characters (ingestion quarantines longer ones; serving "
        f"answers 400; a request feature without one is capped at {DEFAULT_MAX_LENGTH})",
    )

    @model_validator(mode="after")
    def _length_of_text(self) -> ColumnSpec:
        if self.max_length is not None and self.dtype != "string":
            raise ValueError(f"'max_length' applies to string columns, not to dtype {self.dtype!r}")
        return self


class ConstraintSpec(SpecSection):
    """Value constraints on a computed feature."""

    nullable: bool = Field(default=True, description="whether the feature may be missing")
    min: float | None = Field(default=None, description="the smallest allowed value")
    max: float | None = Field(default=None, description="the largest allowed value")


class EntitySpec(SpecSection):
    """What the features describe, and the columns that identify one."""

    name: str = Field(
        pattern=_NAME,
        description="what the features describe (customer, card, plane): names the entity in the UI and the API",
    )
    keys: list[str] = Field(
        min_length=1, description="the columns that identify an entity, in every feature source and the label source"
    )
    pattern: str | None = Field(
        default=None, description="a regular expression every key value must match; serving answers 400 otherwise"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


class GeneratorSpec(SpecSection):
    """A data generator, a plugin named by dotted path: `function(params, table, day, path)` writes one day of `table`
    to `path` (deterministic per day) and returns its row count. The object may declare `tables` (the tables it
    writes) and `config` (a pydantic model of its params): both are checked when the spec loads."""

    function: str = Field(
        pattern=r"^[\w.]+:\w+$",
        description="'package.module:attribute', inside the packages the spec may run code from",
        examples=["mlops_assets.demo.generator:fraud_tables"],
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the generator's settings")

    def load(self) -> Any:
        return plugins.load(self.function)

    def problems(self, where: str) -> list[str]:
        """Its params checked by its own `config` model, each problem located; an import failure is one."""
        try:
            generator = self.load()
        except plugins.PluginError as exc:
            return [f"{where}.function: {exc}"]
        config = getattr(generator, "config", None)
        if config is None:
            return []
        try:
            config.model_validate(self.params)
        except ValidationError as exc:
            return [f"{where}.params.{_format_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        return []

    def tables(self) -> tuple[str, ...] | None:
        """The tables the generator declares it writes, or None when it does not say."""
        tables = getattr(self.load(), "tables", None)
        return tuple(tables) if tables is not None else None


class SourceSpec(SpecSection):
    """A table of events read from daily files (Parquet or CSV), optionally written there by a generator."""

    path: str = Field(description="glob relative to the data folder; '{date}' is replaced by the partition day")
    format: Literal["parquet", "csv"] | None = Field(default=None, description="inferred from the suffix")
    generator: str | None = Field(default=None, description="'GENERATOR.TABLE' from the spec's generators")
    event_timestamp: str = Field(
        description="the column with each row's event time: rows are partitioned by its UTC day"
    )
    created_timestamp: str | None = Field(default=None, description="ingestion time, for as-of builds")
    columns: dict[str, ColumnSpec] = Field(
        min_length=1,
        description="every column read, with its type and constraints (the file may have others; they are ignored)",
    )
    max_rejected_share: float = Field(
        default=0.01, ge=0, le=1, description="a larger share of quarantined rows in a day fails the raw table's check"
    )

    @property
    def file_format(self) -> str:
        return self.format or ("csv" if self.path.endswith(".csv") else "parquet")


class AggregationSpec(SpecSection):
    """Aggregations of one column over trailing windows; `count` needs no column."""

    column: str | None = Field(default=None, description="the source column aggregated (not needed for count)")
    functions: list[AggFunction] = Field(min_length=1, description="count, sum, mean, min, max, std, n_unique, last")
    windows: list[Duration] = Field(
        min_length=1, description="trailing windows like 1h, 1d, 7d: each function over each window is a feature"
    )

    @model_validator(mode="after")
    def _column_needed(self) -> AggregationSpec:
        if self.column is None and set(self.functions) != {"count"}:
            raise ValueError("'column' is required for every function except 'count'")
        return self

    def feature_names(self) -> list[str]:
        return list(self.feature_windows())

    def feature_windows(self) -> dict[str, timedelta]:
        """Each feature's name and the history it aggregates (`last`: the longest window of the aggregation)."""
        names: dict[str, timedelta] = {}
        longest = max(parse_duration(w) for w in self.windows)
        for fn in self.functions:
            if fn == "last":
                names[f"{self.column}_last"] = longest
                continue
            for window in self.windows:
                names[f"count_{window}" if fn == "count" else f"{self.column}_{fn}_{window}"] = parse_duration(window)
        return names


class FeatureViewSpec(SpecSection):
    """Features per entity computed by one function, used offline and online alike."""

    source: str = Field(description="the source whose events the features are computed from")
    ttl: Duration = Field(
        description="how long a feature row stays valid: an older row is stale, nulled in training and in serving"
    )
    description: str = Field(default="", description="what the view is for, shown on its asset")
    aggregations: list[AggregationSpec] = Field(
        default_factory=list, description="declarative features: functions of a column over trailing windows"
    )
    function: str | None = Field(
        default=None, description="dotted path 'package.module:function', LazyFrame -> LazyFrame"
    )
    lookback: Duration | None = Field(
        default=None, description="history a custom function needs (aggregations: the longest window)"
    )
    constraints: dict[str, ConstraintSpec] = Field(
        default_factory=dict, description="value constraints of computed features, checked on every materialization"
    )
    max_rejected_share: float = Field(
        default=0.01, ge=0, le=1, description="a larger share of rows breaking the constraints fails the view's check"
    )
    max_unusable_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="training set: a larger share of rows without this view's features (none yet, or older than "
        "its TTL) fails the training set's check",
    )

    @model_validator(mode="after")
    def _one_definition(self) -> FeatureViewSpec:
        if bool(self.aggregations) == bool(self.function):
            raise ValueError("declare exactly one of 'aggregations' or 'function'")
        if self.function and not self.lookback:
            raise ValueError("a 'function' view needs 'lookback' (how much history it reads)")
        if self.function and not re.match(r"^[\w.]+:\w+$", self.function):
            raise ValueError(f"'function' must look like 'package.module:function', got {self.function!r}")
        return self

    def feature_names(self) -> list[str] | None:
        """Names of the aggregation features, or None for a custom function (known only when it runs)."""
        if self.function:
            return None
        return [name for agg in self.aggregations for name in agg.feature_names()]

    def feature_windows(self) -> dict[str, timedelta] | None:
        """Each aggregation feature and the history it needs; None for a custom function (its `lookback` for all)."""
        if self.function:
            return None
        return {name: window for agg in self.aggregations for name, window in agg.feature_windows().items()}

    @property
    def lookback_delta(self) -> timedelta:
        if self.lookback:
            return parse_duration(self.lookback)
        return max(parse_duration(w) for agg in self.aggregations for w in agg.windows)


class LabelSpec(SpecSection):
    """Label events: what happened to a prediction, known only at `timestamp`, later than the prediction."""

    source: str = Field(description="the source holding the labels (and, in training, the request features)")
    column: str = Field(description="the label: what the model learns to predict")
    timestamp: str = Field(description="when the label became known")
    prediction_timestamp: str = Field(description="when the prediction was made; features are joined as of it")
    feature_cutoff: Literal["at", "before", "previous_day"] = Field(
        default="at",
        description="'at': feature rows at or before the prediction time; 'before': strictly before, so an "
        "event that is itself the prediction request does not count in its own features; 'previous_day': rows of "
        "the days before the prediction's day, what the online store (synced by the daily job) holds when it is made: "
        "training on fresher rows than serving has is training-serving skew",
    )
    request_id: str | None = Field(
        default=None,
        description="the column holding the id the prediction request was made with (its request_id): joins "
        "logged predictions to their labels, to compare champion and challenger on live traffic",
    )
    known_with_label: list[str] = Field(
        default_factory=list,
        description="other columns of the label source known only when the label is (a settlement amount, a "
        "closing reason): like the label itself, never a request feature or an aggregated column",
    )


Task = Literal["binary", "multiclass", "regression"]
Metric = Literal[
    "roc_auc", "pr_auc", "log_loss", "precision", "recall", "accuracy", "macro_f1", "rmse", "mae", "r2", "mape"
]
# The metrics each kind of problem is measured with; the first is the promotion gate's default.
TASK_METRICS: dict[str, list[str]] = {
    "binary": ["roc_auc", "pr_auc", "log_loss", "precision", "recall"],
    "multiclass": ["macro_f1", "accuracy", "log_loss"],
    "regression": ["rmse", "mae", "r2", "mape"],
}
# For these, smaller is better: a gate's minimum is a ceiling, an improvement is a decrease.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mape"})


class PreprocessingSpec(SpecSection):
    """How model inputs are prepared inside the logged pipeline (so serving never re-implements it)."""

    numeric_impute: Literal["median", "mean", "zero"] = Field(
        default="median",
        description="how a missing numeric input is filled: median, mean or zero (of the training part)",
    )
    scale: bool = Field(default=True, description="standardize numeric inputs")
    categorical_encoding: Literal["onehot", "ordinal"] = Field(default="onehot", description="onehot or ordinal")
    categorical: list[str] | None = Field(default=None, description="default: the string-typed inputs")
    max_categories: int = Field(
        default=20, ge=2, description="the most frequent categories kept per input; rarer ones share one code"
    )


class ModelSpec(SpecSection):
    """A scikit-learn estimator trained on the training set, evaluated on its most recent period."""

    task: Task = Field(
        default="binary",
        description="binary: a 0/1 or true/false label, answered with the positive class's probability; "
        "multiclass: a label with a few classes, answered with a class and each class's probability; "
        "regression: a numeric label, answered with a predicted value",
    )
    estimator: str = Field(
        pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$",
        examples=["sklearn.linear_model.LogisticRegression"],
        description="a scikit-learn estimator class by dotted path",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the estimator")
    features: list[str] | None = Field(default=None, description="default: every feature and request feature")
    preprocessing: PreprocessingSpec = Field(
        default_factory=PreprocessingSpec, description="how inputs are prepared inside the registered pipeline"
    )
    holdout: Duration = Field(default="7d", description="the most recent period of predictions, held out")
    seed: int = Field(
        default=0,
        description="the random seed of the estimator and of anything random in training (recorded with the version)",
    )
    threshold: float = Field(
        default=0.5, ge=0, le=1, description="binary: score at or above which the decision is positive"
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        description="the metrics computed on the holdout; default: the task's own ("
        + "; ".join(f"{task}: {', '.join(metrics)}" for task, metrics in TASK_METRICS.items())
        + ")",
    )
    slice_by: str | None = Field(default=None, description="a categorical column: metrics per value")
    min_class_rows: int = Field(
        default=20, ge=1, description="classification: fewer training examples of a class is too little to learn"
    )
    min_distinct_targets: int = Field(
        default=10, ge=2, description="regression: fewer distinct label values in training is too little to learn"
    )

    @model_validator(mode="after")
    def _metrics_of_task(self) -> ModelSpec:
        allowed = TASK_METRICS[self.task]
        if not self.metrics:
            object.__setattr__(self, "metrics", list(allowed))  # frozen: the default depends on the task
        wrong = [m for m in self.metrics if m not in allowed]
        if wrong:
            raise ValueError(f"metrics {wrong} do not apply to task {self.task!r} (its metrics: {allowed})")
        if self.task != "binary" and "threshold" in self.model_fields_set:
            raise ValueError(f"'threshold' applies to binary models only, not to task {self.task!r}")
        return self


# The metrics a fairness guard may compare between groups, per task: the task's own and, for binary models, the
# rates at the decision threshold (false-positive rate; positive rate, the share of positive decisions).
FAIRNESS_METRICS: dict[str, list[str]] = {
    "binary": [*TASK_METRICS["binary"], "false_positive_rate", "positive_rate", "accuracy"],
    "multiclass": TASK_METRICS["multiclass"],
    "regression": TASK_METRICS["regression"],
}
FairnessMetric = Literal[
    "roc_auc",
    "pr_auc",
    "log_loss",
    "precision",
    "recall",
    "false_positive_rate",
    "positive_rate",
    "accuracy",
    "macro_f1",
    "rmse",
    "mae",
    "r2",
    "mape",
]


class FairnessGuard(SpecSection):
    """The largest gap of a metric allowed between the groups of a protected attribute, on the holdout."""

    attribute: str = Field(
        description="a column of the training set (a request feature, a view's feature, an entity key, or a column "
        "of the label source, carried into the training set for evaluation only and never a model input): each "
        "value is a group"
    )
    metric: FairnessMetric = Field(
        description="the metric compared between groups: "
        + "; ".join(f"{task}: {', '.join(metrics)}" for task, metrics in FAIRNESS_METRICS.items())
    )
    max_gap: float = Field(ge=0, description="the largest allowed difference between the best and worst group")
    min_group_rows: int = Field(
        default=50,
        ge=1,
        description="a group with fewer holdout rows (or where the metric is undefined) is reported, not gated",
    )


class LatencyBudget(SpecSection):
    """The slowest in-process scoring a candidate may have, in milliseconds (each field optional)."""

    single_p50: float | None = Field(default=None, gt=0, description="median time to score one row")
    single_p99: float | None = Field(default=None, gt=0, description="99th percentile time to score one row")
    batch_100_p50: float | None = Field(default=None, gt=0, description="median time to score 100 rows at once")
    batch_100_p99: float | None = Field(
        default=None, gt=0, description="99th percentile time to score 100 rows at once"
    )

    @model_validator(mode="after")
    def _some_budget(self) -> LatencyBudget:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError("declare at least one of single_p50, single_p99, batch_100_p50, batch_100_p99")
        return self


# Timed calls a 99th percentile budget needs: its figure then rests on the ten slowest calls, not one stray pause.
P99_CALLS = 1000


class PromotionSpec(SpecSection):
    """When a candidate may replace the champion."""

    metric: Metric | None = Field(default=None, description="default: the first of model.metrics")
    minimum: float = Field(
        description="the absolute floor of the metric (a ceiling for the lower-is-better log_loss, rmse, mae, mape)"
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="how much better than the champion a candidate must be (0: at least as good)"
    )
    improvement: Literal["absolute", "relative"] = Field(
        default="absolute", description="absolute: in the metric's units; relative: a fraction of the champion's value"
    )
    max_slice_drop: float | None = Field(default=None, ge=0, description="no slice may get worse by more")
    min_slice_rows: int = Field(default=50, ge=1, description="smaller slices are too noisy to guard")
    policy: Literal["champion", "challenger"] = Field(
        default="champion", description="a passing candidate becomes champion directly, or challenger only"
    )
    retention: Duration = Field(default="30d", description="archive never-promoted versions older than this")
    min_shadow_rows: int = Field(
        default=200, ge=1, description="labelled live predictions needed before a shadow comparison can promote"
    )
    fairness: list[FairnessGuard] = Field(
        default_factory=list,
        description="guards on protected attributes: a metric's gap between groups over `max_gap` on the holdout "
        "fails the gate",
    )
    latency_budget_ms: LatencyBudget | None = Field(
        default=None,
        description="the candidate's in-process scoring latency (one row, 100 rows) must be within these; measured "
        "and recorded on every version whether declared or not",
    )
    latency_calls: int = Field(
        default=200,
        ge=10,
        description="timed scoring calls per measurement (after 10% as many untimed warm-up calls); with a p99 "
        f"budget the default is {P99_CALLS} and fewer are refused: a 99th percentile of 200 calls is their second "
        "slowest, one stray pause",
    )
    approvers: list[str] | None = Field(
        default=None,
        description="who may change the champion (`mlops promote`, `--from-shadow`, `--from-ab`, `mlops rollback`): "
        "people by name (as MLOPS_ACTOR, or the OS user, names them) or `group:<name>` (members listed in "
        "`groups_file`); absent: anyone, recorded",
        examples=[["alice", "group:fraud-leads"]],
    )
    groups_file: str | None = Field(
        default=None,
        description="a YAML file (relative to the data folder) mapping each group named in `approvers` to its members",
        examples=["governance/groups.yaml"],
    )
    require_approval: bool = Field(
        default=False,
        description="a candidate that passes the gate (retrained or not) waits as challenger until an approver "
        "promotes it; only a pipeline's first version becomes champion by the gate alone",
    )
    separate_duties: bool = Field(
        default=False, description="the identity that trained a version (its `trained_by` tag) cannot approve it"
    )

    @model_validator(mode="after")
    def _approvers_name_someone(self) -> PromotionSpec:
        if self.approvers is not None:
            if not self.approvers:
                raise ValueError("approvers: an empty list names nobody (omit it to let anyone promote)")
            blank = [a for a in self.approvers if not a.strip() or a.strip() == "group:"]
            if blank:
                raise ValueError(f"approvers: {blank} names nobody: give a name or group:<name>")
            if any(a.startswith("group:") for a in self.approvers) and not self.groups_file:
                raise ValueError("approvers names a group: declare groups_file, where its members are listed")
        for flag in ("require_approval", "separate_duties"):
            if getattr(self, flag) and self.approvers is None:
                raise ValueError(f"{flag}: needs approvers (nobody would be allowed to approve)")
        if self._p99_budget and "latency_calls" in self.model_fields_set and self.latency_calls < P99_CALLS:
            raise ValueError(
                f"latency_calls: {self.latency_calls} calls are too few for a p99 budget (its 99th percentile would "
                f"rest on the {max(1, self.latency_calls // 100)} slowest): at least {P99_CALLS}, or omit it"
            )
        return self

    @property
    def _p99_budget(self) -> bool:
        budget = self.latency_budget_ms
        return budget is not None and (budget.single_p99 is not None or budget.batch_100_p99 is not None)

    @property
    def timed_calls(self) -> int:
        """Scoring calls timed per latency measurement: as declared, else P99_CALLS with a p99 budget, else 200."""
        if "latency_calls" in self.model_fields_set or not self._p99_budget:
            return self.latency_calls
        return P99_CALLS


class FallbackRule(SpecSection):
    """A rule on a request feature: the first matching rule gives the fallback answer."""

    feature: str = Field(description="the request feature the rule looks at")
    above: float | None = Field(default=None, description="matches when the feature is above this")
    below: float | None = Field(default=None, description="matches when the feature is below this")
    isin: list[str] | None = Field(default=None, description="matches when the feature is one of these")
    score: float | None = Field(default=None, description="binary: a probability; regression: a predicted value")
    label: str | None = Field(default=None, description="multiclass: the class answered")

    @model_validator(mode="after")
    def _one_condition(self) -> FallbackRule:
        if sum(c is not None for c in (self.above, self.below, self.isin)) != 1:
            raise ValueError("declare exactly one of 'above', 'below' or 'isin'")
        return self

    def matches(self, request: dict[str, Any]) -> bool:
        value = request.get(self.feature)
        if value is None:
            return False
        if self.isin is not None:
            return str(value) in self.isin
        return bool(value > self.above) if self.above is not None else bool(value < self.below)


class FallbackSpec(SpecSection):
    """The answer when features cannot be had (online store down, nothing cached within TTL): low confidence."""

    score: float | None = Field(
        default=None, description="binary: the default probability; regression: the default predicted value"
    )
    label: str | None = Field(default=None, description="multiclass: the default class")
    rules: list[FallbackRule] = Field(default_factory=list, description="request-feature rules, first match wins")

    def score_for(self, request: dict[str, Any]) -> tuple[float | str, str]:
        """(the answer: a score, a value or a class; which rule gave it) for one request."""
        for i, rule in enumerate(self.rules):
            if rule.matches(request):
                return _answer(rule), f"fallback rule {i} ({rule.feature})"
        return _answer(self), "fallback default score"

    def problems(self, task: str) -> list[str]:
        """What this fallback lacks, or has wrong, for a model of `task` (a located message each)."""
        entries: list[tuple[str, FallbackSpec | FallbackRule]] = [("serving.fallback", self)]
        entries += [(f"serving.fallback.rules[{i}]", rule) for i, rule in enumerate(self.rules)]
        problems = []
        for where, entry in entries:
            if task == "multiclass" and (entry.label is None or entry.score is not None):
                problems.append(f"{where}: a multiclass fallback answers a class: declare 'label', not 'score'")
            elif task != "multiclass" and (entry.score is None or entry.label is not None):
                problems.append(f"{where}: a {task} fallback answers a score: declare 'score', not 'label'")
            elif task == "binary" and entry.score is not None and not 0 <= entry.score <= 1:
                problems.append(f"{where}.score: a binary fallback's score is a probability in [0, 1]")
        return problems


def _answer(entry: FallbackSpec | FallbackRule) -> float | str:
    answer = entry.label if entry.label is not None else entry.score
    assert answer is not None, "checked by FallbackSpec.problems when the spec is loaded"
    return answer


# The task's metrics that are a mean of one value per request (what an A/B test compares): a rate over labelled rows
# (precision: the rows flagged positive; recall: the positive rows; accuracy) or a mean loss. roc_auc, pr_auc,
# macro_f1, rmse, r2 and mape are not means of per-request values.
AB_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("precision", "recall", "log_loss"),
    "multiclass": ("accuracy", "log_loss"),
    "regression": ("mae",),
}


class ABOutcome(SpecSection):
    """A business outcome per request (a conversion, a revenue), from a source joined to the log by request id."""

    source: str = Field(description="the source whose rows carry the outcome (ingested like any source)")
    column: str = Field(description="the outcome: a bool or a 0/1 number (a rate), or any number (a mean)")
    request_id: str = Field(description="the column of the source holding the request_id the prediction was made with")
    higher_is_better: bool = Field(default=True, description="false: a smaller outcome is better (a cost)")


class ABTestSpec(SpecSection):
    """An A/B test of the challenger against the champion: a sticky share of entities answered by the challenger,
    a primary metric per request, and a group-sequential test that decides once the evidence is enough."""

    metric: Metric | None = Field(
        default=None,
        description="the primary metric from labels, per request: "
        + "; ".join(f"{task}: {', '.join(metrics)}" for task, metrics in AB_METRICS.items())
        + " (declare this or `outcome`)",
    )
    outcome: ABOutcome | None = Field(default=None, description="the primary metric from a business outcome column")
    minimum_detectable_effect: float = Field(
        gt=0,
        description="the smallest difference worth detecting, in the metric's units (a rate: 0.02 is 2 points; "
        "log_loss, mae or a numeric outcome: its own units)",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="significance level: the chance of declaring a winner when there is none",
    )
    power: float = Field(
        default=0.8, gt=0.5, lt=1, description="the chance of a winner when the true difference is the effect"
    )
    looks: int = Field(
        default=5,
        ge=1,
        le=50,
        description="planned interim analyses, at equal steps of information up to the planned sample: the test "
        "looks only there, however often its asset is materialized",
    )
    challenger_share: float = Field(
        default=0.5, gt=0, lt=1, description="the share of entities (sticky by entity key) the challenger answers"
    )

    @model_validator(mode="after")
    def _one_metric(self) -> ABTestSpec:
        if (self.metric is None) == (self.outcome is None):
            raise ValueError("declare exactly one of 'metric' (from labels) or 'outcome' (a business outcome column)")
        return self

    @property
    def higher_is_better(self) -> bool:
        if self.outcome is not None:
            return self.outcome.higher_is_better
        return self.metric not in LOWER_IS_BETTER

    @property
    def metric_name(self) -> str:
        return self.metric if self.metric is not None else f"outcome {self.outcome.column}"  # type: ignore[union-attr]


class PiiSpec(SpecSection):
    """Request fields that are personal data: never stored as sent (prediction log files, its Delta table, anything
    else under the data folder)."""

    fields: dict[str, Literal["drop", "hash"]] = Field(
        min_length=1,
        description="request feature -> `drop` (removed before anything is written) or `hash` (replaced by its "
        "HMAC-SHA256 under the key in `hash_key_env`: equal values stay equal, the value cannot be read back)",
        examples=[{"email": "drop", "phone": "hash"}],
    )
    hash_key_env: str = Field(
        default="MLOPS_PII_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the hash key (read by the service when it starts, never stored); "
        "required when a field is hashed",
    )


class ServingSpec(SpecSection):
    """How the prediction service answers: online lookups, fallback, rollout of a challenger, logging, auth."""

    online_timeout_ms: float = Field(default=100, gt=0, description="an online lookup slower than this degrades")
    cache_size: int = Field(default=10_000, ge=0, description="recent feature rows kept to answer during outages")
    max_in_flight: int = Field(
        default=64, ge=1, description="prediction requests in progress per worker; beyond it: 429 with Retry-After"
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="the Retry-After of a 429 or 503")
    max_batch_rows: int = Field(
        default=1000, ge=1, description="requests per /predict_batch call; a larger call is refused whole with 413"
    )
    max_clock_skew: Duration = Field(
        default="5m",
        description="a request `timestamp` (replays) later than the server's clock by more than this is refused",
    )
    recent_request_ids: int = Field(
        default=100_000,
        ge=0,
        description="request ids each serving worker remembers: a repeated one is refused with 409 (0: no memory)",
    )
    fallback: FallbackSpec | None = Field(
        default=None, description="default: score with the missing features imputed, marked degraded"
    )
    rollout: Literal["champion_only", "shadow", "canary", "ab"] = Field(
        default="shadow",
        description="with a challenger: 'shadow' scores it beside the champion without changing the answer; "
        "'canary' lets it answer for `canary_share` of the entities (sticky) while the champion shadows; 'ab' "
        "answers `ab_test.challenger_share` of the entities with it (sticky) and tests the difference",
    )
    canary_share: float = Field(
        default=0.0, ge=0, le=1, description="canary: the share of entities the challenger answers for"
    )
    ab_test: ABTestSpec | None = Field(
        default=None, description="rollout 'ab': the primary metric, the effect to detect, alpha, power and looks"
    )
    refresh_seconds: float = Field(default=10, gt=0, description="how often the service re-reads the aliases")
    log_batch_size: int = Field(default=200, ge=1, description="prediction log: records per flushed file")
    log_flush_seconds: float = Field(default=1.0, gt=0, description="prediction log: longest wait before a flush")
    allow_replay: bool = Field(
        default=False,
        description="requests may carry `timestamp` (when the prediction was made) to replay past traffic: TTLs and "
        "the prediction log use that time. Off in production: a client could make stale rows look fresh",
    )
    api_key_env: str = Field(
        default="MLOPS_API_KEY",
        description="environment variable holding the API key; when it is set, /predict, /predict_batch and /models "
        "require it",
    )
    pii: PiiSpec | None = Field(
        default=None, description="request fields that are personal data: dropped or hashed before anything is written"
    )
    log_retention: Duration | None = Field(
        default=None,
        description="the prediction log's days older than this (files and Delta partitions) are deleted and the "
        "table vacuumed, so their files are gone; absent: kept",
        examples=["90d"],
    )

    @field_validator("log_retention")
    @classmethod
    def _retention_in_days(cls, retention: str | None) -> str | None:
        if retention is not None and parse_duration(retention) % timedelta(days=1):
            raise ValueError(f"the prediction log is kept by whole days (30d, 12w), got {retention!r}")
        return retention

    @property
    def challenger_share(self) -> float:
        """The share of entities (sticky) the challenger answers for: the canary's, the A/B test's, else none."""
        if self.rollout == "canary":
            return self.canary_share
        if self.rollout == "ab" and self.ab_test is not None:
            return self.ab_test.challenger_share
        return 0.0


class Threshold(SpecSection):
    """Levels of one effect size: at or above `warn` a check warns, at or above `error` it fails."""

    warn: float = Field(ge=0, description="at or above this, the check warns")
    error: float = Field(ge=0, description="at or above this, the check fails")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.error < self.warn:
            raise ValueError(f"error ({self.error}) must be at least warn ({self.warn})")
        return self

    def level(self, value: float | None) -> Literal["ok", "warn", "error"]:
        if value is None or value < self.warn:
            return "ok"
        return "error" if value >= self.error else "warn"


class DriftThresholds(SpecSection):
    """Effect sizes that count as drift (never bare p-values: with enough rows, every trivial shift is significant)."""

    ks: Threshold = Field(default_factory=lambda: Threshold(warn=0.1, error=0.2), description="numeric: KS statistic")
    psi: Threshold = Field(default_factory=lambda: Threshold(warn=0.1, error=0.25), description="population stability")
    null_rate_increase: Threshold = Field(
        default_factory=lambda: Threshold(warn=0.05, error=0.2), description="current minus reference null share"
    )
    unseen_share: Threshold = Field(
        default_factory=lambda: Threshold(warn=0.01, error=0.05),
        description="categorical: share of current values the reference never had",
    )


class RetrainingPolicy(SpecSection):
    """When sustained drift (or a performance drop) retrains, and what happens to the retrained model."""

    sustained_k: int = Field(default=2, ge=1, description="retrain when k of the last n windows failed a check")
    sustained_n: int = Field(default=3, ge=1, description="the number of most recent windows looked at")
    cooldown: Duration = Field(default="3d", description="no retraining this long after the last one")
    max_per_week: int = Field(default=2, ge=0, description="at most this many retraining runs in any 7 days")
    promotion: Literal["automatic", "manual"] = Field(
        default="automatic", description="automatic: through the promotion gate; manual: waits for `mlops promote`"
    )
    challenger_patience: Duration = Field(
        default="7d",
        description="a challenger waiting for its shadow comparison holds retraining back this long (labels come "
        "late: a new challenger every cooldown would never be compared)",
    )

    @model_validator(mode="after")
    def _k_of_n(self) -> RetrainingPolicy:
        if self.sustained_k > self.sustained_n:
            raise ValueError(f"sustained_k ({self.sustained_k}) cannot exceed sustained_n ({self.sustained_n})")
        return self


class MonitoringSpec(SpecSection):
    """How drift is measured against the reference (the champion's training set) and when it retrains."""

    reference: Literal["champion_training_set"] = Field(
        default="champion_training_set", description="what a window is compared with: the champion's training set"
    )
    window: Duration = Field(
        default="1d",
        description="the traffic a day's drift report grades: its own day (1d), or a rolling window of days ending "
        "with it (7d, 2w) when a day alone has fewer than min_rows",
    )
    psi_bins: int = Field(default=10, ge=2, description="numeric PSI: quantile bins of the reference")
    p_values: bool = Field(
        default=False,
        description="report the KS p-value of numeric features too (never graded; the most expensive statistic of a "
        "large window)",
    )
    min_rows: int = Field(default=200, ge=1, description="a window with fewer rows is reported, never graded")
    thresholds: DriftThresholds = Field(
        default_factory=DriftThresholds, description="the effect sizes that count as feature drift"
    )
    dataset_drift_share: Threshold = Field(
        default_factory=lambda: Threshold(warn=0.2, error=0.3),
        description="share of features at error level that counts as dataset drift",
    )
    prediction_drift: DriftThresholds = Field(
        default_factory=DriftThresholds, description="the score distribution against the reference scores"
    )
    fallback_rate: Threshold = Field(
        default_factory=lambda: Threshold(warn=0.01, error=0.05), description="share of degraded answers"
    )
    performance_floor: float | None = Field(
        default=None, description="the champion's promotion metric on labelled live traffic must stay above it"
    )
    performance_window: Duration = Field(
        default="7d",
        description="a day's performance covers the predictions of this many days up to it, with the labels "
        "confirmed by its end (labels come late: the day alone would have almost none)",
    )
    skew_share: Threshold = Field(
        default_factory=lambda: Threshold(warn=0.0001, error=0.01),
        description="share of served values that differ from the offline row they came from (worst feature)",
    )
    retraining: RetrainingPolicy = Field(
        default_factory=RetrainingPolicy,
        description="when sustained evidence retrains, and what happens to the retrained model",
    )

    @field_validator("window")
    @classmethod
    def _whole_days(cls, window: str) -> str:
        if parse_duration(window) % timedelta(days=1):
            raise ValueError(f"a monitoring window is whole days (1d, 7d, 2w), got {window!r}")
        return window

    @property
    def window_days(self) -> int:
        return parse_duration(self.window) // timedelta(days=1)


# Columns every scores table has besides the entity keys, the features' times and the carried columns.
SCORES_COLUMNS = ("prediction_time", "score", "prediction", "model_version", "run_id", "partition_date")
_CRON = re.compile(r"^[\d*/,\-A-Za-z]+( [\d*/,\-A-Za-z?]+){4}$")


class PopulationSpec(SpecSection):
    """Who a day's batch scores: each event of the day in a source (rows), or each entity active in it recently."""

    source: str = Field(description="the source whose ingested rows (`raw_<source>`) the population is read from")
    active_within: Duration | None = Field(
        default=None,
        description="entities: every entity with an event in the source in this many whole days up to the scored "
        "day (7d: the day and the 6 before), scored once each as of the day's end; omitted: rows: each event of the "
        "day, scored as of its own event time with its columns as request features",
        examples=["30d"],
    )
    carry: list[str] = Field(
        default_factory=list,
        description="rows: columns of the source copied into the scores table beside the score (an application id, "
        "to join the scores back)",
    )

    @field_validator("active_within")
    @classmethod
    def _whole_days(cls, window: str | None) -> str | None:
        if window is not None and parse_duration(window) % timedelta(days=1):
            raise ValueError(f"an activity window is whole days (1d, 30d, 2w), got {window!r}")
        return window

    @property
    def active_days(self) -> int | None:
        return None if self.active_within is None else parse_duration(self.active_within) // timedelta(days=1)


class ScoringSpec(SpecSection):
    """Batch inference as an asset: `<pipeline>/scores`, a daily partition of the day's population scored by the
    version that was champion at the day's end."""

    population: PopulationSpec = Field(description="who a day's partition scores")
    schedule: str = Field(
        default="0 2 * * *",
        description="when the day that just ended is scored (cron, UTC), once its population and features are in",
        examples=["0 2 * * *"],
    )
    chunk_rows: int = Field(
        default=250_000,
        ge=1,
        description="rows joined and scored at a time: memory holds one chunk's features and scores, whatever the "
        "population's size",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        if not _CRON.match(schedule):
            raise ValueError(f"expected a cron expression of 5 fields like '0 2 * * *', got {schedule!r}")
        return schedule


class SharedSpec(SpecSection):
    """What a pipeline takes from included files that declare a `namespace`: those sources and feature views are
    materialized once, as the namespace's assets, tables and online key space, for every pipeline including the file.
    Set by `include`; a pipeline's own file never writes it."""

    sources: dict[str, str] = Field(default_factory=dict, description="source -> the namespace owning its raw table")
    feature_views: dict[str, str] = Field(
        default_factory=dict, description="feature view -> the namespace owning its table and online key space"
    )


class PipelineSpec(SpecSection):
    """One model pipeline, declared once: its data, features, label, model, gate, serving and monitoring."""

    name: str = Field(
        pattern=_NAME, description="the pipeline's name: the prefix of its asset keys, jobs, tables and model name"
    )
    description: str = Field(default="", description="what the pipeline predicts, shown in the UI")
    owner: str | None = Field(
        default=None, description="who owns it (team:<name> or an email): the Dagster UI shows it on every asset"
    )
    start_date: date = Field(description="first daily partition of every source and feature view")
    entity: EntitySpec = Field(description="what features are computed per")
    generators: dict[Annotated[str, Field(pattern=_NAME)], GeneratorSpec] = Field(
        default_factory=dict, description="data generators (plugins) that write a source's missing days"
    )
    sources: dict[Annotated[str, Field(pattern=_NAME)], SourceSpec] = Field(
        min_length=1, description="tables of events read from daily files"
    )
    feature_views: dict[Annotated[str, Field(pattern=_NAME)], FeatureViewSpec] = Field(
        default_factory=dict,
        description="features per entity, computed by one function for training and serving alike (none, `{}`: a "
        "pipeline of request features only)",
    )
    request_features: dict[str, ColumnSpec] = Field(
        default_factory=dict,
        description="inputs that come with each prediction request (and, in training, from the label source)",
    )
    label: LabelSpec = Field(description="what the model learns and when it is known")
    model: ModelSpec | None = Field(
        default=None, description="the estimator, its inputs and how it is evaluated (absent: a feature pipeline only)"
    )
    promotion: PromotionSpec | None = Field(
        default=None, description="the gate a candidate must pass to become champion"
    )
    serving: ServingSpec = Field(default_factory=ServingSpec, description="how the prediction service answers")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="drift, data quality and performance grading, and retraining"
    )
    scoring: ScoringSpec | None = Field(
        default=None,
        description="batch inference: a daily scores table of a population, each day by its own champion (absent: "
        "no batch scoring)",
    )
    shared: SharedSpec = Field(
        default_factory=SharedSpec,
        description="set by `include` from files with a `namespace` (never written by hand): the sources and feature "
        "views this pipeline shares with the other pipelines including the same file",
    )
    code_packages: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]] = Field(
        default_factory=list,
        description="top-level packages whose code the spec may name (feature_views.*.function, model.estimator); "
        f"always allowed: {', '.join(TRUSTED_PACKAGES)}",
    )

    @field_validator("feature_views")
    @classmethod
    def _unique_feature_names(cls, views: dict[str, FeatureViewSpec]) -> dict[str, FeatureViewSpec]:
        seen: dict[str, str] = {}
        for view_name, view in views.items():
            for feature in view.feature_names() or []:
                if feature in seen:
                    raise ValueError(f"feature {feature!r} is produced by both {seen[feature]!r} and {view_name!r}")
                seen[feature] = view_name
        return views

    def source_namespace(self, source: str) -> str:
        """Whose raw table a source is: its shared namespace, or this pipeline's."""
        return self.shared.sources.get(source, self.name)

    def view_namespace(self, view: str) -> str:
        """Whose table and online key space a feature view is: its shared namespace, or this pipeline's."""
        return self.shared.feature_views.get(view, self.name)

    def sources_of(self, namespace: str) -> list[str]:
        """The sources whose raw tables `namespace` (this pipeline's name, or a shared namespace) materializes."""
        return [name for name in self.sources if self.source_namespace(name) == namespace]

    def views_of(self, namespace: str) -> list[str]:
        return [name for name in self.feature_views if self.view_namespace(name) == namespace]

    def namespaces(self) -> list[str]:
        """The shared namespaces this pipeline reads from."""
        return sorted({*self.shared.sources.values(), *self.shared.feature_views.values()})

    def in_namespace(self, namespace: str) -> PipelineSpec:
        """This spec as the shared `namespace` sees it: named after it, no model; its builders then make only the
        namespace's assets (`sources_of`, `views_of`). Every pipeline sharing it gives the same (`shared_problems`)."""
        return self.model_copy(update={"name": namespace, "owner": None, "model": None, "promotion": None})

    def code_version(self, kind: str, name: str) -> str:
        """The code version of a source's raw asset (`kind` "sources") or a view's assets ("feature_views"): its own
        declaration's fingerprint, or, shared, the hash of all it follows (`definition_hash`)."""
        if name in getattr(self.shared, kind):
            return self.definition_hash(kind, name)
        declared: SpecSection = self.sources[name] if kind == "sources" else self.feature_views[name]
        return declared.fingerprint()

    def definition_hash(self, kind: str, name: str) -> str:
        """The code version of a shared source or view: a change of anything it follows shows, one hash for all."""
        text = json.dumps(self.shared_definition(kind, name), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def shared_definition(self, kind: str, name: str) -> dict[str, Any]:
        """What must be equal in every pipeline sharing a source (`kind` "sources") or feature view ("feature_views"):
        its declaration, its source's and generator's, and the entity keys and start date its partitions and rows
        follow. Two pipelines that include one file differ here only by their own entity or start date."""
        source_name = name if kind == "sources" else self.feature_views[name].source
        source = self.sources[source_name]
        generator = source.generator.partition(".")[0] if source.generator else None
        definition: dict[str, Any] = {
            "start_date": self.start_date.isoformat(),
            f"sources.{source_name}": source.model_dump(mode="json"),
        }
        if generator in self.generators:
            definition[f"generators.{generator}"] = self.generators[generator].model_dump(mode="json")
        if kind == "feature_views":
            definition["entity.keys"] = list(self.entity.keys)
            definition[f"feature_views.{name}"] = self.feature_views[name].model_dump(mode="json")
        return definition

    def label_time_columns(self) -> dict[str, str]:
        """Columns of the label source known only when the label is, with what each is."""
        label = self.label
        columns = {
            label.column: "the label (label.column)",
            label.timestamp: "when the label became known (label.timestamp)",
        }
        for column in label.known_with_label:
            columns.setdefault(column, "known only with the label (label.known_with_label)")
        return columns

    def reserved_columns(self) -> dict[str, str]:
        """Training-set columns that are not a view's features, with what each is: no feature may take their names."""
        label = self.label
        reserved = {key: "an entity key" for key in self.entity.keys}
        reserved[label.prediction_timestamp] = "the prediction time (label.prediction_timestamp)"
        if label.request_id:
            reserved[label.request_id] = "the request id (label.request_id)"
        reserved |= {name: "a request feature" for name in self.request_features}
        reserved |= {name: "a protected attribute (promotion.fairness)" for name in self.evaluation_columns()}
        return reserved | self.label_time_columns()

    def evaluation_columns(self) -> list[str]:
        """Columns of the label source carried into the training set for evaluation only, never a model input: the
        protected attributes of `promotion.fairness` that are not already a column of it (a key, a request feature,
        an aggregation view's feature)."""
        if self.promotion is None:
            return []
        source = self.sources.get(self.label.source)
        label = self.label
        features = {f for view in self.feature_views.values() for f in view.feature_names() or []}
        present = {*self.entity.keys, *self.request_features, *features, label.prediction_timestamp}
        present |= {label.column, label.timestamp}
        return list(
            dict.fromkeys(
                guard.attribute
                for guard in self.promotion.fairness
                if source is not None and guard.attribute in source.columns and guard.attribute not in present
            )
        )

    def fairness_problems(self) -> list[str]:
        """Protected attributes that are not columns of the training set, metrics that do not fit the task, and a
        protected attribute carried for evaluation only that `model.features` would make an input."""
        if self.model is None or self.promotion is None:
            return []
        label, task = self.label, self.model.task
        source = self.sources.get(label.source)
        not_groups = {
            label.column: "the label (label.column)",
            label.timestamp: "when the label became known (label.timestamp)",
            label.prediction_timestamp: "the prediction time (label.prediction_timestamp)",
        }
        views = self.feature_views.values()
        features = [f for view in views for f in view.feature_names() or []]
        known = [*self.entity.keys, *self.request_features, *features]
        known += [c for c in (source.columns if source else {}) if c not in known and c not in not_groups]
        custom = [name for name, view in self.feature_views.items() if view.feature_names() is None]
        carried = self.evaluation_columns()
        problems = []
        for i, guard in enumerate(self.promotion.fairness):
            where = f"promotion.fairness[{i}]"
            if guard.metric not in FAIRNESS_METRICS[task]:
                problems.append(
                    f"{where}.metric: {guard.metric!r} does not apply to task {task!r} "
                    f"(its fairness metrics: {', '.join(FAIRNESS_METRICS[task])})"
                )
            if guard.attribute in not_groups:
                problems.append(
                    f"{where}.attribute: {guard.attribute!r} is {not_groups[guard.attribute]}, not an attribute "
                    "whose values are groups"
                )
            elif guard.attribute not in known and not custom:  # a custom view's features are known from its output
                problems.append(
                    f"{where}.attribute: {guard.attribute!r} is not a column of the training set (its columns: "
                    f"{', '.join(known)}); a protected attribute is an entity key, a request feature, a feature or "
                    f"a column of the label source {label.source!r}"
                )
        problems += [
            f"model.features: {name!r} is a protected attribute carried for evaluation only (promotion.fairness), "
            "not a request feature or a feature: it is never a model input"
            for name in self.model.features or []
            if name in carried
        ]
        return problems

    def feature_clash_problems(self, view_name: str, names: Iterable[str]) -> list[str]:
        """Features of `view_name` named like another column of the training set or another view's feature.

        Checked on load for aggregation views, and by the first step that sees a custom function's output (its
        feature names are known only then): a clash is an error, a column is never renamed or overwritten.
        """
        where = f"feature_views.{view_name}"
        reserved = self.reserved_columns()
        others = {
            feature: other
            for other, view in self.feature_views.items()
            if other != view_name
            for feature in view.feature_names() or []
        }
        problems = []
        for name in names:
            if name in reserved:
                problems.append(f"{where}: feature {name!r} has the name of {reserved[name]}; rename the feature")
            elif name in others:
                problems.append(f"{where}: feature {name!r} is also a feature of view {others[name]!r}; rename one")
        return problems

    def _leakage_problems(self) -> list[str]:
        """The label, or a column known only with it, used as a request feature or in a feature view."""
        label_time = self.label_time_columns()
        problems = [
            f"request_features.{name}: {name!r} is {label_time[name]}: it is not known when the prediction is made, "
            "so a model trained on it would learn the answer (leakage)"
            for name in self.request_features
            if name in label_time
        ]
        for name, view in self.feature_views.items():
            if view.source == self.label.source:
                problems += [
                    f"feature_views.{name}.aggregations[{i}].column: {agg.column!r} is {label_time[agg.column]}: "
                    "aggregating it puts the answer into the features (leakage)"
                    for i, agg in enumerate(view.aggregations)
                    if agg.column in label_time
                ]
            problems += self.feature_clash_problems(name, view.feature_names() or [])
        return problems

    def warnings(self) -> list[str]:
        """What loads but is probably wrong: columns named like another model's output, used as label or feature."""
        used = {"label.column": [self.label.column], "request_features": list(self.request_features)}
        for name, view in self.feature_views.items():
            used[f"feature_views.{name}.aggregations"] = [agg.column for agg in view.aggregations if agg.column]
        return [
            f"{where}: {column!r} is named like another model's output ({_output_tokens(column)}); "
            "a model trained on it, or to predict it, learns that model rather than the outcome"
            for where, columns in used.items()
            for column in columns
            if looks_like_model_output(column)
        ]

    def cross_reference_problems(self) -> list[str]:
        """References between sections that pydantic cannot check field by field."""
        problems: list[str] = []
        keys = self.entity.keys
        source: SourceSpec | None  # the loops bind a source; the lookups by name below may find none
        for name, source in self.sources.items():
            where = f"sources.{name}"
            declared = source.columns
            for field in ("event_timestamp", "created_timestamp"):
                column = getattr(source, field)
                if column is not None and declared.get(column, ColumnSpec(dtype="datetime")).dtype != "datetime":
                    problems.append(f"{where}.{field}: column {column!r} must be declared with dtype datetime")
                if column is not None and column not in declared:
                    problems.append(f"{where}.{field}: {column!r} is not in {where}.columns")
        allowed = [*TRUSTED_PACKAGES, *self.code_packages]
        code = {f"feature_views.{n}.function": v.function for n, v in self.feature_views.items() if v.function}
        code |= {f"generators.{n}.function": g.function for n, g in self.generators.items()}
        if self.model is not None:
            code["model.estimator"] = self.model.estimator
        untrusted = set()
        for where, dotted in code.items():
            if not any(dotted == p or dotted.startswith((f"{p}.", f"{p}:")) for p in allowed):
                untrusted.add(where)
                problems.append(
                    f"{where}: {dotted!r} is outside the packages this spec may run code from ({', '.join(allowed)}); "
                    "if you trust it, add its top-level package to code_packages"
                )
        for name, generator in self.generators.items():
            if f"generators.{name}.function" not in untrusted:  # checked before its code is imported
                problems += generator.problems(f"generators.{name}")
        for name, source in self.sources.items():
            if source.generator:
                gen, _, table = source.generator.partition(".")
                where = f"sources.{name}.generator"
                if gen not in self.generators:
                    problems.append(f"{where}: unknown generator {gen!r} (known: {sorted(self.generators)})")
                elif f"generators.{gen}.function" not in untrusted:
                    try:
                        tables = self.generators[gen].tables()
                    except plugins.PluginError:
                        tables = None  # reported with the generator
                    if tables is not None and table not in tables:
                        problems.append(f"{where}: unknown table {table!r} (generator {gen!r} writes {list(tables)})")
        for name, view in self.feature_views.items():
            where = f"feature_views.{name}"
            source = self.sources.get(view.source)
            if source is None:
                problems.append(f"{where}.source: unknown source {view.source!r} (known: {sorted(self.sources)})")
                continue
            problems += [
                f"{where}.source: entity key {k!r} is not a column of source {view.source!r}"
                for k in keys
                if k not in source.columns
            ]
            for i, agg in enumerate(view.aggregations):
                if agg.column is not None and agg.column not in source.columns:
                    problems.append(
                        f"{where}.aggregations[{i}].column: {agg.column!r} is not a column of source {view.source!r}"
                    )
            names = view.feature_names()
            if names is not None:
                problems += [
                    f"{where}.constraints.{c}: not a feature of this view (features: {names})"
                    for c in view.constraints
                    if c not in names
                ]
        for name, namespace in self.shared.feature_views.items():
            source_name = self.feature_views[name].source if name in self.feature_views else None
            if source_name is not None and self.shared.sources.get(source_name) != namespace:
                problems.append(
                    f"feature_views.{name}: shared in namespace {namespace!r}, so its source {source_name!r} must be "
                    "declared in the same included file (a shared view cannot read one pipeline's own source)"
                )
        if (self.model is None) != (self.promotion is None):
            problems.append("promotion: 'model' and 'promotion' are declared together (a model needs a gate)")
        if self.model is not None and self.promotion is not None and self.promotion.metric is None:
            object.__setattr__(self.promotion, "metric", self.model.metrics[0])  # frozen: defaults to the task's
        if self.model is not None and self.promotion is not None and self.promotion.metric not in self.model.metrics:
            problems.append(f"promotion.metric: {self.promotion.metric!r} is not in model.metrics")
        if self.model is not None and self.model.slice_by and self.model.slice_by not in self.request_features:
            slice_by = self.model.slice_by
            problems.append(f"model.slice_by: {slice_by!r} is not a request feature (slices come with the request)")
        fallback = self.serving.fallback
        if fallback is not None:
            problems += fallback.problems(self.model.task if self.model else "binary")
        for i, rule in enumerate(fallback.rules if fallback else []):
            if rule.feature not in self.request_features:
                problems.append(f"serving.fallback.rules[{i}].feature: {rule.feature!r} is not a request feature")
        if self.serving.rollout == "canary" and self.serving.canary_share == 0:
            problems.append("serving.canary_share: a canary rollout needs a share above 0")
        problems += self._ab_test_problems()
        problems += self._leakage_problems()
        problems += self.fairness_problems()
        label = self.label
        source = self.sources.get(label.source)
        if source is None:
            problems.append(f"label.source: unknown source {label.source!r} (known: {sorted(self.sources)})")
        else:
            needed = {"column": label.column, "timestamp": label.timestamp}
            needed["prediction_timestamp"] = label.prediction_timestamp
            if label.request_id:
                needed["request_id"] = label.request_id
            problems += [
                f"label.{field}: {column!r} is not a column of source {label.source!r}"
                for field, column in needed.items()
                if column not in source.columns
            ]
            if self.model is not None and label.column in source.columns:
                problems += self._label_type_problems(source.columns[label.column])
            problems += [
                f"label.known_with_label: {c!r} is not a column of source {label.source!r}"
                for c in label.known_with_label
                if c not in source.columns
            ]
            problems += [
                f"label.source: entity key {k!r} is not a column of source {label.source!r}"
                for k in keys
                if k not in source.columns
            ]
            problems += [
                f"request_features.{f}: request features are taken from the label source in training, "
                f"but {f!r} is not a column of source {label.source!r}"
                for f in self.request_features
                if f not in source.columns
            ]
            problems += [
                f"request_features.{f}: declared {c.dtype}, but column {f!r} of source {label.source!r} (where "
                f"training takes it from) is {source.columns[f].dtype}; declare one type in both"
                for f, c in self.request_features.items()
                if f in source.columns and source.columns[f].dtype != c.dtype
            ]
        return problems + self._key_type_problems() + self._privacy_problems() + self._scoring_problems()

    def scoring_request_features(self) -> list[str]:
        """The request features the model takes (a batch population must supply them)."""
        wanted = self.model.features if self.model is not None and self.model.features else None
        return [f for f in self.request_features if wanted is None or f in wanted]

    def _scoring_problems(self) -> list[str]:
        """A population whose source, keys, request features or carried columns cannot be had."""
        if self.scoring is None:
            return []
        population = self.scoring.population
        where = "scoring.population"
        if self.model is None:
            return ["scoring: batch scoring needs a model (declare 'model' and 'promotion')"]
        source = self.sources.get(population.source)
        if source is None:
            return [f"{where}.source: unknown source {population.source!r} (known: {sorted(self.sources)})"]
        columns = source.columns
        problems = [
            f"{where}.source: entity key {k!r} is not a column of source {population.source!r}"
            for k in self.entity.keys
            if k not in columns
        ]
        requested = self.scoring_request_features()
        if population.active_within is not None:
            if requested:
                problems.append(
                    f"{where}.active_within: an entity population has no request, but the model takes the request "
                    f"features {requested}: score rows (omit active_within) or leave them out of model.features"
                )
            if population.carry:
                problems.append(f"{where}.carry: an entity population has one row per entity, no columns to carry")
        else:
            problems += [
                f"{where}.source: the model takes request feature {f!r}, which is not a column of source "
                f"{population.source!r}"
                for f in requested
                if f not in columns
            ]
        taken = {*SCORES_COLUMNS, *self.entity.keys, *(f"{view}_feature_timestamp" for view in self.feature_views)}
        for column in population.carry:
            if column not in columns:
                problems.append(f"{where}.carry: {column!r} is not a column of source {population.source!r}")
            elif column in taken:
                problems.append(f"{where}.carry: {column!r} is already a column of the scores table")
        return problems

    def _privacy_problems(self) -> list[str]:
        """PII fields that are not request features (or are needed as sent), a retention shorter than monitoring
        reads back."""
        problems = []
        pii = self.serving.pii
        for name in pii.fields if pii else {}:
            where = f"serving.pii.fields.{name}"
            if name in self.entity.keys:
                problems.append(
                    f"{where}: {name!r} is an entity key: it joins the log to features and labels and is in every "
                    "feature table already; declare a pseudonymous key instead"
                )
            elif name not in self.request_features:
                problems.append(
                    f"{where}: {name!r} is not a request field (request features: {sorted(self.request_features)})"
                )
            elif self.model is not None and self.model.slice_by == name:
                problems.append(f"{where}: {name!r} is model.slice_by: live slices are reported by their values")
        retention = self.serving.log_retention
        if retention is not None:
            for field in ("window", "performance_window"):
                needed = getattr(self.monitoring, field)
                if parse_duration(retention) < parse_duration(needed):
                    problems.append(
                        f"serving.log_retention: {retention} is shorter than monitoring.{field} ({needed}), which "
                        "reads that much of the prediction log"
                    )
        return problems

    def _ab_test_problems(self) -> list[str]:
        """An A/B test needs rollout 'ab', a metric that fits the task, and an outcome the sources have."""
        ab, rollout = self.serving.ab_test, self.serving.rollout
        if rollout == "ab" and ab is None:
            return ["serving.ab_test: rollout 'ab' needs an A/B test (metric or outcome, minimum_detectable_effect)"]
        if ab is None:
            return []
        if rollout != "ab":
            return [f"serving.ab_test: declared, but serving.rollout is {rollout!r}; set rollout: ab"]
        where = "serving.ab_test"
        if ab.metric is not None:
            task = self.model.task if self.model else None
            fits = AB_METRICS.get(task or "", ())
            if ab.metric not in fits:
                return [
                    f"{where}.metric: {ab.metric!r} does not fit "
                    + (
                        f"a {task} model (an A/B test compares a per-request metric: {', '.join(fits)})"
                        if task
                        else "a pipeline without a model"
                    )
                ]
            if self.label.request_id is None:
                return [f"{where}.metric: judging by labels needs label.request_id (to join predictions to labels)"]
            return []
        assert ab.outcome is not None, "one of metric or outcome, checked by the model"
        outcome, where = ab.outcome, f"{where}.outcome"
        source = self.sources.get(outcome.source)
        if source is None:
            return [f"{where}.source: unknown source {outcome.source!r} (known: {sorted(self.sources)})"]
        problems = [
            f"{where}.{field}: {column!r} is not a column of source {outcome.source!r} "
            f"(its columns: {sorted(source.columns)})"
            for field, column in (("column", outcome.column), ("request_id", outcome.request_id))
            if column not in source.columns
        ]
        dtype = source.columns[outcome.column].dtype if outcome.column in source.columns else None
        if dtype is not None and dtype not in ("bool", "int", "float"):
            problems.append(f"{where}.column: {outcome.column!r} is {dtype}; an outcome is a bool or a number")
        return problems

    def _label_type_problems(self, declared: ColumnSpec) -> list[str]:
        """A label whose declared type cannot be what model.task learns, said before anything is computed."""
        assert self.model is not None
        task, column, dtype = self.model.task, self.label.column, declared.dtype
        where = f"label.column: {column!r} is declared {dtype} in sources.{self.label.source}.columns"
        if dtype in ("datetime", "date"):
            return [f"{where}; a label is a number, a bool or text (classes), never a {dtype}"]
        if task == "regression" and dtype not in ("int", "float"):
            return [f"{where}; a regression label is a number: declare it int or float, or set model.task"]
        if task != "binary" or dtype != "string":
            return []
        values = [str(v).strip().lower() for v in declared.isin or []]
        if values and set(values) <= set(TEXT_BOOLEANS) and len({TEXT_BOOLEANS[v] for v in values}) == 2:
            return [
                f"{where}; a binary label is 0/1 or true/false: declare it dtype bool, and its values "
                f"{declared.isin} are read as true/false when the files are ingested"
            ]
        return [
            f"{where}; a binary label is 0/1 or true/false: declare it bool (ingest reads true/false, yes/no, t/f, "
            "y/n and 1/0 text as booleans, in any case) or int, or set model.task: multiclass for named classes"
        ]

    def _key_type_problems(self) -> list[str]:
        """An entity key declared with different types in two sources: their rows could never be joined."""
        problems = []
        for key in self.entity.keys:
            types = {n: s.columns[key].dtype for n, s in self.sources.items() if key in s.columns}
            if len(set(types.values())) > 1:
                declared = ", ".join(f"sources.{n}.columns.{key}: {t}" for n, t in types.items())
                problems.append(f"entity.keys: {key!r} has a different type in different sources ({declared})")
        return problems


# Whole name tokens that mark a column as another model's output: a model trained on it learns that model.
MODEL_OUTPUT_TOKENS = frozenset(
    {
        "pred",
        "preds",
        "prediction",
        "predictions",
        "predicted",
        "proba",
        "probability",
        "probabilities",
        "score",
        "scores",
        "yhat",
    }
)


def name_tokens(name: str) -> list[str]:
    """The lower-case words of a column name, split at non-alphanumerics and camelCase (`yPredProba`: y pred proba)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [token.lower() for token in re.split(r"[^A-Za-z0-9]+", spaced) if token]


def looks_like_model_output(name: str) -> bool:
    return bool(_output_tokens(name))


def _output_tokens(name: str) -> str:
    return ", ".join(sorted(MODEL_OUTPUT_TOKENS & set(name_tokens(name))))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(path, ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(path, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(path, ["expected a mapping at the top level"])
    return data


_SHARED_SECTIONS = ("generators", "sources", "feature_views")
NAMESPACE = "namespace"  # an included file's key: its sources and views are that namespace's, shared


def _merge_includes(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Merge the shared `generators`, `sources` and `feature_views` of included files into the spec; those of a
    file with a `namespace` are recorded in `shared`, materialized once for every pipeline that includes it."""
    if any((data.get("shared") or {}).values()):  # empty, as a dumped spec writes it: nothing to refuse
        raise SpecError(path, ["shared: set by `include` (from files with a `namespace`), never written by hand"])
    data.pop("shared", None)
    includes = data.pop("include", []) or []
    if not isinstance(includes, list):
        raise SpecError(path, ["include: expected a list of file paths relative to the spec"])
    shared: dict[str, dict[str, str]] = {"sources": {}, "feature_views": {}}
    for entry in includes:
        included_path = (path.parent / str(entry)).resolve()
        included = _read_yaml(included_path)
        unknown = set(included) - {*_SHARED_SECTIONS, NAMESPACE}
        if unknown:
            raise SpecError(
                included_path,
                [f"{k}: an included file may only declare {(*_SHARED_SECTIONS, NAMESPACE)}" for k in sorted(unknown)],
            )
        namespace = included.get(NAMESPACE)
        if namespace is not None:
            if not isinstance(namespace, str) or not re.fullmatch(_NAME, namespace):
                raise SpecError(included_path, [f"namespace: {namespace!r} must match {_NAME}"])
            if namespace == data.get("name"):
                raise SpecError(path, [f"name: {namespace!r} is also the namespace of {included_path}; rename one"])
            for section in shared:
                shared[section] |= dict.fromkeys(included.get(section) or {}, namespace)
        for section in _SHARED_SECTIONS:
            merged = dict(included.get(section) or {})
            clashes = set(merged) & set(data.get(section) or {})
            if clashes:
                raise SpecError(path, [f"{section}.{c}: declared here and in {included_path}" for c in clashes])
            merged.update(data.get(section) or {})
            if merged:
                data[section] = merged
    if any(shared.values()):
        data["shared"] = shared
    return data


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_spec(path: Path | str) -> PipelineSpec:
    """Parse and validate one spec file; every problem is reported with its field path."""
    path = Path(path)
    data = _merge_includes(path, _read_yaml(path))
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = "unknown key (not part of the spec)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{_format_loc(err['loc'])}: {message}")
        raise SpecError(path, problems) from None
    problems = spec.cross_reference_problems()
    if problems:
        raise SpecError(path, problems)
    for warning in spec.warnings():
        logger.warning("%s: %s", path, warning)
    return spec


def load_specs(folder: Path | str | None = None) -> list[PipelineSpec]:
    """All pipelines of a folder: its top-level *.yaml/*.yml files (shared fragments live in subfolders)."""
    folder = Path(folder) if folder else BUILTIN_SPECS_DIR
    if not folder.is_dir():
        raise SpecError(folder, ["specs folder not found"])
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    specs = [load_spec(p) for p in files]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(folder, [f"name: pipeline {n!r} is declared by more than one file" for n in duplicates])
    problems = shared_problems(dict(zip(files, specs, strict=True)))
    if problems:
        raise SpecError(folder, problems)
    return specs


def shared_problems(specs: Mapping[Path, PipelineSpec]) -> list[str]:
    """Shared sources and views declared differently by the pipelines that share them (one table cannot follow two
    definitions), and namespaces named like a pipeline; each problem names the files and what differs."""
    pipelines = {spec.name: path for path, spec in specs.items()}
    problems: list[str] = []
    seen: dict[tuple[str, str, str], tuple[Path, dict[str, Any]]] = {}
    for path, spec in specs.items():
        for kind in ("sources", "feature_views"):
            for name, namespace in getattr(spec.shared, kind).items():
                if namespace in pipelines:
                    problems.append(
                        f"{path.name}: namespace {namespace!r} is also the pipeline of {pipelines[namespace].name}"
                    )
                definition = spec.shared_definition(kind, name)
                first = seen.setdefault((namespace, kind, name), (path, definition))
                if first[1] != definition:
                    differs = sorted(
                        k for k in definition.keys() | first[1].keys() if definition.get(k) != first[1].get(k)
                    )
                    problems.append(
                        f"{namespace}/{kind}.{name}: {first[0].name} and {path.name} declare it differently "
                        f"({', '.join(differs)}); a shared table follows one definition"
                    )
    return sorted(set(problems))
