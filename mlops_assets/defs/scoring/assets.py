"""Batch inference as an asset: `<pipeline>/scores`, each daily partition the day's population scored by the version
that was champion at the day's end, with its checks."""

import warnings
from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl

from mlops_assets.core.lake import TableNotFoundError, scan_table
from mlops_assets.core.models.history import NoChampionError, champion_at
from mlops_assets.core.models.lineage import LineageError, trained_on
from mlops_assets.core.monitoring.grading import CheckVerdict
from mlops_assets.core.scoring.batch import (
    ScoringError,
    ScoringModel,
    day_end,
    population,
    reference_outputs,
    score_day,
    scores_summary,
    view_inputs,
)
from mlops_assets.core.scoring.grading import drift_verdict, nulls_verdict, rows_verdict
from mlops_assets.defs.common.metadata import links
from mlops_assets.defs.common.partitions import daily_partitions, lookback_days
from mlops_assets.defs.common.resources import LakeResource, MlflowResource
from mlops_assets.defs.keys import (
    champion_key,
    feature_key,
    group,
    raw_key,
    scores_key,
    table_of,
    training_set_key,
)
from mlops_assets.defs.scoring.checks import SCORE_DRIFT, SCORE_NULLS, SCORED_ROWS, check_result, check_specs
from mlops_assets.spec import PipelineSpec, parse_duration

# Each day is scored by its own champion and graded by its own checks: a backfill runs a day per run.
ONE_DAY_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def build_scores_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    assert spec.scoring is not None and spec.model is not None
    scoring, model_spec, key = spec.scoring, spec.model, scores_key(spec)
    source = scoring.population.source
    who = (
        f"every entity with an event in `{source}` in the {scoring.population.active_within} up to the day, as of "
        "the day's end"
        if scoring.population.active_within
        else f"every event of the day in `{source}`, as of its event time"
    )

    def reaching_back(days: int) -> dg.TimeWindowPartitionMapping:
        """A day's scores read this many days before it (a view's TTL, the activity window)."""
        return dg.TimeWindowPartitionMapping(start_offset=-days, allow_nonexistent_upstream_partitions=True)

    # Beta parameter, needed: the first days' windows reach back before the pipeline's start date.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        population_days = (scoring.population.active_days or 1) - 1
        deps = [
            dg.AssetDep(champion_key(spec)),
            dg.AssetDep(raw_key(spec, source), partition_mapping=reaching_back(population_days)),
            *(
                dg.AssetDep(
                    feature_key(spec, name), partition_mapping=reaching_back(lookback_days(parse_duration(view.ttl)))
                )
                for name, view in spec.feature_views.items()
            ),
        ]

    def _scores(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow_store: MlflowResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = date.fromisoformat(context.partition_key)
        registry = mlflow_store.registry()
        try:
            change = champion_at(registry.champion_history(spec.name), day_end(day))
        except NoChampionError as exc:
            raise dg.Failure(
                description=f"{key.to_user_string()} {day}: {exc}: a day is scored by the version that was champion "
                "at its end (midnight UTC after it), and this day ended before any; score later days",
                allow_retries=False,
            ) from exc
        version = registry.version(spec.name, change.version)
        model = ScoringModel(
            change.version, registry.load_sklearn(spec.name, change.version), model_spec.task, model_spec.threshold
        )
        path = table_of(lake.root, key)
        # The reference first: a version whose training set cannot be read fails the day before anything is written.
        try:
            # The holdout only: the training set read with it is not kept while the day is scored.
            holdout = trained_on(spec, table_of(lake.root, training_set_key(spec)), version.tags)[1]
        except LineageError as exc:
            raise dg.Failure(description=f"{key.to_user_string()} {day}: {exc}", allow_retries=False) from exc
        reference = reference_outputs(spec, holdout, model)
        try:
            people = population(spec, table_of(lake.root, raw_key(spec, source)), day)
            features = {v: scan_table(table_of(lake.root, feature_key(spec, v))) for v in spec.feature_views}
            views = view_inputs(spec, features, day)
            result = score_day(spec, path, people, views, model, context.run.run_id, seed=model_spec.seed)
        except (ScoringError, TableNotFoundError) as exc:
            raise dg.Failure(description=f"{key.to_user_string()} {day}: {exc}", allow_retries=False) from exc
        written = scan_table(path, [day.isoformat()]).select(pl.len()).collect().item()
        current = result.outputs(model.task, reference.classes)
        yield dg.MaterializeResult(
            metadata={
                **scores_summary(result, spec),
                "dagster/row_count": written,
                "champion_since": change.at.isoformat(),
                "delta_version": result.delta_version,
                "path": dg.MetadataValue.path(str(path)),
                **links(registry.links(spec.name, change.version, version.run_id)),
            }
        )
        verdicts: dict[str, CheckVerdict] = {
            SCORED_ROWS: rows_verdict(result, written),
            SCORE_NULLS: nulls_verdict(spec, result),
            SCORE_DRIFT: drift_verdict(spec, reference, current),
        }
        for name, verdict in verdicts.items():
            yield check_result(name, verdict)

    # backfill_policy on @asset is beta; each day must run alone (its own champion and checks).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            key=key,
            deps=deps,
            partitions_def=daily_partitions(spec),
            backfill_policy=ONE_DAY_PER_RUN,
            kinds={"delta", "polars", "sklearn"},
            code_version=scoring.fingerprint(),
            group_name=group(spec, "scoring"),
            owners=[spec.owner] if spec.owner else None,
            check_specs=check_specs(key),
            description=f"Batch scores: {who}, scored by the version that was champion at the day's end (the "
            "registry's champion history) on point-in-time features (the training set's join), with the version, each "
            "view's feature time and the run id. Re-running a day replaces it in one commit.",
        )(_scores)
