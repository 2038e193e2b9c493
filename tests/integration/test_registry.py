"""The MLflow registry operations on a real (SQLite) tracking store, with tiny models."""

import threading
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as version_of
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops_assets.core.models.registry import ChampionEvent, ModelRegistry, RegistryError
from mlops_assets.definitions import build_definitions

pytestmark = pytest.mark.integration


def tiny_version(registry: ModelRegistry, name: str = "fraud") -> str:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"amount": rng.normal(size=60)})
    pipeline = Pipeline([("estimator", LogisticRegression())]).fit(x, (x["amount"] > 0).astype(int))
    logged = registry.log_candidate(
        name,
        pipeline,
        x.head(5),
        params={},
        metrics={"pr_auc": 0.9},
        tags={"pipeline": name},
        artifacts={},
        required={"amount"},
    )
    return logged.version


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


def test_retention_archives_only_stale_unpromoted_versions(registry: ModelRegistry) -> None:
    versions = [tiny_version(registry) for _ in range(5)]
    registry.promote("fraud", "1", "first", "test")
    registry.promote("fraud", "2", "better", "test")  # 1 is now the previous champion
    registry.set_challenger("fraud", "3")
    registry.client.set_registered_model_alias("fraud", "staging", "4")
    assert versions == ["1", "2", "3", "4", "5"]

    assert registry.archive_stale("fraud", timedelta(days=30)) == []  # nothing is old yet
    later = datetime.now(UTC) + timedelta(days=31)
    assert registry.archive_stale("fraud", timedelta(days=30), now=later) == ["4", "5"]
    assert registry.aliases("fraud") == {"champion": "2", "challenger": "3"}
    assert "archived_at" in registry.version("fraud", "4").tags
    # Archived, not deleted: the version and its run are still there.
    assert registry.client.get_run(registry.version("fraud", "5").run_id).info.lifecycle_stage == "active"
    assert registry.archive_stale("fraud", timedelta(days=30), now=later) == []


def test_champion_changes_recorded_at_once_by_several_processes_are_all_kept(registry: ModelRegistry) -> None:
    """Each change is recorded under a key of its own: recorders that start together (as two `mlops promote` or a
    promotion and a rollback can) never overwrite each other's record."""
    from concurrent.futures import ThreadPoolExecutor

    tiny_version(registry)
    start = threading.Barrier(4)

    def record(i: int) -> None:
        start.wait()
        registry._record_change("fraud", ChampionEvent("1", None, f"change {i}", "test", f"2026-01-0{i + 1}T00:00:00"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(record, range(4)))
    history = registry.champion_history("fraud")
    assert [c.at.day for c in history] == [1, 2, 3, 4]


def test_promote_and_rollback_refuse_what_makes_no_sense(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="has no champion to roll back"):
        registry.rollback("fraud", "test")
    tiny_version(registry)
    with pytest.raises(RegistryError, match="has no version '7'"):
        registry.promote("fraud", "7", "typo", "test")
    registry.promote("fraud", "1", "first", "test")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("fraud", "1", "again", "test")


def test_retention_job_runs_against_the_configured_store(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}", tmp_path / "data" / "mlartifacts")
    tiny_version(registry)
    defs = build_definitions(data_dir=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("fraud_retention").execute_in_process(instance=instance)
    assert result.success
    assert "archived_at" not in registry.version("fraud", "1").tags  # a minute old: kept


def test_a_version_is_registered_whole_and_an_alias_never_points_at_missing_artifacts(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    import shutil

    version = tiny_version(registry)
    # Registered in one call with its tags: nothing to complete afterwards.
    assert registry.version("fraud", version).tags == {"pipeline": "fraud"}
    # Serialized with skops (loading refuses types it was not told to trust), never with pickle.
    model_dir = registry.download_model("fraud", version, tmp_path / "download")
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "serialization_format: skops" in mlmodel and "pickled_model: model.skops" in mlmodel
    # Its requirements are pinned to what it was trained with (given, not inferred by loading it in a subprocess).
    requirements = set((model_dir / "requirements.txt").read_text().split())
    assert {f"scikit-learn=={version_of('scikit-learn')}", f"skops=={version_of('skops')}"} <= requirements
    registry.promote("fraud", version, "first", "test")
    second = tiny_version(registry)
    # The model files of the second version disappear (a wiped bucket, a bad copy): it cannot go live.
    logged = registry.client.get_logged_model(registry.version("fraud", second).source.removeprefix("models:/"))
    folder = Path(logged.artifact_location.removeprefix("file://"))
    assert (folder / "MLmodel").exists()
    shutil.rmtree(folder)
    with pytest.raises(RegistryError, match=f"version {second} of 'fraud' has no model files"):
        registry.promote("fraud", second, "better", "test")
    with pytest.raises(RegistryError, match="has no model files"):
        registry.set_challenger("fraud", second)
    assert registry.aliases("fraud") == {"champion": version}


def test_a_version_carries_holdout_rows_its_compiled_scoring_is_checked_on_when_it_loads(
    registry: ModelRegistry,
) -> None:
    from mlops_assets.core.models.modeling import Columns, build_pipeline, fit, to_pandas
    from mlops_assets.core.serving.bundle import version_check_rows
    from mlops_assets.core.serving.scorer import LiveModels
    from mlops_assets.spec import ModelSpec
    from tests.public_data import nannyml_csv

    # NannyML's credit card products (multiclass): text and numeric inputs, some of them missing in the holdout.
    frame = nannyml_csv("cards").head(3000)
    columns = Columns(["app_behavioral_score", "requested_credit_limit"], ["acq_channel"])
    holdout = frame.tail(200).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col(c)).alias(c) for c in columns.all
    )
    spec = ModelSpec(
        task="multiclass", estimator="sklearn.ensemble.HistGradientBoostingClassifier", params={"max_iter": 20}
    )
    pipeline = fit(build_pipeline(spec, columns), frame.head(2800), columns, "y_true", "multiclass")
    logged = registry.log_candidate(
        "cards_check_rows",
        pipeline,
        to_pandas(holdout, columns),
        params={},
        metrics={},
        tags={},
        artifacts={},
        required=set(),
        task="multiclass",
    )

    rows = version_check_rows("cards_check_rows", logged.version, registry)

    assert rows == holdout.select(columns.all).to_dicts()
    models = LiveModels(
        lambda: {"champion": logged.version},
        lambda v: registry.load_sklearn("cards_check_rows", v),
        task="multiclass",
        check_rows=lambda v: version_check_rows("cards_check_rows", v, registry),
    )
    assert models.live.champion.fast is not None


def test_the_direct_reader_of_the_embedded_store_answers_what_mlflows_client_does(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    from mlops_assets.app.workspace import registry_reader
    from mlops_assets.core.models.registry_view import MLFLOW_SCHEMA_REVISION, SqliteRegistryReader, live_status

    for _ in range(3):
        tiny_version(registry)
    registry.promote("fraud", "1", "first", "test")
    registry.promote("fraud", "2", "better", "test")
    registry.set_challenger("fraud", "3")
    run_id = registry.version("fraud", "3").run_id
    registry.client.log_metric(run_id, "pr_auc", 0.95)  # a later value: the latest counts
    registry.client.log_metric(run_id, "recall", float("nan"))
    registry.client.log_metric(run_id, "pr_auc.segment_a", 0.5)  # a slice: never a status metric
    tiny_version(registry, "other")  # another model, never asked about
    registry.client.delete_model_version("other", "1")

    direct = registry_reader(registry.tracking_uri)
    assert isinstance(direct, SqliteRegistryReader)
    assert direct.revision() == MLFLOW_SCHEMA_REVISION  # the installed MLflow's schema head: the reader's
    for name in ("fraud", "other", "unknown"):
        assert direct.aliases(name) == registry.aliases(name)
    for version in ("1", "2", "3"):
        mine, theirs = direct.live_version("fraud", version), registry.live_version("fraud", version)
        assert mine.tags == theirs.tags and mine.created_ms == theirs.created_ms
        assert str(mine.metrics) == str(theirs.metrics)  # NaN included
    with pytest.raises(LookupError):
        direct.live_version("other", "1")  # deleted: MLflow's client does not return it either
    metrics = ["pr_auc", "recall", "roc_auc"]
    status = live_status(direct, "fraud", metrics)
    assert str(status) == str(live_status(registry, "fraud", metrics))
    assert status["challenger"]["metrics"]["pr_auc"] == 0.95 and status["champion"]["version"] == "2"

    # A store this MLflow did not write (another revision) is read by MLflow's client, and a missing file is an
    # empty registry that looking does not create.
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    assert isinstance(registry_reader(registry.tracking_uri), ModelRegistry)
    missing = registry_reader(f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    assert missing.aliases("fraud") == {} and not (tmp_path / "none").exists()
    assert isinstance(registry_reader("http://127.0.0.1:5000"), ModelRegistry)


def test_reproduce_refuses_a_version_it_cannot_rebuild_with_the_reason(tmp_path: Path) -> None:
    from mlops_assets.app.reproduce import reproduce
    from mlops_assets.app.workspace import AppError, Workspace

    workspace = Workspace(None, str(tmp_path))
    tiny_version(workspace.registry)  # logged by hand: none of the lineage the model asset records
    with pytest.raises(AppError, match=r"version 1 of 'fraud' was registered without its lineage \(tags \["):
        reproduce(workspace, "fraud", "1")
    with pytest.raises(AppError, match="has no version '2'"):
        reproduce(workspace, "fraud", "2")


def test_reproduce_names_a_recorded_table_version_that_cannot_be_read(tmp_path: Path) -> None:
    """A vacuumed version, or a table that is gone, is a sentence naming the table and version, not a traceback."""
    from mlops_assets.app.reproduce import pinned
    from mlops_assets.app.workspace import AppError

    key = dg.AssetKey(["fraud", "raw_labels"])
    pl.DataFrame({"a": [1]}).write_delta(str(tmp_path / "lake" / "fraud" / "raw_labels"))
    assert pinned(tmp_path, key, {"fraud/raw_labels": 0}).collect().height == 1
    with pytest.raises(AppError, match=r"fraud/raw_labels: Delta version 5 of .* cannot be read"):
        pinned(tmp_path, key, {"fraud/raw_labels": 5})
    with pytest.raises(AppError, match=r"fraud/raw_training: Delta version 0 of .* cannot be read"):
        pinned(tmp_path, dg.AssetKey(["fraud", "raw_training"]), {"fraud/raw_training": 0})
    with pytest.raises(AppError, match="recorded no Delta version of fraud/raw_labels"):
        pinned(tmp_path, key, {})
