"""A materialization SIGKILLed while it writes (raw partitions, quarantine, feature tables, the online store): no
partial table is ever visible, and re-running gives exactly the tables of a run that was never interrupted."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_assets.lake import scan_table
from tests.conftest import kill_server, lake_tables, small_fraud_specs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _materialize(specs: Path, data: Path, home: Path) -> subprocess.Popen[bytes]:
    home.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(specs), "--data-dir", str(data)]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLOPS_ONLINE_STORE_URL", None)
    return subprocess.Popen(
        [*command, "materialize", "fraud", "--days", "6", "--no-training"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def test_a_killed_materialization_leaves_no_partial_table_and_a_re_run_matches_a_clean_one(tmp_path: Path) -> None:
    specs = small_fraud_specs(tmp_path / "specs")
    clean = _materialize(specs, tmp_path / "clean", tmp_path / "clean_home")
    assert clean.wait(timeout=300) == 0
    reference = lake_tables(tmp_path / "clean")
    assert len(reference) >= 6  # raw and quarantine tables of both sources, the feature views

    data, killed_with_tables = tmp_path / "crashed", []
    for delay in (4.0, 5.5, 7.0, 8.5, 10.0):
        run = _materialize(specs, data, tmp_path / "crashed_home")
        time.sleep(delay)
        if run.poll() is not None:  # finished before the kill: nothing more to interrupt
            break
        kill_server(run)  # SIGKILL to the run and anything it started
        visible = lake_tables(data) if (data / "lake").exists() else {}
        # Each table a reader can open is whole: exactly what the clean run wrote, never a part of it.
        assert {name: reference[name] for name in visible} == visible
        killed_with_tables.append(len(visible))
    print(f"tables visible after each kill: {killed_with_tables} of {len(reference)}")
    assert killed_with_tables and killed_with_tables[0] < len(reference)  # a kill landed mid-run

    rerun = _materialize(specs, data, tmp_path / "crashed_home")
    assert rerun.wait(timeout=300) == 0
    assert lake_tables(data) == reference
    # What the rows say, not only their hash: the same accepted and quarantined rows per day.
    for name in [n for n in reference if n.endswith("/raw_transactions")]:
        counts = [
            scan_table(root / name).group_by("partition_date").len().sort("partition_date").collect()
            for root in (tmp_path / "clean", data)
        ]
        assert counts[0].equals(counts[1]) and counts[0].height == 6
        assert counts[0].get_column("len").min() > 0
