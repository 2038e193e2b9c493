"""The lake in object storage (MLOPS_LAKE_URI=s3://bucket/prefix) on moto's S3 server, started by the tests on
127.0.0.1 (tests/conftest.py `s3_endpoint`): a real HTTP endpoint the code reaches through the standard AWS_*
variables, as it would reach S3. Landing files and Delta tables go to the bucket and nothing of them to the local
data folder; concurrent writers of one table commit through S3's conditional writes; a run killed mid-write leaves
no partial table there either."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.lake import (
    PARTITION_COLUMN,
    location,
    partition_batches,
    replace_partitions,
    replace_partitions_streamed,
    scan_table,
    table_version,
)
from mlops_assets.core.models.registry import ModelRegistry
from mlops_assets.core.serving.privacy import purge_prediction_log
from mlops_assets.definitions import build_definitions
from mlops_assets.examples.nannyml import dataset
from tests.helpers import (
    DAYS,
    QUIET,
    S3_SECRET,
    S3_TOKEN,
    free_port,
    kill_server,
    lake_tables,
    s3_lake_tables,
    s3_objects,
    small_fraud_specs,
    until,
)
from tests.integration.test_crash_recovery import _materialize, _served_days

pytestmark = [pytest.mark.services, pytest.mark.slow]

# What a data folder may hold when the lake is elsewhere: the embedded MLflow store and online store (with SQLite's
# write-ahead log and its index while a connection is open: a test run before this one in the process may hold one).
LOCAL_ONLY = {"mlflow.db", "mlartifacts", "online.db", "online.db-wal", "online.db-shm"}


def test_the_pipeline_keeps_its_landing_files_and_tables_in_the_bucket_and_none_in_the_data_folder(
    s3_lake: str, lake: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest, features, training set and model with MLOPS_LAKE_URI set: the landing files, tables and model card are
    in the bucket, the tables equal to the same days ingested into a local lake (the session's), and the data folder
    holds only local state."""
    monkeypatch.setenv("MLOPS_LAKE_URI", s3_lake)
    specs, data = small_fraud_specs(tmp_path / "specs"), tmp_path / "data"
    defs = build_definitions(specs, str(data), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with dg.instance_for_test() as instance:
        tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
        daily = defs.resolve_job_def("fraud_daily").execute_in_process(instance=instance, tags=tags, run_config=QUIET)
        assert daily.success
        assert defs.resolve_job_def("fraud_training").execute_in_process(instance=instance, run_config=QUIET).success
        recorded = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "training_set"]))
    assert recorded is not None and recorded.asset_materialization is not None
    uri = recorded.asset_materialization.metadata["dagster/uri"].value
    assert uri == f"{s3_lake}/lake/fraud/training_set"

    keys = s3_objects(s3_lake)
    prefix = s3_lake.removeprefix("s3://").partition("/")[2]
    landing = [k for k in keys if k.startswith(f"{prefix}/landing/")]
    assert len(landing) == 2 * 16  # both generated sources' 16 days, written to the bucket
    tables = s3_lake_tables(s3_lake)
    # The same days in the local lake of the session: the same tables, row for row (the training set is extra).
    # The session's lake fixture writes the raw tables and the feature views (each with its quarantine); tests before
    # this one may have added other tables there, which are not compared.
    local = {
        name: digest
        for name, digest in lake_tables(lake[1]).items()
        if name.rsplit("/", 1)[-1].startswith(("raw_", "customer_"))
    }
    assert len(local) >= 4 and {name: tables.get(name) for name in local} == local
    assert "lake/fraud/training_set" in tables
    assert {f"{prefix}/model_cards/fraud/v1.md", f"{prefix}/model_cards/fraud/v1.html"} <= set(keys)
    assert scan_table(location(uri)).select(pl.len()).collect().item() > 0

    assert {p.name for p in data.iterdir()} <= LOCAL_ONLY  # no landing file, no table
    assert not [p for p in data.rglob("*") if p.suffix in (".parquet", ".csv") or p.name == "_delta_log"]
    assert ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}").aliases("fraud") == {"champion": "1"}


def _writer(uri: str, writer: int, rounds: int, start_at: float, versions_file: str) -> None:
    """One process replacing the same two days of a shared table `rounds` times, in one commit each time, with rows
    saying who wrote them; the version of each commit goes to `versions_file`."""
    days = ["2026-01-01", "2026-01-02"]
    while time.time() < start_at:  # both start together: their commits race
        time.sleep(0.001)
    versions = []
    for round_ in range(rounds):
        frame = pl.DataFrame(
            {
                "row": list(range(400)),
                "writer": [writer] * 400,
                "round": [round_] * 400,
                PARTITION_COLUMN: [days[i % 2] for i in range(400)],
            }
        )
        versions.append(replace_partitions(location(uri), frame, days))
    Path(versions_file).write_text(json.dumps(versions))


def test_two_writer_processes_replacing_the_same_partitions_of_a_table_in_s3_both_commit_whole(
    s3_lake: str, tmp_path: Path
) -> None:
    """Delta's commit on S3 is a conditional write of the next log entry: one of two racing writers is refused,
    re-reads and commits after the other. Every commit lands as its own version, the log has no gap, and the
    partitions hold exactly one writer's one round (the last committed), never a mix or a duplicate."""
    uri, rounds = f"{s3_lake}/lake/race/table", 6
    seed = pl.DataFrame({"row": [0], "writer": [-1], "round": [-1], PARTITION_COLUMN: ["2026-01-01"]})
    assert replace_partitions(location(uri), seed, ["2026-01-01", "2026-01-02"]) == 0
    context = multiprocessing.get_context("spawn")  # the AWS_* variables of this process go with them
    start_at = time.time() + 3
    files = [tmp_path / f"writer{w}.json" for w in (0, 1)]
    jobs = [
        context.Process(target=_writer, args=(uri, w, rounds, start_at, str(files[w])), name=f"writer{w}")
        for w in (0, 1)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=240)
    assert [job.exitcode for job in jobs] == [0, 0]

    versions = [json.loads(f.read_text()) for f in files]
    # Each writer's commits, in its own order, each its own version (never the version the other writer's commit had
    # moved the table on to). A commit delta-rs reported refused after it had landed is committed again by the retry
    # (the same rows): one more version, reported by no writer, never a gap.
    reported, last = sorted(versions[0] + versions[1]), table_version(location(uri))
    assert all(v == sorted(v) and len(v) == rounds for v in versions)
    assert len(set(reported)) == 2 * rounds and reported[0] >= 1 and reported[-1] == last
    prefix = uri.removeprefix("s3://").partition("/")[2]
    commits = sorted(k for k in s3_objects(uri) if k.startswith(f"{prefix}/_delta_log/") and k.endswith(".json"))
    assert [int(Path(k).stem) for k in commits] == list(range(last + 1))  # the log on S3 has no gap

    table = scan_table(location(uri)).collect()
    last_writer = 0 if versions[0][-1] > versions[1][-1] else 1
    per_day = table.group_by(PARTITION_COLUMN).agg(pl.len(), pl.col("writer").unique(), pl.col("round").unique())
    assert sorted(per_day.rows()) == [(d, 200, [last_writer], [rounds - 1]) for d in ("2026-01-01", "2026-01-02")]


def test_a_streamed_write_its_chunked_read_and_the_retention_purge_work_on_a_table_in_s3(
    s3_lake: str, tmp_path: Path
) -> None:
    """What batch scores and the prediction log's retention do to a table, in the bucket: a stream of chunks replaces
    two days in one commit, a day is read back a chunk at a time, and a purge deletes the older day and vacuums its
    data files out of the bucket."""
    uri = f"{s3_lake}/lake/fraud/scores"
    days = ["2026-01-01", "2026-01-02"]
    chunks = [pl.DataFrame({"id": list(range(i, i + 50)), PARTITION_COLUMN: days[i // 100]}) for i in range(0, 200, 50)]
    schema = chunks[0].to_arrow().schema
    assert replace_partitions_streamed(location(uri), lambda: iter(chunks), days, schema) == 0
    read = list(partition_batches(location(uri), days[1], ["id"], 30))
    assert [f.height for f in read] == [30, 30, 30, 10] and sorted(pl.concat(read)["id"]) == list(range(100, 200))

    prefix = uri.removeprefix("s3://").partition("/")[2]
    old = [k for k in s3_objects(uri) if f"/{PARTITION_COLUMN}={days[0]}/" in k]
    assert old  # the older day's data files are there before the purge
    purged = purge_prediction_log(tmp_path / "no_log_folder", location(uri), date(2026, 1, 2))
    assert purged.table_days == [days[0]] and purged.vacuumed_files == len(old)
    assert not [k for k in s3_objects(uri) if f"/{PARTITION_COLUMN}={days[0]}/" in k]  # gone from the bucket
    assert sorted(scan_table(location(uri)).collect()["id"]) == list(range(100, 200))
    assert any(k.startswith(f"{prefix}/_delta_log/") and "checkpoint" in k for k in s3_objects(uri))


def test_a_run_killed_while_it_writes_to_object_storage_leaves_no_partial_table_and_a_re_run_matches_a_clean_one(
    s3_lake: str, tmp_path: Path
) -> None:
    """tests/integration/test_crash_recovery.py with the lake in the bucket: after each SIGKILL every table a reader
    can open there is whole (what the clean run wrote), and the re-run's tables equal the clean run's."""
    specs = small_fraud_specs(tmp_path / "specs")
    clean, crashed = f"{s3_lake}/clean", f"{s3_lake}/crashed"
    for lake in (clean, crashed):  # what serving logged, in the bucket beside the lake
        _served_days(location(lake), date(2026, 1, 1), 6)
    run = _materialize(specs, tmp_path / "clean", tmp_path / "clean_home", clean)
    assert run.wait(timeout=300) == 0
    reference = s3_lake_tables(clean)
    assert len(reference) >= 7 and "lake/fraud/prediction_log" in reference
    logged = scan_table(location(f"{clean}/lake/fraud/prediction_log")).select(pl.len()).collect().item()
    assert logged == 6 * 5 * 400  # every batch ingested from the bucket

    killed_with_tables = []
    # The first kill once the run has begun writing the lake (its first object in the bucket), the others later on.
    for delay in (None, 4.0, 6.5):
        run = _materialize(specs, tmp_path / "crashed", tmp_path / "crashed_home", crashed)
        if delay is None:
            until(lambda run=run: s3_objects(f"{crashed}/lake/") or run.poll() is not None, 120, "a write to the lake")
        else:
            time.sleep(delay)
        if run.poll() is not None:  # finished before the kill: nothing more to interrupt
            break
        kill_server(run)
        visible = s3_lake_tables(crashed)
        assert {name: reference[name] for name in visible} == visible  # whole tables only, never a part
        killed_with_tables.append(len(visible))
    print(f"tables visible in the bucket after each kill: {killed_with_tables} of {len(reference)}")
    assert killed_with_tables and killed_with_tables[0] < len(reference)  # a kill landed mid-run

    rerun = _materialize(specs, tmp_path / "crashed", tmp_path / "crashed_home", crashed)
    assert rerun.wait(timeout=300) == 0
    assert s3_lake_tables(crashed) == reference
    logged = scan_table(location(f"{crashed}/lake/fraud/prediction_log")).collect()
    assert logged.height == logged["request_id"].n_unique() == 6 * 5 * 400  # every prediction, once
    assert not (tmp_path / "crashed" / "lake").exists() and not (tmp_path / "crashed" / "landing").exists()


def test_a_missing_bucket_or_an_endpoint_that_does_not_answer_is_one_sentence_naming_the_lake(
    s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything runs, `mlops` says what is wrong with the lake's location, without a traceback or a
    credential."""
    specs = small_fraud_specs(tmp_path / "specs")
    cli = ["--specs", str(specs), "--data-dir", str(tmp_path / "data")]
    missing = CliRunner().invoke(main, [*cli, "--lake-uri", "s3://no-such-bucket-here/lake", "materialize", "fraud"])
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    assert missing.exit_code == 1
    assert missing.output.strip() == (
        f"error: the lake s3://no-such-bucket-here/lake: bucket 'no-such-bucket-here' does not exist at {endpoint}"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLOPS_LAKE_URI", s3_lake)
    unreachable = CliRunner().invoke(main, [*cli, "features"])
    assert unreachable.exit_code == 1
    assert unreachable.output.startswith(f"error: the lake {s3_lake} cannot be reached: Could not connect")
    assert "Traceback" not in unreachable.output and len(unreachable.output.strip().splitlines()) == 1
    wrong_scheme = CliRunner().invoke(main, [*cli, "--lake-uri", "gs://bucket/lake", "features"])
    assert wrong_scheme.output.strip() == (
        "error: gs://bucket/lake: the lake is a local folder or s3://bucket/prefix, not gs://"
    )
    for result in (missing, unreachable, wrong_scheme):
        assert S3_SECRET not in result.output and S3_TOKEN not in result.output


def test_mlops_new_lays_a_public_files_days_out_in_the_bucket_when_the_lake_is_there(
    s3_lake: str, tmp_path: Path
) -> None:
    """With the lake in a bucket, `mlops new` writes the event file's daily files where the spec's source reads
    them (its landing prefix in the bucket), nothing to the local data folder; the starter spec then checks."""
    dataset("loans", days=5).write_csv(tmp_path / "loans.csv")
    cli = ["--specs", str(tmp_path / "specs"), "--data-dir", str(tmp_path / "data"), "--lake-uri", s3_lake]
    made = CliRunner().invoke(main, [*cli, "new", "loans", "--from", str(tmp_path / "loans.csv")])
    assert made.exit_code == 0, made.output
    prefix = s3_lake.removeprefix("s3://").partition("/")[2]
    days = sorted(k for k in s3_objects(s3_lake) if k.startswith(f"{prefix}/landing/loans/events/"))
    assert len(days) == 5 and all(k.endswith(".parquet") for k in days), days
    assert "daily files of" in made.output and f"to {s3_lake}/landing/loans/events/" in made.output
    assert not (tmp_path / "data" / "landing").exists()
    checked = CliRunner().invoke(main, [*cli, "check"])
    assert checked.exit_code == 0 and "loans: ok" in checked.output, checked.output
