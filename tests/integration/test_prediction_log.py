"""The prediction log under a real SIGKILL: loss within the stated bound, the rest ingested once."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.core.lake import scan_table, table_path
from mlops_assets.core.serving.prediction_log import read_day, write_batch
from mlops_assets.definitions import build_definitions

pytestmark = pytest.mark.integration
BATCH = 50

WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from mlops_assets.core.serving.prediction_log import PredictionLogWriter

    writer = PredictionLogWriter(Path(sys.argv[1]), batch_size={batch}, flush_interval=0.5)
    i = 0
    while True:
        now = datetime.now(UTC).isoformat()
        writer.log({{"request_id": f"r{{i}}", "timestamp": now, "entity": {{"customer_id": "c1"}},
                     "features": {{"count_1h": i}}, "request": {{}}, "model_version": "1", "score": 0.1,
                     "degraded": False, "latency_ms": 1.0}})
        print(i, flush=True)  # acknowledged: log() returned
        i += 1
        time.sleep(0.0005)
    """
).format(batch=BATCH)


def test_sigkill_loses_at_most_one_batch_and_ingestion_has_no_duplicates(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    folder = data / "prediction_log" / "shop"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    acknowledged = 0
    assert child.stdout is not None
    for _line in child.stdout:
        acknowledged += 1
        if acknowledged == 777:
            os.kill(child.pid, signal.SIGKILL)
            break
    acknowledged += sum(1 for _ in child.stdout)  # what was printed before the kill landed
    child.wait()
    today = datetime.now(UTC).date()
    logged = read_day(folder, today)
    lost = acknowledged - logged.height
    assert 0 <= lost < BATCH, f"{acknowledged} acknowledged, {logged.height} on disk"
    # What is on disk is exactly a prefix of what was logged: nothing reordered, nothing half-written.
    assert logged["request_id"].to_list() == [f"r{i}" for i in range(logged.height)]

    # A batch written twice (e.g. a retried flush) is still ingested once per request.
    write_batch(
        folder,
        (folder / today.isoformat() / sorted(os.listdir(folder / today.isoformat()))[0]).read_text().splitlines(),
        today,
    )
    defs = build_definitions(specs, str(data))
    job = defs.resolve_job_def("shop_daily")
    with dg.instance_for_test() as instance:
        asset = dg.AssetKey(["shop", "prediction_log"])
        for _ in range(2):  # re-running the day replaces it
            result = job.execute_in_process(instance=instance, partition_key=today.isoformat(), asset_selection=[asset])
            assert result.success
    table = scan_table(table_path(data, "shop", "prediction_log")).collect()
    assert table.height == logged.height == table["request_id"].n_unique()


def test_days_past_the_log_retention_are_deleted_and_vacuumed_when_a_day_is_ingested(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    folder = data / "prediction_log" / "shop"
    today = datetime.now(UTC).date()
    old = today - timedelta(days=30)
    for day in (old, today):
        record = {"request_id": f"r-{day}", "timestamp": f"{day}T12:00:00+00:00", "request": {"note": f"said-{day}"}}
        write_batch(folder, [json.dumps(record)], day)
    asset = dg.AssetKey(["shop", "prediction_log"])
    with dg.instance_for_test() as instance:
        kept = build_definitions(specs, str(data)).resolve_job_def("shop_daily")
        for day in (old, today):
            assert kept.execute_in_process(instance=instance, partition_key=str(day), asset_selection=[asset]).success
        (specs / "shop.yaml").write_text((specs / "shop.yaml").read_text() + "serving: {log_retention: 7d}\n")
        job = build_definitions(specs, str(data)).resolve_job_def("shop_daily")
        assert job.execute_in_process(instance=instance, partition_key=str(today), asset_selection=[asset]).success
        event = instance.get_latest_materialization_event(asset)
        assert event is not None and event.asset_materialization is not None
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (meta["retention"], meta["purged_log_days"], meta["purged_table_days"]) == ("7d", str(old), str(old))
    assert meta["retention_cutoff"] == str(today - timedelta(days=6)) and meta["vacuumed_files"] >= 1
    table = scan_table(table_path(data, "shop", "prediction_log")).collect()
    assert table["request_id"].to_list() == [f"r-{today}"]
    files = [p for root in (folder, table_path(data, "shop", "prediction_log")) for p in root.rglob("*") if p.is_file()]
    contents = [str(pl.read_parquet(p).to_dicts()) if p.suffix == ".parquet" else p.read_text() for p in files]
    assert [p for p, text in zip(files, contents, strict=True) if f"said-{old}" in text] == []
    assert [p for p, text in zip(files, contents, strict=True) if f"said-{today}" in text]


def test_two_answers_under_one_request_id_are_both_ingested_and_counted(shop: tuple[Path, Path]) -> None:
    """Ids repeated across workers or restarts (no worker can refuse them): ingestion keeps both and says so."""
    specs, data = shop
    folder, today = data / "prediction_log" / "shop", datetime.now(UTC).date()
    first = {"request_id": "twice", "timestamp": f"{today}T08:00:00+00:00", "model_version": "1", "score": 0.25}
    write_batch(folder, [json.dumps(first), json.dumps({**first, "request_id": "once"})], today)
    write_batch(folder, [json.dumps({**first, "timestamp": f"{today}T09:00:00+00:00", "score": 0.75})], today)
    asset = dg.AssetKey(["shop", "prediction_log"])
    with dg.instance_for_test() as instance:
        job = build_definitions(specs, str(data)).resolve_job_def("shop_daily")
        assert job.execute_in_process(instance=instance, partition_key=str(today), asset_selection=[asset]).success
        event = instance.get_latest_materialization_event(asset)
        assert event is not None and event.asset_materialization is not None
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    table = scan_table(table_path(data, "shop", "prediction_log")).collect()
    assert sorted(table.filter(request_id="twice")["score"].to_list()) == [0.25, 0.75]
    assert table.height == 3 and meta["duplicate_request_ids"] == 1
