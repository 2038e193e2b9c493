"""The code location `mlops ui` and `dagster dev -m mlops_assets.code_location` load, from any folder.

MLOPS_SPECS_DIR chooses the folder of pipeline specs (default: the built-in examples) and MLOPS_DATA_DIR the
data folder (default: ./data); MLFLOW_TRACKING_URI an MLflow tracking server (default: SQLite in the data folder);
MLOPS_ONLINE_STORE_URL a Redis online store (default: SQLite in the data folder); MLOPS_LAKE_URI an object store's
prefix (s3://bucket/prefix) for the landing files and Delta tables (default: the data folder), its credentials in
AWS's standard variables. The URLs stay references to their variables in the resources' configuration, so the UI
never shows a password they contain.
"""

import os

from mlops_assets.definitions import build_definitions

defs = build_definitions(os.environ.get("MLOPS_SPECS_DIR"), os.environ.get("MLOPS_DATA_DIR", "data"))
