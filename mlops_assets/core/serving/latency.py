"""A candidate's scoring latency on this machine, in-process, through the path serving scores with.

One row at a time (a /predict call: the compiled preprocessing and trees when the pipeline compiles) and 100 rows at
once (a /predict_batch call), each timed over `calls` calls after a tenth as many untimed warm-up calls; the median
and the 99th percentile of each are recorded on the version and graded against `promotion.latency_budget_ms`.
Feature lookups and HTTP are not part of it: this is the model's share of a request.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.compiled import FastModel
from mlops_assets.core.models.modeling import GateDecision, ModelError, fitted_columns
from mlops_assets.core.serving.scorer import LoadedModel
from mlops_assets.spec import LatencyBudget

BATCH_ROWS = 100
# The figures, in milliseconds, as MLflow metrics of the version's run (and fields of the budget).
FIGURES = ("single_p50", "single_p99", "batch_100_p50", "batch_100_p99")
KINDS = {"single": "one row", "batch_100": f"{BATCH_ROWS} rows"}
METRIC_PREFIX = "latency."
# The version tag holding the figures and how they were measured.
LATENCY_TAG = "latency_ms"


@dataclass(frozen=True)
class Latency:
    """Milliseconds per scoring call: one row, and 100 rows at once (p50 and p99 of `calls` calls each)."""

    single_p50: float
    single_p99: float
    batch_100_p50: float
    batch_100_p99: float
    calls: int

    def metrics(self) -> dict[str, float]:
        figures = {f"{METRIC_PREFIX}{name}_ms": getattr(self, name) for name in FIGURES}
        return {**figures, f"{METRIC_PREFIX}calls": float(self.calls)}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> Latency | None:
        """The figures recorded as `metrics()` (None when a version has none: it was trained without them)."""
        names = [f"{METRIC_PREFIX}{name}_ms" for name in FIGURES]
        if not all(name in metrics for name in names):
            return None
        calls = int(metrics.get(f"{METRIC_PREFIX}calls", 0))
        single_p50, single_p99, batch_100_p50, batch_100_p99 = (float(metrics[name]) for name in names)
        return cls(single_p50, single_p99, batch_100_p50, batch_100_p99, calls)

    def rows(self, budget: LatencyBudget | None = None) -> list[dict[str, str]]:
        """The card's table: one row per kind of call, with its budget where one is declared."""
        rows = []
        for kind, call in KINDS.items():
            row = {"call": call}
            for p in ("p50", "p99"):
                limit = getattr(budget, f"{kind}_{p}") if budget else None
                row[f"{p} ms"] = f"{getattr(self, f'{kind}_{p}'):.3f}"
                row[f"{p} budget ms"] = "" if limit is None else f"{limit}"
            rows.append(row)
        return rows


def machine() -> str:
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def measure_latency(
    pipeline: Pipeline,
    task: str,
    rows: Sequence[Mapping[str, Any]],
    calls: int = 200,
    fast: FastModel | None = None,
) -> Latency:
    """Time scoring `rows` (cycled: one per single-row call, the first 100 as the batch) as serving scores them:
    through `fast`, the compiled model serving would use, when there is one."""
    if not rows:
        raise ModelError("latency is measured on rows of the holdout: there are none")
    model = LoadedModel("candidate", pipeline, fitted_columns(pipeline), task, fast)
    batch = [rows[i % len(rows)] for i in range(BATCH_ROWS)]
    single = _timed(lambda i: model.outputs([rows[i % len(rows)]]), calls)
    hundred = _timed(lambda i: model.outputs(batch), calls)
    s50, s99 = np.percentile(single, [50, 99])
    b50, b99 = np.percentile(hundred, [50, 99])
    return Latency(float(s50), float(s99), float(b50), float(b99), calls)


def _timed(call: Callable[[int], object], calls: int) -> np.ndarray:
    """Milliseconds of each of `calls` calls, after a tenth as many untimed ones (caches, lazy imports, allocator)."""
    for i in range(max(1, calls // 10)):
        call(i)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        call(i)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return times


def latency_tag(latency: Latency, how: str) -> str:
    """The version tag: the figures, how many calls, through which path and on which machine."""
    return json.dumps({**asdict(latency), "scored": how, "machine": machine()}, sort_keys=True)


def latency_decision(latency: Latency | None, budget: LatencyBudget | None) -> GateDecision:
    """Each declared budget against its figure; no budget: nothing to decide (the figures are still recorded)."""
    if budget is None:
        return GateDecision(True, [])
    declared = {name: limit for name in FIGURES if (limit := getattr(budget, name)) is not None}
    if latency is None:
        return GateDecision(
            False, ["latency: the version has no recorded latency (it was registered before it was measured)"]
        )
    reasons, passed = [], True
    for name, limit in declared.items():
        value = getattr(latency, name)
        ok = value <= limit
        passed &= ok
        reasons.append(f"latency {name} {value:.4f} ms {'within' if ok else 'over'} the budget {limit} ms")
    return GateDecision(passed, reasons)


def latency_section(latency: Latency | None, budget: LatencyBudget | None, how: str | None = None) -> list[str]:
    """The card's latency section: the figures, the budget (if any) and how they were measured."""
    if latency is None:
        return ["## Latency", "Not measured: the version was registered before latency was recorded.", ""]
    return [
        "## Latency",
        f"In-process scoring on this machine, the median and 99th percentile of {latency.calls} calls each after "
        f"warm-up{f', {how}' if how else ''}; feature lookups and HTTP excluded.",
        "",
        markdown_table(latency.rows(budget)),
        "",
    ]


def measured_how(tags: Mapping[str, str]) -> str | None:
    """How a version's latency was measured (scoring path, machine), from its tag; None without one."""
    text = tags.get(LATENCY_TAG)
    if not text:
        return None
    recorded = json.loads(text)
    return f"scored with {recorded['scored']}, on {recorded['machine']}"
