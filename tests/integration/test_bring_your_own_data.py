"""Bring your own data: from a user's event file, through `mlops new`, to a champion and its bento."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.lake import scan_table, table_path
from tests.unit.test_starter import orders

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_event_file_becomes_a_served_model_with_two_commands(tmp_path: Path) -> None:
    events = tmp_path / "orders.csv"
    orders(rows=3000, days=20).write_csv(events)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()

    def mlops(*args: str) -> str:
        command = [sys.executable, "-m", "mlops_assets.cli", "--specs", "specs", "--data-dir", "data", *args]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    told = mlops("new", "shop", "--from", str(events))
    next_step = told.rsplit("then mlops --specs specs ", 1)[1].split()
    done = mlops(*next_step)
    assert "shop/raw_events                     3,000 rows  checks passed" in done
    assert "champion: version 1 (promotion gate passed" in done and "shop/bento" in done
    training = scan_table(table_path(tmp_path / "data", "shop", "training_set")).collect()
    assert training.height == 3000 and training["count_7d"].null_count() < 100
