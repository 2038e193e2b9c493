"""The serving benchmark's baseline: a minimal BentoML endpoint scoring the same registered model on a feature
vector passed in whole (no online lookup, no validation from the spec, no logging, no shadow)."""

import os
from typing import Any

import bentoml
import mlflow.sklearn
import pandas as pd


@bentoml.service(name="baseline")
class Baseline:
    def __init__(self) -> None:
        mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
        self.model = mlflow.sklearn.load_model(os.environ["BASELINE_MODEL_URI"])

    @bentoml.api
    def predict(self, features: dict[str, Any]) -> float:
        return float(self.model.predict_proba(pd.DataFrame([features]))[0, 1])
