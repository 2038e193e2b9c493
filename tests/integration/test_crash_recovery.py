"""A materialization SIGKILLed while it writes (raw partitions, quarantine, feature tables, the prediction log, the
online store): no partial table is ever visible, and re-running gives exactly the tables of a run that was never
interrupted."""

import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from mlops_assets.core.lake import Location, scan_table, table_version
from mlops_assets.core.serving.prediction_log import encode, log_folder, write_batch
from tests.helpers import kill_server, lake_tables, small_fraud_specs, until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIG_LOG_BATCHES = 40


def _materialize(specs: Path, data: Path, home: Path, lake_uri: str | None = None) -> subprocess.Popen[bytes]:
    """`mlops materialize` of six days (no training) in a process of its own; the lake at `lake_uri` when given."""
    home.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(specs), "--data-dir", str(data)]
    env = {**os.environ, "DAGSTER_HOME": str(home), **({"MLOPS_LAKE_URI": lake_uri} if lake_uri else {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLOPS_ONLINE_STORE_URL", None)
    return subprocess.Popen(
        [*command, "materialize", "fraud", "--days", "6", "--no-training"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def _served_days(root: Location, first: date, days: int, batches: int = 5) -> None:
    """What serving logged on each day under the lake's `root`: batches of 400 predictions, for the daily runs to
    ingest."""
    for offset in range(days):
        day = first + timedelta(days=offset)
        for batch in range(batches):
            records = [
                {
                    "request_id": f"{day}-{batch}-{i}",
                    "timestamp": datetime.combine(day, datetime.min.time()) + timedelta(seconds=batch * 400 + i),
                    "entity": {"customer_id": f"c{i % 300:06d}"},
                    "features": {"amount_sum_1h": float(i)},
                    "request": {"amount": 1.0 + i},
                    "model_version": "1",
                    "score": i / 400,
                    "degraded": False,
                    "latency_ms": 2.0,
                }
                for i in range(400)
            ]
            write_batch(log_folder(root, "fraud"), [encode(r) for r in records], day)


def test_a_killed_materialization_leaves_no_partial_table_and_a_re_run_matches_a_clean_one(tmp_path: Path) -> None:
    specs = small_fraud_specs(tmp_path / "specs")
    first = date(2026, 1, 1)
    for data in (tmp_path / "clean", tmp_path / "crashed"):
        _served_days(data, first, 6)
    clean = _materialize(specs, tmp_path / "clean", tmp_path / "clean_home")
    assert clean.wait(timeout=300) == 0
    reference = lake_tables(tmp_path / "clean")
    # raw and quarantine tables of both sources, the feature views and the prediction log
    assert len(reference) >= 7 and "lake/fraud/prediction_log" in reference

    data, killed_with_tables = tmp_path / "crashed", []
    # The first kill as soon as the run has begun writing the lake (however fast the machine), the others later on.
    for delay in (None, 5.5, 7.0, 8.5, 10.0):
        run = _materialize(specs, data, tmp_path / "crashed_home")
        if delay is None:
            until(lambda run=run: (data / "lake").exists() or run.poll() is not None, 120, "a write to the lake")
        else:
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
    logged = scan_table(data / "lake/fraud/prediction_log").collect()
    assert logged.height == logged["request_id"].n_unique() == 6 * 5 * 400  # every prediction, once


def test_a_run_killed_while_it_writes_the_prediction_log_leaves_no_partial_log(tmp_path: Path) -> None:
    """Killed once the log's data files are on disk but before their commit: readers see no log table; the re-run
    ingests every prediction once, as a run that was never interrupted does."""
    specs, home = small_fraud_specs(tmp_path / "specs"), tmp_path / "home"
    # The window between the first data file and the commit is short (a large log widens it): try, each time on a
    # fresh lake, until a kill lands inside it; a kill after the commit leaves a whole table, no evidence either way.
    for attempt in range(6):
        data = tmp_path / f"data{attempt}"
        _served_days(data, date(2026, 1, 1), 6, batches=BIG_LOG_BATCHES)
        log_table = data / "lake/fraud/prediction_log"
        run = _materialize(specs, data, home)
        deadline = time.monotonic() + 120
        while not any(log_table.rglob("*.parquet")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert run.poll() is None, "the run ended before it wrote the prediction log"
        kill_server(run)
        assert any(log_table.rglob("*.parquet"))
        if table_version(log_table) is None:  # data files written, never committed
            break
    else:
        pytest.fail("no kill landed between the prediction log's first data file and its commit in 6 tries")
    assert "lake/fraud/prediction_log" not in lake_tables(data)  # there is no log table to read, not a part of one

    rerun = _materialize(specs, data, home)
    assert rerun.wait(timeout=300) == 0
    logged = scan_table(log_table).collect()
    assert logged.height == logged["request_id"].n_unique() == 6 * BIG_LOG_BATCHES * 400
