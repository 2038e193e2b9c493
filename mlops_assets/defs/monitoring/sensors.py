"""The retraining sensor: sustained drift (or a performance drop) requests one retraining run, by policy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.core.models.aliases import CHALLENGER
from mlops_assets.core.monitoring.retraining import Decision, WindowVerdict, decide
from mlops_assets.defs.common.resources import MlflowResource
from mlops_assets.defs.keys import PROMOTION_TAG, RETRAIN_AT_TAG, RETRAINING_TAG, retraining_sensor
from mlops_assets.defs.monitoring.checks import retraining_evidence
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_assets.core.models.registry import ModelRegistry


def window_verdicts(instance: dg.DagsterInstance, asset: dg.AssetKey, checks: Sequence[str]) -> list[WindowVerdict]:
    """Per window (partition), the newest result of each check; a window failed where one failed at ERROR."""
    newest: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}
    for name in checks:
        history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(asset, name), limit=200)
        for record in history:  # newest first
            evaluation = record.evaluation
            if not isinstance(evaluation, dg.AssetCheckEvaluation):  # planned or still running: no verdict yet
                continue
            # The window is the run's partition; the checks also record it in their metadata.
            recorded = evaluation.metadata.get("window")
            window = record.partition or evaluation.partition or (recorded.value if recorded else None)
            if not isinstance(window, str):
                continue
            newest.setdefault(window, {}).setdefault(name, evaluation)
    verdicts = []
    for window in sorted(newest):
        results = newest[window]
        failed = sorted(n for n, e in results.items() if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR)
        verdicts.append(WindowVerdict(window, failed, {n: (results[n].description or "")[:300] for n in failed}))
    return verdicts


def retraining_times(instance: dg.DagsterInstance, pipeline: str) -> list[datetime]:
    """When each retraining was decided: its `mlops/retrain_at` tag (the policy's clock), else the run's creation."""
    records = instance.get_run_records(dg.RunsFilter(tags={RETRAINING_TAG: pipeline}), limit=100)
    return [_decided_at(record) for record in records]


def _decided_at(record: dg.RunRecord) -> datetime:
    tagged = record.dagster_run.tags.get(RETRAIN_AT_TAG)
    return datetime.fromisoformat(tagged) if tagged else record.create_timestamp.astimezone(UTC)


def pending_challenger(instance: dg.DagsterInstance, registry: ModelRegistry, name: str) -> tuple[str, datetime] | None:
    """The challenger's version and since when (when the run that trained it was decided), if there is one."""
    version = registry.aliases(name).get(CHALLENGER)
    if version is None:
        return None
    registered = registry.version(name, version)
    record = instance.get_run_record_by_id(registered.tags.get("dagster_run_id", ""))
    if record is not None:
        return version, _decided_at(record)
    return version, datetime.fromtimestamp(registered.creation_timestamp / 1000, UTC)


def evaluate_policy(
    instance: dg.DagsterInstance,
    spec: PipelineSpec,
    cursor: str | None,
    now: datetime,
    challenger: tuple[str, datetime] | None = None,
) -> tuple[Decision, str]:
    """The decision (drift first, then performance) and the cursor to keep: the evidence acted on so far."""
    state = json.loads(cursor) if cursor else {}
    acted_on = set(state.get("acted_on", []))
    retrained_at = retraining_times(instance, spec.name)
    policy = spec.monitoring.retraining
    decisions = []
    for reason, (asset, checks) in retraining_evidence(spec).items():
        verdicts = window_verdicts(instance, asset, checks)
        decisions.append(decide(verdicts, policy, retrained_at, now, acted_on, reason, challenger))
    decision = next((d for d in decisions if d.retrain), decisions[0])
    if decision.retrain and decision.evidence_key:
        state["acted_on"] = [*state.get("acted_on", []), decision.evidence_key][-200:]
    state["last_decision"] = " | ".join(d.explanation for d in decisions)
    return decision, json.dumps(state, sort_keys=True)


def build_retraining_sensor(spec: PipelineSpec, training_job: str) -> dg.SensorDefinition:
    policy = spec.monitoring.retraining

    @dg.sensor(
        name=retraining_sensor(spec),
        job_name=training_job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests one run of `{training_job}` when {policy.sustained_k} of the last "
        f"{policy.sustained_n} drift report windows failed a drift check (or the performance check) at ERROR; "
        f"never within {policy.cooldown} of the last retraining, at most {policy.max_per_week} a week, never twice "
        f"for the same evidence, and not while a challenger waits for its shadow comparison (up to "
        f"{policy.challenger_patience}). Promotion afterwards: {policy.promotion}.",
    )
    def _sensor(context: dg.SensorEvaluationContext, mlflow_store: MlflowResource) -> dg.RunRequest | dg.SkipReason:
        now = datetime.now(UTC)
        try:
            challenger = pending_challenger(context.instance, mlflow_store.registry(), spec.name)
        except Exception as exc:  # the registry is down: decide nothing rather than retrain blind
            return dg.SkipReason(f"the model registry is unreachable ({type(exc).__name__}: {exc}); next tick retries")
        decision, cursor = evaluate_policy(context.instance, spec, context.cursor, now, challenger)
        context.update_cursor(cursor)
        if not decision.retrain:
            return dg.SkipReason(json.loads(cursor)["last_decision"])
        return retraining_request(spec, decision, now)

    return _sensor


def retraining_request(spec: PipelineSpec, decision: Decision, now: datetime) -> dg.RunRequest:
    """The run a decision to retrain asks for: keyed by its evidence, tagged with why and when."""
    tags = {
        **decision.tags(),
        RETRAINING_TAG: spec.name,
        RETRAIN_AT_TAG: now.isoformat(),
        PROMOTION_TAG: spec.monitoring.retraining.promotion,
    }
    return dg.RunRequest(run_key=decision.evidence_key, tags=tags)
