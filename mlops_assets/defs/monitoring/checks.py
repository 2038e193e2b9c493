"""Names of the monitoring checks, declared on the drift report; the retraining sensor reads their results."""

import dagster as dg

from mlops_assets.core.monitoring.retraining import Reason
from mlops_assets.defs.keys import drift_report_key, performance_key
from mlops_assets.spec import PipelineSpec

FEATURE_DRIFT = "feature_drift"
DATASET_DRIFT = "dataset_drift"
PREDICTION_DRIFT = "prediction_drift"
DATA_QUALITY = "data_quality"
PERFORMANCE = "performance"
SKEW = "training_serving_skew"
OFFLINE_DRIFT = "offline_feature_drift"


def retraining_evidence(spec: PipelineSpec) -> dict[Reason, tuple[dg.AssetKey, tuple[str, ...]]]:
    """Which failing checks (at ERROR), on which asset, are evidence for a retraining, by reason."""
    return {
        "drift": (drift_report_key(spec), (DATASET_DRIFT, PREDICTION_DRIFT)),
        "performance": (performance_key(spec), (PERFORMANCE,)),
    }
