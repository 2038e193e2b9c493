"""Models as assets: candidate (trained and registered), evaluation with the promotion gate, card, champion."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from mlops_assets.core.lake import scan_table, table_version
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.aliases import CHAMPION, TRAINED_BY_TAG
from mlops_assets.core.models.approval import identity
from mlops_assets.core.models.cards import metrics_rows, render_card, write_card
from mlops_assets.core.models.compiled import fast_model
from mlops_assets.core.models.fairness import (
    fairness_decision,
    fairness_groups,
    fairness_results,
    fairness_section,
    gap_rows,
)
from mlops_assets.core.models.lineage import LineageError, candidate_record, trained_on
from mlops_assets.core.models.modeling import (
    GateDecision,
    ModelError,
    evaluate,
    frozen_holdout,
    model_columns,
    promotion_gate,
    to_pandas,
    train_candidate,
)
from mlops_assets.core.models.registry import ChampionEvent, ModelRegistry, RegistryError
from mlops_assets.core.object_store import ObjectStoreError
from mlops_assets.core.pages import Pages
from mlops_assets.core.serving.latency import (
    LATENCY_TAG,
    Latency,
    latency_decision,
    latency_section,
    latency_tag,
    measure_latency,
    measured_how,
)
from mlops_assets.defs.common.metadata import links, page_metadata
from mlops_assets.defs.common.resources import LakeResource, MlflowResource, ReportsResource
from mlops_assets.defs.keys import PROMOTION_TAG, group, model_keys, table_of, training_set_key
from mlops_assets.settings import card_page, redact
from mlops_assets.spec import PipelineSpec

PROMOTION_GATE = "promotion_gate"
KINDS = {"mlflow", "sklearn"}
# Holdout rows logged with a version as its input example, on which its compiled scoring is checked.
CHECK_ROWS = 500
# A tracking server that is down fails a step clearly; Dagster retries it (after 10 s, 20 s, 40 s, with jitter).
MLFLOW_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, field: str) -> Any:
    """A value recorded by the latest materialization of an upstream asset (e.g. which version it registered)."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None or field not in event.asset_materialization.metadata:
        raise dg.Failure(
            description=f"{key.to_user_string()} has no materialization recording {field!r}: materialize it first"
        )
    return event.asset_materialization.metadata[field].value


def triggered_by(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags
    origin = tags.get("dagster/schedule_name") or tags.get("dagster/sensor_name") or tags.get("user") or "manual run"
    return f"dagster run {context.run.run_id} ({origin})"


def champion_metadata(
    event: ChampionEvent, registry: ModelRegistry, spec: PipelineSpec, pages: Pages
) -> dict[str, Any]:
    """What every champion materialization records, from an asset or from the CLI alike: the change, the live
    version's metrics, and links to its MLflow pages and its card."""
    metrics = registry.version_metrics(spec.name, event.version)
    card = pages.page(card_page_html(spec.name, event.version))
    return {
        **event.as_metadata(),
        **{f"metric/{k}": v for k, v in metrics.items()},
        **links(registry.links(spec.name, event.version)),
        **page_metadata("model_card", card),
    }


def card_page_html(pipeline: str, version: str) -> str:
    """The card's HTML page, beside its markdown (see core.models.cards.write_card)."""
    return card_page(pipeline, version).removesuffix(".md") + ".html"


def record_champion_change(
    instance: dg.DagsterInstance, registry: ModelRegistry, spec: PipelineSpec, pages: Pages, event: ChampionEvent
) -> None:
    """A champion change made outside the champion asset (CLI, demo), recorded as the asset records one."""
    metadata = champion_metadata(event, registry, spec, pages)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=model_keys(spec)["champion"], metadata=metadata)
    )


def build_model_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [build_candidate_asset(spec), build_evaluation_assets(spec), build_champion_asset(spec)]


def _owners(spec: PipelineSpec) -> list[str] | None:
    return [spec.owner] if spec.owner else None


def build_candidate_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    assert spec.model is not None and spec.promotion is not None
    model, promotion, keys = spec.model, spec.promotion, model_keys(spec)

    @dg.asset(
        key=keys["model_candidate"],
        deps=[training_set_key(spec)],
        kinds=KINDS,
        code_version=model.fingerprint(),
        description=f"Trains `{model.estimator}` (with its preprocessing, as one pipeline) on all but the last "
        f"{model.holdout} of the training set, logs it to MLflow with its lineage and registers a new version "
        f"of the `{spec.name}` model, with its scoring latency on this machine (one row, 100 rows).",
        retry_policy=MLFLOW_RETRY,
        group_name=group(spec, "models"),
        owners=_owners(spec),
    )
    def model_candidate(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow_store: MlflowResource
    ) -> dg.MaterializeResult:
        path = table_of(lake.root, training_set_key(spec))
        version = table_version(path)
        training = scan_table(path).collect()
        try:
            trained = train_candidate(spec, training)
        except ModelError as exc:
            raise dg.Failure(description=f"{spec.name} model: {exc}", allow_retries=False) from exc
        inputs = latest_metadata(context, training_set_key(spec), "input_delta_versions")
        as_of = str(latest_metadata(context, training_set_key(spec), "as_of"))
        record = candidate_record(spec, trained, training, version, inputs, context.run.run_id, context.run.tags, as_of)
        from mlflow.exceptions import MlflowException

        registry = mlflow_store.registry()
        # A sample of the holdout is the version's input example: serving checks its compiled scoring on these rows
        # each time it loads the version, as this run does now.
        holdout = frozen_holdout(spec, training, trained.cutoff)
        checked = holdout.sample(min(CHECK_ROWS, holdout.height), seed=model.seed)
        sample = to_pandas(checked, trained.columns)
        rows = checked.select(trained.columns.all).to_dicts()
        fast, compiled = fast_model(trained.pipeline, model.task, rows)
        context.log.info(f"{spec.name} model: {compiled}")
        # Timed here, on the machine that trains, through the path serving scores with: recorded with the version.
        try:
            latency = measure_latency(trained.pipeline, model.task, rows, promotion.timed_calls, fast)
        except ModelError as exc:  # no holdout rows to time: a person must widen it, a retry changes nothing
            raise dg.Failure(description=f"{spec.name} model: {exc}", allow_retries=False) from exc
        context.log.info(f"{spec.name} model latency (ms): {latency.metrics()}")
        trainer = identity()
        try:
            logged = registry.log_candidate(
                spec.name,
                trained.pipeline,
                sample,
                params=record.params,
                metrics={**record.metrics, **latency.metrics()},
                # Who trained it: under promotion.separate_duties, not who may approve it.
                tags={**record.tags, LATENCY_TAG: latency_tag(latency, compiled), TRAINED_BY_TAG: trainer},
                artifacts=record.artifacts,
                required=record.required,
                task=model.task,
            )
        except (MlflowException, OSError, RegistryError) as exc:
            uri = mlflow_store.tracking_uri
            raise dg.Failure(
                description=f"MLflow at {redact(uri, uri)} failed while logging the candidate: {redact(str(exc), uri)}"
            ) from None
        evaluation = trained.evaluation
        top = [{"input": k, "importance": v} for k, v in list(trained.importance.items())[:10]]
        return dg.MaterializeResult(
            metadata={
                "model_version": logged.version,
                "model_uri": logged.model_uri,
                "mlflow_run_id": logged.run_id,
                **links(registry.links(spec.name, logged.version, logged.run_id)),
                "tracking_uri": redact(mlflow_store.tracking_uri, mlflow_store.tracking_uri),
                **evaluation.metrics,
                "metrics": dg.MetadataValue.md(markdown_table(metrics_rows(evaluation, None))),
                "feature_importance": dg.MetadataValue.md(markdown_table(top)),
                "training_set_delta_version": version,
                "holdout_cutoff": trained.cutoff.isoformat(),
                "train_rows": trained.train_rows,
                "holdout_rows": evaluation.rows,
                "compiled_scoring": compiled,
                "latency": dg.MetadataValue.md(markdown_table(latency.rows(promotion.latency_budget_ms))),
                **{key.replace(".", "/"): value for key, value in latency.metrics().items()},
                TRAINED_BY_TAG: trainer,
            }
        )

    return model_candidate


def build_evaluation_assets(spec: PipelineSpec) -> dg.AssetsDefinition:
    """The candidate and the champion on the candidate's frozen holdout, the promotion gate, and the model card."""
    assert spec.model is not None and spec.promotion is not None
    model, promotion, keys = spec.model, spec.promotion, model_keys(spec)

    @dg.multi_asset(
        name=f"{spec.name}__candidate_evaluation",
        retry_policy=MLFLOW_RETRY,
        specs=[
            dg.AssetSpec(
                keys["candidate_evaluation"],
                deps=[keys["model_candidate"]],
                kinds=KINDS,
                description="The candidate and the current champion scored on the candidate's frozen holdout "
                "(rebuilt from the training set's Delta version); the promotion gate grades the result.",
                group_name=group(spec, "models"),
                owners=_owners(spec),
            ),
            dg.AssetSpec(
                keys["model_card"],
                deps=[keys["model_candidate"]],
                kinds={"mlflow", "markdown"},
                description="A markdown card per registered version: intended use, data, metrics, comparison.",
                group_name=group(spec, "models"),
                owners=_owners(spec),
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                PROMOTION_GATE,
                asset=keys["candidate_evaluation"],
                blocking=True,
                description=f"{promotion.metric} >= {promotion.minimum}, better than the champion by "
                f"{promotion.min_improvement} ({promotion.improvement}), no slice worse by more than "
                f"{promotion.max_slice_drop}"
                + "".join(f"; {g.metric} gap by {g.attribute!r} at most {g.max_gap}" for g in promotion.fairness)
                + (
                    f"; scoring latency within {promotion.latency_budget_ms.model_dump(exclude_none=True)} ms"
                    if promotion.latency_budget_ms
                    else ""
                )
                + ".",
            )
        ],
    )
    def candidate_evaluation(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow_store: MlflowResource, reports: ReportsResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        registry = mlflow_store.registry()
        version = str(latest_metadata(context, keys["model_candidate"], "model_version"))
        registered = registry.version(spec.name, version)
        tags = registered.tags
        try:
            training, holdout = trained_on(spec, table_of(lake.root, training_set_key(spec)), tags)
        except LineageError as exc:
            raise dg.Failure(description=f"version {version} of {spec.name!r}: {exc}", allow_retries=False) from exc
        columns = model_columns(spec, training)
        champion_version = registry.aliases(spec.name).get(CHAMPION)
        label = spec.label.column
        try:
            groups = fairness_groups(spec, training.columns)
            candidate = evaluate(registry.load_sklearn(spec.name, version), holdout, columns, model, label, groups)
            champion = None
            if champion_version is not None:
                champion = evaluate(registry.load_sklearn(spec.name, champion_version), holdout, columns, model, label)
        except (ModelError, ValueError) as exc:
            # e.g. a champion trained on other inputs cannot score this holdout: a person must decide.
            raise dg.Failure(
                description=f"cannot compare version {version} with champion {champion_version}: {exc}",
                allow_retries=False,
            ) from exc
        fairness = fairness_results(candidate, promotion.fairness)
        latency = Latency.from_metrics(registry.run_metrics(registered.run_id))
        decision = GateDecision.combined(
            promotion_gate(candidate, champion, promotion),
            fairness_decision(fairness),
            latency_decision(latency, promotion.latency_budget_ms),
        )
        registry.record_gate(
            spec.name, version, champion.metrics if champion else {}, decision.passed, decision.reasons
        )
        importance = registry.json_artifact(registered.run_id, "feature_importance.json")
        card = render_card(
            spec,
            version,
            tags,
            candidate,
            champion,
            champion_version,
            importance,
            decision,
            fairness=fairness_section(fairness),
            latency=latency_section(latency, promotion.latency_budget_ms, measured_how(tags)),
        )
        pages, markdown, html = reports.pages(), card_page(spec.name, version), card_page_html(spec.name, version)
        try:
            with pages.writing(markdown, html) as (card_file, _):
                write_card(card_file, f"{spec.name} model version {version}", card)
                registry.attach(spec.name, version, card_file)
        except ObjectStoreError as exc:
            raise dg.Failure(description=f"the model card of version {version}: {exc}") from exc
        urls = registry.links(spec.name, version, registered.run_id)
        table = metrics_rows(candidate, champion)
        governance: dict[str, Any] = {}  # the fairness gaps and the latency figures, beside the metrics
        if fairness:
            governance["fairness"] = dg.MetadataValue.md(markdown_table(gap_rows(fairness)))
        if latency:
            governance["latency"] = dg.MetadataValue.md(markdown_table(latency.rows(promotion.latency_budget_ms)))
        yield dg.MaterializeResult(
            asset_key=keys["candidate_evaluation"],
            metadata={
                "candidate_version": version,
                "champion_version": champion_version or "none",
                "metrics": dg.MetadataValue.md(markdown_table(table)),
                **{f"candidate/{k}": v for k, v in candidate.metrics.items()},
                **{f"champion/{k}": v for k, v in (champion.metrics if champion else {}).items()},
                "holdout_rows": candidate.rows,
                **governance,
                **links(urls),
            },
        )
        yield dg.MaterializeResult(
            asset_key=keys["model_card"],
            metadata={
                "model_version": version,
                "path": dg.MetadataValue.path(pages.page(markdown).location),
                **page_metadata("model_card", pages.page(html)),
                **links(urls),
                "card": dg.MetadataValue.md(card),
            },
        )
        yield dg.AssetCheckResult(
            asset_key=keys["candidate_evaluation"],
            check_name=PROMOTION_GATE,
            passed=decision.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(decision.reasons),
            metadata={
                "candidate_version": version,
                "champion_version": champion_version or "none",
                "metrics": dg.MetadataValue.md(markdown_table(table)),
                **governance,
            },
        )

    return candidate_evaluation


def build_champion_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    assert spec.promotion is not None
    promotion, keys = spec.promotion, model_keys(spec)

    @dg.asset(
        key=keys["champion"],
        deps=[keys["candidate_evaluation"]],
        kinds=KINDS,
        output_required=False,
        description="The live model: each materialization is one change of the `champion` alias (gate passed, "
        "manual promotion or rollback), with the previous version, the reason and who triggered it.",
        retry_policy=MLFLOW_RETRY,
        group_name=group(spec, "models"),
        owners=_owners(spec),
    )
    def champion(
        context: dg.AssetExecutionContext, mlflow_store: MlflowResource, reports: ReportsResource
    ) -> Iterator[dg.MaterializeResult]:
        registry = mlflow_store.registry()
        version = str(latest_metadata(context, keys["candidate_evaluation"], "candidate_version"))
        first = CHAMPION not in registry.aliases(spec.name)
        # A retraining run whose policy says a person promotes leaves the winner as challenger, as policy: challenger
        # does, and as promotion.require_approval does for any candidate once there is a champion to keep.
        manual = context.run.tags.get(PROMOTION_TAG) == "manual"
        if (promotion.policy == "challenger" or manual or promotion.require_approval) and not first:
            registry.set_challenger(spec.name, version)
            why = (
                "promotion.require_approval: an approver promotes it"
                if promotion.require_approval
                else "retraining.promotion: manual"
                if manual
                else "policy: challenger"
            )
            context.log.info(f"version {version} passed the gate and is now the challenger ({why})")
            return
        try:
            event = registry.promote(spec.name, version, "promotion gate passed", triggered_by(context))
        except RegistryError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        yield dg.MaterializeResult(metadata=champion_metadata(event, registry, spec, reports.pages()))

    return champion
