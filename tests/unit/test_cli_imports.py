"""The commands a person runs to look (`--help`, `check`, `status`, `report`) import only what they use: no Dagster,
BentoML, scikit-learn, skops or MLflow model flavour, and on the embedded registry no MLflow at all (`status` and
`report` read its SQLite file directly; registry_view). Their import graph is asserted, not their time (which the
machine decides)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.core.models.registry import open_registry

# Runs the CLI as `mlops ARGS...` and writes every module the process imported, at its exit, to OUT.
RECORDING = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from mlops_assets.cli import main
main(sys.argv[1:], prog_name="mlops")
"""

# What no looking command needs: serving, training, orchestration.
NEVER = ("dagster", "bentoml", "sklearn", "skops", "mlflow.sklearn", "mlflow.pyfunc")
# What only a command reading the registry through MLflow's client needs (MLflow itself brings pandas and scipy).
REGISTRY = ("mlflow", "sqlalchemy", "pandas", "scipy")


def imported(
    data: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The command's result and the modules its process imported (`env`: the process's environment)."""
    out = data.parent / f"modules of {' '.join(args)}.json"
    env = env or {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_SPECS_DIR")}
    command = [sys.executable, "-c", RECORDING, str(out), "--data-dir", str(data), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**env, "DAGSTER_HOME": str(data.parent)})
    return result, set(json.loads(out.read_text()))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if p in modules or any(m.startswith(f"{p}.") for m in modules))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose embedded registry has a champion of the built-in fraud pipeline, with its card (the
    commands only read it)."""
    data = tmp_path_factory.mktemp("cli_imports") / "data"
    client = open_registry(data).client
    run = client.create_run(client.create_experiment("fraud"))
    client.log_metric(run.info.run_id, "roc_auc", 0.91)
    client.create_registered_model("fraud")
    version = client.create_model_version("fraud", f"runs:/{run.info.run_id}/model", run.info.run_id).version
    client.set_registered_model_alias("fraud", "champion", version)
    (data / "model_cards" / "fraud").mkdir(parents=True)
    (data / "model_cards" / "fraud" / "v1.md").write_text("# version 1")
    return data


@pytest.mark.parametrize("args", [["--help"], ["check"]])
def test_help_and_check_import_neither_mlflow_nor_anything_heavier(data: Path, args: list[str]) -> None:
    result, modules = imported(data, *args)
    assert result.returncode == 0, result.stderr
    assert loaded(modules, NEVER + REGISTRY) == []


def test_status_reads_the_registry_without_model_flavours_or_dagster(data: Path) -> None:
    result, modules = imported(data, "status")
    assert result.returncode == 0, result.stderr
    assert "champion   version 1" in result.stdout and "roc_auc 0.9100" in result.stdout
    assert loaded(modules, NEVER + REGISTRY) == []


def test_report_reads_the_champion_without_model_flavours_or_dagster(data: Path) -> None:
    result, modules = imported(data, "report", "fraud")
    assert result.returncode == 0, result.stderr
    assert "(version 1, champion)" in result.stdout
    assert loaded(modules, NEVER + REGISTRY) == []


def test_status_on_a_tracking_server_reads_through_mlflow_without_model_flavours(data: Path) -> None:
    """A tracking URI the direct reader does not read goes through MLflow's client (here an SQLite URI with a query,
    which MLflow reads and sqlite3 would not)."""
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_SPECS_DIR"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{data / 'mlflow.db'}?timeout=5"
    result, modules = imported(data, "status", env=env)
    assert result.returncode == 0, result.stderr
    assert "champion   version 1" in result.stdout and "mlflow" in modules
    assert loaded(modules, NEVER) == []
