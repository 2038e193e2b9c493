"""Materialize real asset graphs end to end in temporary folders and instances."""

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.features.online import SQLiteOnlineStore, lookup
from mlops_assets.core.lake import content_hash, scan_table, table_path
from mlops_assets.definitions import build_definitions
from tests.helpers import small_fraud_specs

pytestmark = pytest.mark.integration


def _run(
    defs: dg.Definitions,
    job: str,
    instance: dg.DagsterInstance,
    first: str | None = None,
    last: str | None = None,
    **kw,
):
    tags = {}
    if first:
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    return defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False, **kw)


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {e.asset_key.to_user_string(): (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}


def test_csv_pipeline_end_to_end(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        daily = _run(defs, "shop_daily", instance, "2026-03-01", "2026-03-02")
        assert daily.success
        # 2 of 8 orders rejected: below the spec's 45 % threshold, so a warning that does not block.
        assert _checks(daily)["shop/raw_orders"] == (False, "WARN")
        assert _checks(daily)["shop/user_orders"] == (True, "ERROR")
        quarantine = scan_table(table_path(data, "shop", "raw_orders_quarantine")).collect()
        assert sorted(quarantine["user_id"]) == ["u2", "u3"]
        orders = scan_table(table_path(data, "shop", "raw_orders")).collect()
        assert orders.height + quarantine.height == 8

        training = _run(defs, "shop_training", instance)
        assert training.success
        frame = scan_table(table_path(data, "shop", "training_set")).collect().sort("user_id")
        # feature_cutoff 'at': u1's order at 12:00 counts itself and the 08:00 one.
        assert frame.select("user_id", "count_1d", "amount_sum_1d", "returned").rows() == [
            ("u1", 2, 17.0, 1),
            ("u2", 1, 5.5, 0),
        ]
        (materialization,) = training.get_asset_materialization_events()
        metadata = materialization.materialization.metadata
        assert metadata["dagster/row_count"].value == 2
        assert metadata["input_delta_versions"].value == {"shop/raw_returns": 0, "shop/user_orders": 0}

        as_of = _run(
            defs,
            "shop_training",
            instance,
            run_config={"ops": {"shop__training_set": {"config": {"as_of": "2026-03-02T09:30:00"}}}},
        )
        assert as_of.success
        assert scan_table(table_path(data, "shop", "training_set")).collect()["user_id"].to_list() == ["u1"]


def test_a_pipeline_of_request_features_only_materializes(shop: tuple[Path, Path]) -> None:
    """`feature_views: {}`: no view, no online store; the training set is the labels with their request features."""
    specs, data = shop
    spec = specs / "shop.yaml"
    text = spec.read_text()
    views = text[text.index("feature_views:") : text.index("request_features:")]
    spec.write_text(text.replace(views, "feature_views: {}\n"))
    defs = build_definitions(specs, str(data))
    graph = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert not {"shop/user_orders", "shop/online/user_orders"} & graph and "shop/training_set" in graph
    with dg.instance_for_test() as instance:
        assert _run(defs, "shop_daily", instance, "2026-03-01", "2026-03-02").success
        training = _run(defs, "shop_training", instance)
        assert training.success, [e.step_failure_data.error.message for e in training.get_step_failure_events()]
        frame = scan_table(table_path(data, "shop", "training_set")).collect().sort("user_id")
        returns = pl.read_csv(data / "landing" / "returns" / "2026-03-02.csv").sort("user_id")
        columns = ["user_id", "amount", "returned"]
        assert frame.select(columns).rows() == returns.select(columns).rows()
        assert not {"count_1d", "amount_sum_1d", "amount_max_1d"} & set(frame.columns)
        checks = {e.check_name: e.passed for e in training.get_asset_check_evaluations()}
        assert checks and all(checks.values()), checks


def test_rematerializing_a_partition_replaces_it(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        assert _run(defs, "shop_daily", instance, "2026-03-01", "2026-03-02").success
        tables = ["raw_orders", "raw_orders_quarantine", "user_orders"]
        before = {t: content_hash(scan_table(table_path(data, "shop", t)).collect()) for t in tables}
        assert _run(defs, "shop_daily", instance, "2026-03-02").success
        after = {t: content_hash(scan_table(table_path(data, "shop", t)).collect()) for t in tables}
        assert after == before


def test_rejections_above_threshold_block_downstream(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    spec = specs / "shop.yaml"
    spec.write_text(spec.read_text().replace("max_rejected_share: 0.45", "max_rejected_share: 0.1"))
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        result = _run(defs, "shop_daily", instance, "2026-03-02")
        assert not result.success
        assert _checks(result)["shop/raw_orders"] == (False, "ERROR")
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "shop/user_orders" not in materialized
        assert not table_path(data, "shop", "user_orders").exists()
        # Nothing was lost: the rejected rows are in quarantine, the rest in the raw table.
        assert scan_table(table_path(data, "shop", "raw_orders_quarantine")).collect().height == 2


def test_empty_day_warns_and_missing_day_fails_with_the_path(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        result = _run(defs, "shop_daily", instance, "2026-03-01")
        assert result.success
        evaluation = next(
            e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == "shop/raw_returns"
        )
        assert (evaluation.passed, evaluation.severity.value, evaluation.description) == (
            False,
            "WARN",
            "the partition is empty",
        )
        missing = _run(defs, "shop_daily", instance, "2026-03-03")
        assert not missing.success
        (failure,) = [e for e in missing.get_step_failure_events() if "raw_orders" in e.step_key]
        assert "no file for 2026-03-03 matches sources.orders.path" in failure.step_failure_data.error.message
        assert "landing/orders/2026-03-03.csv" in failure.step_failure_data.error.message


def test_demo_pipeline_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("MLOPS_SPECS_DIR", raising=False)
    specs = small_fraud_specs(tmp_path / "specs")  # the built-in example at a tenth of its size
    result = CliRunner().invoke(
        main, ["--specs", str(specs), "--data-dir", "data", "materialize", "fraud", "--days", "12"]
    )
    assert result.exit_code == 0, result.output
    assert "fraud/training_set" in result.output and "checks passed" in result.output
    assert "champion: version 1" in result.output and "fraud/bento" in result.output and "mlops_fraud:" in result.output
    assert (tmp_path / "data" / "bentoml" / "bentos" / "mlops_fraud" / "latest").exists()
    training = scan_table(table_path(tmp_path / "data", "fraud", "training_set")).collect()
    assert training.height > 1000
    # Labels of transactions before the start date have no feature history and are left out.
    assert training["transaction_ts"].min() >= datetime(2026, 1, 1)
    assert training["confirmed_at"].max() < datetime(2026, 1, 13)
    assert (tmp_path / "data" / "landing" / "card_transactions" / "transactions" / "2026-01-12.parquet").exists()
    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        jobs = sorted(r.job_name for r in instance.get_runs())
        assert jobs == ["fraud_bento", "fraud_daily", "fraud_training"]  # the 12 days in one run
        assert instance.get_latest_materialization_event(dg.AssetKey(["fraud", "training_set"])) is not None


def test_cli_reports_bad_specs_and_usage(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\nentity: {name: e, keys: [k]}\nwindw: 1\n")
    result = CliRunner().invoke(main, ["--specs", str(tmp_path), "check"])
    assert result.exit_code == 1
    assert "windw: unknown key" in result.output and "bad.yaml" in result.output
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0 and "fraud: ok" in result.output
    result = CliRunner().invoke(main, ["materialize", "nope"])
    assert result.exit_code == 2 and "unknown pipeline 'nope'" in result.output


def test_feature_view_says_which_history_days_it_lacked(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        result = _run(defs, "shop_daily", instance, "2026-03-02")
        assert result.success
        events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
        metadata = events["shop/user_orders"].materialization.metadata
        # user_orders' 1d windows reach into 2026-03-01, which this run did not ingest.
        assert metadata["input_days_without_rows"].value == "2026-03-01"


def test_daily_run_syncs_the_online_store_incrementally(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    defs = build_definitions(specs, str(data))
    store = SQLiteOnlineStore(data / "online.db")
    with dg.instance_for_test() as instance:
        first = _run(defs, "shop_daily", instance, "2026-03-01")
        assert first.success
        rows = lookup(
            store, "shop", "user_orders", [("u1",), ("u2",), ("u3",)], timedelta(days=2), datetime(2026, 3, 2)
        )
        # The latest offline row of each entity: u1's at 12:00 counts both of its orders of the day.
        assert rows[0].values == {"count_1d": 2, "amount_sum_1d": 17.0, "amount_max_1d": 10.0}
        assert rows[0].feature_timestamp == datetime(2026, 3, 1, 12)
        assert rows[1].values == {"count_1d": 1, "amount_sum_1d": 5.5, "amount_max_1d": 5.5}
        assert not rows[2].found
        second = _run(defs, "shop_daily", instance, "2026-03-02")
        events = {e.asset_key.to_user_string(): e for e in second.get_asset_materialization_events()}
        # Day 2 brings new rows for u1 and u3 only (u2's order was quarantined).
        assert events["shop/online/user_orders"].materialization.metadata["entities_written"].value == 2
        again = _run(defs, "shop_daily", instance, "2026-03-02")
        events = {e.asset_key.to_user_string(): e for e in again.get_asset_materialization_events()}
        assert events["shop/online/user_orders"].materialization.metadata["entities_written"].value == 0
