"""Every name the graph is addressed by, in one place: asset keys (which are also the Delta tables' names), groups,
jobs, sensors and run tags. Keys read like the lifecycle, prefixed by the pipeline: `fraud/raw_transactions`,
`fraud/customer_spend`, `fraud/training_set`, `fraud/model_candidate`, `fraud/champion`, `fraud/bento`."""

from __future__ import annotations

import dagster as dg

from mlops_assets.core.lake import Location, table_path
from mlops_assets.core.monitoring.retraining import TAG_PREFIX
from mlops_assets.spec import PipelineSpec

# --- Tables: an asset that writes Delta writes the table named by its key's last part -----------------------------
TRAINING_SET = "training_set"
PREDICTION_LOG = "prediction_log"
DRIFT_STATS = "drift_stats"  # written by the drift report beside its own materialization
SCORES = "scores"  # batch inference: a day's population scored by that day's champion


def raw_table(source: str) -> str:
    return f"raw_{source}"


def table_of(root: Location, key: dg.AssetKey) -> Location:
    """The Delta table an asset (or a table named like one: `drift_stats`) writes in the lake at `root`."""
    return table_path(root, key.path[0], key.path[-1])


# --- Asset keys -----------------------------------------------------------------------------------------------------
def raw_key(spec: PipelineSpec, source: str) -> dg.AssetKey:
    """`fraud/raw_transactions`; a shared source's is its namespace's (`card_transactions/raw_transactions`)."""
    return dg.AssetKey([spec.source_namespace(source), raw_table(source)])


def quarantine_key(key: dg.AssetKey) -> dg.AssetKey:
    return dg.AssetKey([*key.path[:-1], f"{key.path[-1]}_quarantine"])


def feature_key(spec: PipelineSpec, view: str) -> dg.AssetKey:
    """`fraud/customer_spend`; a shared view's is its namespace's, one asset for every pipeline using it."""
    return dg.AssetKey([spec.view_namespace(view), view])


def training_set_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, TRAINING_SET])


MODEL_ASSETS = ("model_candidate", "candidate_evaluation", "model_card", "champion")


def model_keys(spec: PipelineSpec) -> dict[str, dg.AssetKey]:
    return {name: dg.AssetKey([spec.name, name]) for name in MODEL_ASSETS}


def champion_key(spec: PipelineSpec) -> dg.AssetKey:
    return model_keys(spec)["champion"]


def online_key(spec: PipelineSpec, view: str) -> dg.AssetKey:
    return dg.AssetKey([spec.view_namespace(view), "online", view])


def prediction_log_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, PREDICTION_LOG])


def bento_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "bento"])


def shadow_evaluation_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "shadow_evaluation"])


def ab_test_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "ab_test"])


def drift_report_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "drift_report"])


def drift_stats_key(spec: PipelineSpec) -> dg.AssetKey:
    """Not an asset: the table of per-window statistics the drift report appends to, named like one."""
    return dg.AssetKey([spec.name, DRIFT_STATS])


def performance_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "performance"])


def scores_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, SCORES])


# --- Groups, jobs, sensors -----------------------------------------------------------------------------------------
def group(spec: PipelineSpec, stage: str) -> str:
    """The UI group of a pipeline's stage: `fraud_ingest`, `fraud_features`, ... `fraud_monitoring`."""
    return f"{spec.name}_{stage}"


def daily_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_daily"


def training_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_training"


def bento_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_bento"


def shadow_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_shadow_evaluation"


def ab_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_ab_test"


def monitoring_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_monitoring"


def retraining_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_retraining"


def scoring_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_scoring"


def retention_job(spec: PipelineSpec) -> str:
    return f"{spec.name}_retention"


def retraining_sensor(spec: PipelineSpec) -> str:
    return f"{spec.name}_retraining"


def bento_automation_sensor(spec: PipelineSpec) -> str:
    return f"{spec.name}_bento_automation"


# --- Run tags ---------------------------------------------------------------------------------------------------------
PROMOTION_TAG = f"{TAG_PREFIX}promotion"  # "manual": a passing candidate becomes challenger, never champion
RETRAINING_TAG = f"{TAG_PREFIX}retraining"  # the evidence a retraining run was requested for
RETRAIN_AT_TAG = f"{TAG_PREFIX}retrain_at"
RETRAIN_REASON_TAG = f"{TAG_PREFIX}retrain_reason"
ACCEPT_DEFINITION_TAG = f"{TAG_PREFIX}accept_definition_change"  # "true": a shared table rebuilt under a new definition
