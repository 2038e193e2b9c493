"""Code location entry point (`dagster dev` reads it through workspace.yaml).

MLOPS_SPECS_DIR chooses the folder of pipeline specs (default: the built-in examples) and MLOPS_DATA_DIR the
data folder (default: ./data);
MLFLOW_TRACKING_URI an MLflow tracking server (default: SQLite in the data folder); MLOPS_ONLINE_STORE_URL a
Redis online store (default: SQLite in the data folder).
"""

import os

from mlops_assets.definitions import build_definitions

defs = build_definitions(
    os.environ.get("MLOPS_SPECS_DIR"),
    os.environ.get("MLOPS_DATA_DIR", "data"),
    os.environ.get("MLFLOW_TRACKING_URI"),
    os.environ.get("MLOPS_ONLINE_STORE_URL"),
)
