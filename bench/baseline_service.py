"""The serving benchmark's baselines, two minimal BentoML endpoints (one worker each, as `mlops serve`):

- `Constant`: takes the same request body as `/predict` and returns a constant: what BentoML itself costs per
  request (HTTP, routing, its own validation and serialization). The target's yardstick.
- `Baseline`: scores the same registered model on a feature vector passed in whole, as a one-row pandas frame
  through the fitted scikit-learn pipeline (no online lookup, no validation from the spec, no logging, no shadow):
  what a user gets by wrapping the registered pipeline in an endpoint.
"""

import os
from typing import Any

import bentoml


@bentoml.service(name="constant")
class Constant:
    @bentoml.api
    def predict(self, request: dict[str, Any]) -> float:
        return 0.5


@bentoml.service(name="baseline")
class Baseline:
    def __init__(self) -> None:
        import mlflow.sklearn

        mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
        self.model = mlflow.sklearn.load_model(os.environ["BASELINE_MODEL_URI"])

    @bentoml.api
    def predict(self, features: dict[str, Any]) -> float:
        import pandas as pd

        return float(self.model.predict_proba(pd.DataFrame([features]))[0, 1])
