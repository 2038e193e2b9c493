"""The A/B test of the running experiment: its answered predictions joined to labels (or a business outcome), the
group-sequential test, and the blocking check `mlops promote PIPELINE --from-ab` acts on."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import polars as pl

from mlops_assets.core.ingest.validation import POLARS_DTYPES
from mlops_assets.core.lake import PARTITION_COLUMN, scan_table
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.core.monitoring.ab import (
    ABDecision,
    ABError,
    ABResult,
    VariantSummary,
    analyse,
    design,
    experiment_rows,
    outcome_columns,
)
from mlops_assets.core.serving.experiments import running
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA
from mlops_assets.defs.common.resources import LakeResource, MlflowResource
from mlops_assets.defs.keys import ab_test_key, group, prediction_log_key, raw_key, table_of
from mlops_assets.settings import experiments_folder
from mlops_assets.spec import PipelineSpec

AB_DECISION = "ab_decision"


def build_ab_test_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    ab = spec.serving.ab_test
    assert ab is not None and spec.model is not None
    key = ab_test_key(spec)
    source = ab.outcome.source if ab.outcome else spec.label.source

    @dg.asset(
        key=key,
        deps=[prediction_log_key(spec), raw_key(spec, source)],
        group_name=group(spec, "serving"),
        kinds={"polars", "scipy"},
        owners=[spec.owner] if spec.owner else None,
        code_version=ab.fingerprint(),
        description=f"The running A/B experiment: the answers of the champion and the challenger (a sticky "
        f"{ab.challenger_share:.0%} of entities) joined to their {ab.metric_name}, per variant its sample, mean and "
        f"confidence interval, and a group-sequential test ({ab.looks} looks, alpha {ab.alpha}, power {ab.power} "
        f"against a difference of {ab.minimum_detectable_effect}) that decides: keep collecting, challenger wins, "
        "champion wins or no difference.",
        check_specs=[
            dg.AssetCheckSpec(
                AB_DECISION,
                asset=key,
                blocking=True,
                description=f"The challenger wins the A/B test on {ab.metric_name}; `mlops promote {spec.name} "
                "--from-ab` promotes it only then.",
            )
        ],
    )
    def _ab_test(
        lake: LakeResource, mlflow_store: MlflowResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        experiment = running(experiments_folder(lake.data_folder, spec.name))
        if experiment is None:
            raise dg.Failure(
                description=f"no A/B experiment is running for {spec.name!r}: start one with `mlops ab start "
                f"{spec.name}`",
                allow_retries=False,
            )
        if experiment.settings != ab.fingerprint():
            raise dg.Failure(
                description=f"serving.ab_test changed since {experiment.describe()} started: a test whose metric, "
                "effect, alpha, power or looks change mid-way is not the test that was planned. Stop it (`mlops ab "
                f"stop {spec.name}`) and start another",
                allow_retries=False,
            )
        aliases = mlflow_store.registry().aliases(spec.name)
        now = (aliases.get(CHAMPION), aliases.get(CHALLENGER))
        if now != (experiment.champion, experiment.challenger):
            raise dg.Failure(
                description=f"the registry now names champion {now[0]} and challenger {now[1]}, but "
                f"{experiment.describe()} is running: its variants changed mid-test. Stop it (`mlops ab stop "
                f"{spec.name}`) and start another",
                allow_retries=False,
            )
        log_path = table_of(lake.root, prediction_log_key(spec))
        log = (
            scan_table(log_path).filter(pl.col(PARTITION_COLUMN) >= experiment.since.date().isoformat()).collect()
            if log_path.exists()
            else pl.DataFrame(schema=LOG_SCHEMA)
        )
        outcomes_path = table_of(lake.root, raw_key(spec, source))
        try:
            # The outcomes of answers since the start arrived since then: those days' partitions, three columns.
            columns = list(outcome_columns(spec)[1])
            outcomes = (
                scan_table(outcomes_path)
                .filter(pl.col(PARTITION_COLUMN) >= experiment.since.date().isoformat())
                .select(columns)
                .collect()
                if outcomes_path.exists()
                else _no_rows(spec, source).select(columns)
            )
            rows = experiment_rows(log, outcomes, spec, experiment.champion, experiment.challenger, experiment.since)
        except ABError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        # Designed when the asset runs, not when the definitions load (design is cached per settings).
        plan = design(ab.minimum_detectable_effect, ab.alpha, ab.power, ab.looks)
        result = analyse(rows, plan, ab.challenger_share, ab.higher_is_better)
        evidence = {
            "experiment": experiment.id,
            "started_at": experiment.started_at,
            "champion_version": experiment.champion,
            "challenger_version": experiment.challenger,
            "decision": result.decision.value,
            "labelled_rows": rows.height,
        }
        yield dg.MaterializeResult(metadata={**evidence, **_metadata(result, ab.metric_name, plan.inflation)})
        waiting = result.decision is ABDecision.KEEP_COLLECTING
        yield dg.AssetCheckResult(
            check_name=AB_DECISION,
            passed=result.decision is ABDecision.CHALLENGER_WINS,
            severity=dg.AssetCheckSeverity.WARN if waiting else dg.AssetCheckSeverity.ERROR,
            description=result.reason,
            metadata=evidence,
        )

    return _ab_test


def _no_rows(spec: PipelineSpec, source: str) -> pl.DataFrame:
    """The outcome source before its first ingested day: its declared columns, no rows."""
    columns = spec.sources[source].columns
    return pl.DataFrame(schema={name: POLARS_DTYPES[c.dtype] for name, c in columns.items()})


def _metadata(result: ABResult, metric: str, inflation: float) -> dict[str, dg.RawMetadataValue]:
    def rounded(value: float | None) -> float:
        return round(float(value), 6) if value is not None else float("nan")

    variants: list[tuple[str, VariantSummary | None]] = [
        ("champion", result.champion),
        ("challenger", result.challenger),
    ]
    table = [
        {
            "variant": name,
            "rows": s.rows,
            "entities": s.entities,
            metric: f"{s.mean:.4f}",
            "confidence interval": f"[{s.ci_low:.4f}, {s.ci_high:.4f}]",
        }
        for name, s in variants
        if s is not None
    ]
    interval = result.improvement_ci
    repeated = result.repeated_ci
    return {
        "reason": result.reason,
        "by_variant": dg.MetadataValue.md(markdown_table(table) if table else "no labelled predictions yet"),
        **{f"{name}/{metric}": rounded(s.mean if s else None) for name, s in variants},
        "improvement": rounded(result.improvement),
        "improvement_ci": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "none yet",
        "nominal_p_value": rounded(result.nominal_p_value),
        "sequential_p_value": rounded(result.p_value),
        "repeated_ci": f"[{repeated[0]:.4f}, {repeated[1]:.4f}]" if repeated else "no look yet",
        "planned_rows": round(float(result.planned_rows)) if result.planned_rows is not None else -1,
        "progress": round(float(result.information_fraction), 4),
        "sequential_inflation": round(float(inflation), 4),
        "looks": dg.MetadataValue.md(markdown_table(result.looks) if result.looks else "no look yet"),
    }
